"""The live view in a real terminal: kvmlab runs inside tmux (a private tmux
server per test) and the test reads the screen with ``capture-pane``, as a
person watching would see it."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildOutcome
from tests.chromium import browser
from tests.conftest import REPO

pytestmark = pytest.mark.ui


class Tmux:
    """A tmux server of our own running one command in a 140x40 window."""

    def __init__(self, sock: str) -> None:
        self.sock = sock

    def __call__(self, *args: str) -> str:
        return proc.run(["tmux", "-L", self.sock, *args], timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "live")

    def wait_for(self, ok: Callable[[str], bool], timeout: float, seen: list[str]) -> str:
        """Poll the screen until ``ok`` holds; every distinct screen goes into ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            if not seen or seen[-1] != s:
                seen.append(s)
            if ok(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError("the screen never showed what was expected; last screen:\n" + s)
            time.sleep(0.3)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[[str], Tmux]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    sock = f"kvmlab-test-{os.getpid()}-{tmp_path.name}"
    t = Tmux(sock)

    def start(command: str) -> Tmux:
        # The server inherits this process's environment (the test's HOME and XDG dirs).
        t("new-session", "-d", "-s", "live", "-x", "140", "-y", "40", f"{command}; sleep 600")
        return t

    try:
        yield start
    finally:
        proc.run(["tmux", "-L", sock, "kill-server"], timeout=30, check=False)


FAKE = r'''
import sys, time
from pathlib import Path
from kvmlab.bisect import LogWriter, bisect
from kvmlab.jobs.observer import ObservedTester
from kvmlab.ui.live import LiveView
from kvmlab.outcome import RunStatus
from kvmlab.repro.runner import VMEvent
from tests.test_bisect import FakeTester, make_history

class Slow:
    """The fake tester, with VMs that take a moment to boot and run."""
    def __init__(self, inner, view):
        self.inner, self.view = inner, view
    def build(self, commit):
        return self.inner.build(commit)
    def test(self, build, runs):
        out = self.inner.test(build, runs)
        for r in out:
            self.view.vm(build.commit, VMEvent(r.index, "booting"))
        time.sleep(0.6)
        for r in out:
            self.view.vm(build.commit, VMEvent(r.index, "running"))
        time.sleep(0.6)
        for r in out:
            self.view.vm(build.commit, VMEvent(r.index, r.status.value, r.title))
        time.sleep(0.4)
        return out

hist = make_history(Path(sys.argv[1]), 20)
with LiveView("kvmlab bisect", describe=lambda h: hist.title(h)) as view:
    tester = ObservedTester(Slow(FakeTester(hist, culprit="13"), view), view)
    res = bisect(hist.repo, tester, bad=hist.h["20"], good=hist.h["0"], log=LogWriter(view.say),
                 observer=view.step, policy="syzbot")
print("DONE", res.culprit == hist.h["13"])
'''


def test_live_bisection_panel_under_tmux(tmux: Callable[[str], Tmux], tmp_path: Path) -> None:
    """The panel of a bisection (real engine, fake tester with timed VM events):
    VM states, the step, the candidates left and the verdicts, with the log
    scrolling above it."""
    script = tmp_path / "fake_live.py"
    script.write_text(FAKE)
    t = tmux(f"cd {shlex.quote(str(REPO))} && PYTHONPATH=. {shlex.quote(sys.executable)} {script} "
             f"{tmp_path / 'repo'}")
    seen: list[str] = []
    t.wait_for(lambda s: "VM 1  ● running" in s, 60, seen)
    t.wait_for(lambda s: "candidates left" in s and "verdicts: #1" in s, 60, seen)
    final = t.wait_for(lambda s: "DONE" in s, 120, seen)
    assert "DONE True" in final, final
    screens = "\n".join(seen)
    for want in ("◌ booting", "● running", "✖ crashed", "✔ OK", "testing ", "kvmlab bisect"):
        assert want in screens, want
    assert "is the first bad commit" in final  # the log lines scrolled above the panel


@pytest.mark.vm
@pytest.mark.kernel
def test_live_repro_shows_vm_states_under_tmux(tmux: Callable[[str], Tmux], base_kernel: BuildOutcome,
                                               demo_tree: DemoTree, tmp_path: Path) -> None:
    """``kvmlab repro`` on a terminal, with real VMs: each VM is seen booting,
    running and OK; then the repro's report.html opens clean in Chromium."""
    wd = tmp_path / "w"
    kvmlab = Path(sys.executable).parent / "kvmlab"
    cmd = [str(kvmlab), "repro", "--kernel", base_kernel.artifacts["bzImage"], "--command", "sleep 6",
           "--count", "2", "--run-time", "30", "--accel", "tcg", "--workdir", str(wd)]
    t = tmux(shlex.join(cmd) + "; echo EXIT=$?")
    seen: list[str] = []
    t.wait_for(lambda s: "booting" in s, 120, seen)
    t.wait_for(lambda s: "● running" in s, 240, seen)
    final = t.wait_for(lambda s: "EXIT=" in s, 240, seen)
    assert "EXIT=0" in final and "all runs: OK" in final, final
    screens = "\n".join(seen)
    assert "VM 0  ◌ booting" in screens and "VM 1  ◌ booting" in screens
    assert "VM 0  ● running" in screens or "VM 1  ● running" in screens
    assert "✔ OK" in screens
    report = wd / "report.html"
    assert report.is_file()
    with browser(tmp_path) as b:
        page = b.open(report.as_uri())
        assert page.console == [], page.console
        assert page.evaluate("document.getElementById('state').textContent") == "0/2 crashed"
        assert page.evaluate("document.querySelectorAll('tr.run.ok').length") == 2
