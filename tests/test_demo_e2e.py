"""End to end, for real: ``kvmlab demo`` makes the demo history, bisects the
planted bug with real kernel builds and VM runs, and names the planted culprit
(checked here against the demo's record, which the bisection never reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.cli import main
from kvmlab.kernel.demo_tree import DemoTree
from tests.chromium import browser
from tests.fixtures_kernel import KERNEL_CACHE
from tests.report_checks import check_bisection_page, expected_from_result

pytestmark = [pytest.mark.vm, pytest.mark.kernel, pytest.mark.slow]


def _share_kernel_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the CLI's default kernel work dir at the tests' shared one, so the
    demo reuses builds other tests made (and ccache) instead of starting over."""
    cache = tmp_path / "xdg-cache"
    (cache / "kvmlab").mkdir(parents=True)
    (cache / "kvmlab" / "kernel").symlink_to(KERNEL_CACHE / "work")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.mark.parametrize("bug", ["culprit", "flaky_culprit"])
def test_demo_finds_the_planted_culprit(bug: str, demo_tree: DemoTree, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _share_kernel_cache(monkeypatch, tmp_path)
    out_json = tmp_path / "result.json"
    workdir = tmp_path / "wd"
    count = str(min(4, os.cpu_count() or 2))
    rc = main(["demo", "--dir", str(demo_tree.path), "--bug", bug, "--count", count, "--json", str(out_json),
               "--workdir", str(workdir)])
    out = capsys.readouterr().out
    planted = getattr(demo_tree, bug)
    assert rc == 0, out[-3000:]
    assert f"{planted} is the first bad commit" in out
    assert f"found the planted culprit {planted[:12]}" in out
    # The log has the shape of syzbot's.
    assert f"bisecting cause commit starting from {demo_tree.head}" in out
    assert "testing release v6.1" in out
    assert "# git bisect start" in out and "Bisecting: " in out
    assert "revisions tested: " in out and "cc: [" in out and "crash: " in out
    result = json.loads(out_json.read_text())
    assert result["culprit"] == planted
    assert result["confidence"] >= 0.95
    # Every bisection leaves report.html next to its log: look at it.
    assert f"kvmlab: report {workdir / 'report.html'}" in out
    expected, runs = expected_from_result(result)
    subject = proc.run(["git", "-C", str(demo_tree.path), "log", "-1", "--format=%s", planted],
                       timeout=60).stdout.strip()
    with browser(tmp_path) as b:
        check_bisection_page(b, workdir / "report.html", expected=expected, culprit_subject=subject,
                             runs=runs, chart=True, shot=tmp_path / "report.png")
