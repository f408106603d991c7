"""Reports opened in headless Chromium and checked as a person would look at
them (see tests/report_checks.py): a found culprit (flaky, on a merged branch,
with build and boot failures), an inconclusive, a no-repro and a fix bisection
from the real engine, and the demo bisection's report from a journal recorded
by a real ``kvmlab demo`` run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.show import bisection_report
from tests.chromium import browser
from tests.recording import rekey
from tests.report_checks import check_bisection_page, expected_from_result
from tests.show_cases import bisected, copy_of, expected_colour_key, history_commits_tested

pytestmark = pytest.mark.ui

RECORDED = Path(__file__).parent / "fixtures" / "show" / "demo-culprit"


@pytest.mark.parametrize("name", ["found", "merged-branch", "inconclusive", "no-repro", "fix"])
def test_report_in_chromium(name: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    b = copy_of(bisected(name, tmp_path_factory), tmp_path / "wd")
    path = bisection_report(b.workdir)
    tested = {c: b.result.evidence[c] for c in history_commits_tested(b.result)}
    culprit = b.hist.title(b.result.culprit) if b.result.culprit else None
    with browser(tmp_path) as br:
        check_bisection_page(
            br, path, expected={c: expected_colour_key(b.result, c) for c in tested}, culprit_subject=culprit,
            runs={c: len(e.runs) for c, e in tested.items()}, chart=name in ("found", "merged-branch", "fix"),
            shot=tmp_path / "report.png")


@pytest.mark.demo_source
def test_demo_report_from_recorded_journal(demo_tree: DemoTree, tmp_path: Path) -> None:
    """The report of a real demo bisection, made again from its recorded
    journal, meta.json, result.json and log, with the demo tree of this
    machine: the recording's commit ids are re-keyed to it by subject (they
    depend on the linux-source-6.1 package the tree was made from)."""

    rekeyed = rekey(RECORDED, tmp_path / "wd", demo_tree)
    if rekeyed.note:
        print(f"note: {rekeyed.note}")
    wd = rekeyed.path
    result = json.loads((wd / "result.json").read_text())
    meta = json.loads((wd / "meta.json").read_text())
    meta["journal"], meta["log"] = str(wd / "journal.jsonl"), str(wd / Path(meta["log"]).name)
    (wd / "meta.json").write_text(json.dumps(meta))
    assert result["culprit"] == demo_tree.culprit
    path = bisection_report(wd, tree=demo_tree.path)
    subject = _subject(demo_tree, demo_tree.culprit)
    expected, runs = expected_from_result(result)
    with browser(tmp_path) as br:
        check_bisection_page(br, path, expected=expected, culprit_subject=subject, runs=runs, chart=True,
                             shot=tmp_path / "demo.png")


def _subject(demo: DemoTree, commit: str) -> str:
    from kvmlab import proc

    out = proc.run(["git", "-C", str(demo.path), "log", "-1", "--format=%s", commit], timeout=60).stdout
    return out.strip()
