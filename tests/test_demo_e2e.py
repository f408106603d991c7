"""End to end, for real: ``kvmlab demo`` makes the demo history, bisects the
planted bug with real kernel builds and VM runs, and names the planted culprit
(checked here against the demo's record, which the bisection never reads).

Budget: both bisections build with the suite's TEST_CONFIG (so they share their
builds with each other and with the other kernel tests), and the flaky one runs
a reproducer that calls the buggy prctl 4 times (a run crashes with p ~ 0.80
instead of 1/3), which bounds its VM runs: with the demo's own reproducer the
bisection took 52-137 VM runs (10-25 min) depending on luck. That full one is
``benchmarks/demo_bisect.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from kvmlab import proc
from kvmlab.cli import main
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildStatus
from tests.chromium import browser
from tests.conftest import REPO, signal_disposition, track_pid
from tests.fixtures_kernel import KERNEL_CACHE, TEST_CONFIG, BuildKernel
from tests.report_checks import check_bisection_page, expected_from_result

pytestmark = [pytest.mark.vm, pytest.mark.kernel, pytest.mark.slow]

#: Reproducers the test bisects with, by bug (None: the demo's own).
REPROS = {
    "culprit": None,
    "flaky_culprit": Path(__file__).parent / "fixtures" / "demo" / "repro_timerslack_hint_x4.c",
}


def _share_kernel_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the CLI's default kernel work dir at the tests' shared one, so the
    demo reuses builds other tests made (and ccache) instead of starting over."""
    cache = tmp_path / "xdg-cache"
    (cache / "kvmlab").mkdir(parents=True)
    (cache / "kvmlab" / "kernel").symlink_to(KERNEL_CACHE / "work")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.mark.parametrize("bug", list(REPROS))
def test_demo_finds_the_planted_culprit(bug: str, demo_tree: DemoTree, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        record_property: Callable[[str, object], None]) -> None:
    _share_kernel_cache(monkeypatch, tmp_path)
    out_json = tmp_path / "result.json"
    workdir = tmp_path / "wd"
    count = str(min(4, os.cpu_count() or 2))
    repro = REPROS[bug]
    rc = main(["demo", "--dir", str(demo_tree.path), "--planted", bug, "--count", count,
               "--json", str(out_json), "--config", ",".join(TEST_CONFIG), "--workdir", str(workdir),
               *([str(repro)] if repro else [])])
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
    assert "confirmed: the crash is gone" in out
    # Every bisection leaves report.html next to its log: look at it.
    assert f"kvmlab: report {workdir / 'report.html'}" in out
    expected, runs = expected_from_result(result)
    subject = proc.run(["git", "-C", str(demo_tree.path), "log", "-1", "--format=%s", planted],
                       timeout=60).stdout.strip()
    with browser(tmp_path) as b:
        check_bisection_page(b, workdir / "report.html", expected=expected, culprit_subject=subject,
                             runs=runs, chart=True, shot=tmp_path / "report.png")
    # What this bisection cost, printed by the budget summary at the end of the run.
    record_property("budget", f"{result['vm_runs']} VM runs, {result['builds']} builds, "
                    f"{result['build_seconds']:.0f} s building, {result['test_seconds']:.0f} s testing")


def test_background_bisection_stops_on_sigterm_and_resumes(demo_tree: DemoTree, build_kernel: BuildKernel,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """The README's recipe: a bisection started as a background job (SIGINT
    ignored) is stopped with ``kill PID``: one line, exit 143, no VM left, the
    journal intact; the same command again resumes from it and finishes. The
    range is the planted commit and its parent, built first (shared builds), so
    the cost is a few VM batches."""
    _share_kernel_cache(monkeypatch, tmp_path)
    parent = proc.run(["git", "-C", str(demo_tree.path), "rev-parse", f"{demo_tree.culprit}^"],
                      timeout=60).stdout.strip()
    for commit in (demo_tree.culprit, parent):
        assert build_kernel(commit).status is BuildStatus.OK
    journal = tmp_path / "journal.jsonl"
    out_json = tmp_path / "result.json"
    argv = [sys.executable, "-m", "kvmlab.cli", "bisect", "--tree", str(demo_tree.path),
            "--bad", demo_tree.culprit, "--good", parent, "--config", ",".join(TEST_CONFIG), "--count", "2",
            "--cpus", "1", "--memory-mb", "512", "--run-time", "20", "--accel", "tcg",
            "--journal", str(journal), "--json", str(out_json), demo_tree.reproducers["culprit"]]
    script = 'trap "" INT; "$@" > "$LOG" 2>&1 & echo "$!"; wait "$!"'
    env = {**os.environ, "LOG": str(tmp_path / "first.log")}
    shell = subprocess.Popen(["bash", "-c", script, "bash", *argv], cwd=REPO, stdout=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    try:
        assert shell.stdout is not None
        pid = int(shell.stdout.readline())
        track_pid(pid)
        assert signal_disposition(pid, signal.SIGINT) == "ignored"
        deadline = time.monotonic() + 600
        while not (journal.is_file() and '"kind": "run"' in journal.read_text()):
            assert shell.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no VM run recorded in 10 min"
            time.sleep(0.5)
        kvmlab = psutil.Process(pid)
        os.kill(pid, signal.SIGTERM)
        assert shell.wait(timeout=120) == 143, (tmp_path / "first.log").read_text()[-3000:]
        assert not kvmlab.is_running()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=30)
        if shell.stdout is not None:
            shell.stdout.close()
    first_log = (tmp_path / "first.log").read_text()
    assert first_log.rstrip().endswith("kvmlab: terminated (SIGTERM); everything it started is stopped"), \
        first_log[-2000:]
    assert not [p for p in psutil.Process().children(recursive=True) if "qemu" in p.name()]
    first = journal.read_text().splitlines()
    assert all(json.loads(line) for line in first)  # whole lines only
    rc = main(argv[3:])
    assert rc == 0
    result = json.loads(out_json.read_text())
    assert result["culprit"] == demo_tree.culprit
    assert journal.read_text().splitlines()[: len(first)] == first  # resumed: appended to, not restarted

    # The same bisection as a job file (the typed job the command line makes):
    # it finds the command line's journal and answers the same from it,
    # without a build or a VM run.
    done = journal.read_text().splitlines()
    job = tmp_path / "bisect.yaml"
    job.write_text(yaml.safe_dump({
        "kind": "bisect", "tree": str(demo_tree.path), "bad": demo_tree.culprit, "good": parent,
        "build": {"config": list(TEST_CONFIG)}, "reproducer": {"c": demo_tree.reproducers["culprit"]},
        "vms": {"count": 2, "cpus": 1, "memory_mb": 512, "run_time": 20, "accel": "tcg"},
        "journal": str(journal), "json": str(tmp_path / "from-job.json")}))
    assert main(["bisect", "--job", str(job)]) == 0
    again = json.loads((tmp_path / "from-job.json").read_text())
    assert (again["culprit"], again["confidence"], again["vm_runs"]) == \
        (result["culprit"], result["confidence"], result["vm_runs"])
    new_entries = [json.loads(line) for line in journal.read_text().splitlines()[len(done):]]
    assert not [e for e in new_entries if e.get("kind") in ("run", "build")], new_entries[:3]
