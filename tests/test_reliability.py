"""Issue 24, the parts that are not one bad input: a guest that stops itself is
never the target nor counted in a bisection, journals with garbage or a cut
last line, the console's shutdown event and a console log the disk has no
room for, the exit-code contract's pure parts, reaping what a killed run
left, the cache's size limit, compile errors quoted whole, doctor probing
when asked to. Unit tier: fakes and real small files, no VM."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlab import cache, exitcodes, owner, proc
from kvmlab.bisect import bisect
from kvmlab.bisect.journal import Journal, JournalCorruptError
from kvmlab.bisect.state import ReproFailedError
from kvmlab.cli import main
from kvmlab.commands.repro import exit_status
from kvmlab.jobs.reproduction import ReproRun
from kvmlab.jobs.vmrun import VMRunResult
from kvmlab.outcome import BuildOutcome, RunOutcome, RunStatus
from kvmlab.repro.reproducer import CProgram, ReproCompileError
from kvmlab.repro.runner import ReproResult, oom_kill, summary_lines
from kvmlab.vmm.console import ConsoleWatcher, EventKind
from kvmlab.vmm.ssh import describe_status
from tests.test_bisect import FakeTester, make_history

pytestmark = pytest.mark.unit

STOPPED = "the guest powered itself off (reboot: Power down) after 9.0s, with no crash on the console"


@dataclasses.dataclass
class StoppingTester(FakeTester):
    """A FakeTester whose reproducer powers the guest off in some runs:
    every ``stop_every``-th run (0: never), or every run of ``stop_always``."""

    stop_every: int = 0
    stop_always: bool = False
    stopped: int = 0

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        out = []
        first = self.calls + 1
        for k, r in enumerate(super().test(build, runs)):
            if self.stop_always or (self.stop_every and (first + k) % self.stop_every == 0):
                self.stopped += 1
                r = RunOutcome(r.index, RunStatus.GUEST_STOPPED, detail=STOPPED, duration=9.0)
            out.append(r)
        return out


@pytest.mark.parametrize("policy", ["adaptive", "syzbot"])
def test_a_guest_that_stops_itself_is_never_the_target_nor_counted(tmp_path: Path, policy: str) -> None:
    hist = make_history(tmp_path / "repo", 12)
    lines: list[str] = []
    from kvmlab.bisect import LogWriter

    tester = StoppingTester(hist, culprit="7", stop_every=4)
    res = bisect(hist.repo, tester, bad=hist.h["12"], good=hist.h["0"], policy=policy,
                 log=LogWriter(lines.append))
    assert res.culprit == hist.h["7"]
    assert tester.stopped > 0
    assert any("the guest stopped itself, not counted" in ln for ln in lines)
    assert not any("infrastructure error" in ln for ln in lines)
    runs = [r for e in res.evidence.values() for r in zip(e.runs, e.target, strict=True)]
    stopped = [(r, t) for r, t in runs if r.status is RunStatus.GUEST_STOPPED]
    assert stopped and not any(t for _r, t in stopped)


def test_a_reproducer_that_always_stops_the_guest_stops_the_bisection(tmp_path: Path) -> None:
    hist = make_history(tmp_path / "repo", 6)
    with pytest.raises(ReproFailedError, match=r"the guest stopped itself in 3 runs in a row with no crash "
                                               r"\(the guest powered itself off .*\): the reproducer powers "
                                               r"it off or reboots it"):
        bisect(hist.repo, StoppingTester(hist, culprit="3", stop_always=True), bad=hist.h["6"],
               good=hist.h["0"])


def test_a_journal_with_a_cut_last_line_keeps_it_aside(tmp_path: Path) -> None:
    hist = make_history(tmp_path / "repo", 6)
    journal = tmp_path / "j.jsonl"
    bisect(hist.repo, FakeTester(hist, culprit="4"), bad=hist.h["6"], good=hist.h["0"], journal=journal)
    whole = journal.read_bytes()
    torn = b'{"kind": "run", "commit": "abc'
    journal.write_bytes(whole + torn)
    res = bisect(hist.repo, FakeTester(hist, culprit="4", kill_after_builds=0), bad=hist.h["6"],
                 good=hist.h["0"], journal=journal)
    assert res.culprit == hist.h["4"]
    assert journal.read_bytes().startswith(whole)  # nothing before it lost
    assert (tmp_path / "j.jsonl.partial").read_bytes() == torn + b"\n"  # and the cut line is kept


def test_a_journal_with_a_garbage_line_names_the_file_and_the_line(tmp_path: Path) -> None:
    j = tmp_path / "j.jsonl"
    j.write_text('{"kind": "start", "header": {}}\n{"kind": "run", "commit": "x", "run": {"index": 0}}\n')
    with pytest.raises(JournalCorruptError, match=rf"journal {j} line 2: not a run record"):
        Journal(j, {})
    j.write_bytes(b'{"kind": "start", "header": {}}\n\x00\x01garbage\n')
    with pytest.raises(JournalCorruptError, match=rf"journal {j} line 2: not a journal record"):
        Journal.check(j)
    assert j.read_bytes() == b'{"kind": "start", "header": {}}\n\x00\x01garbage\n'  # refused, not changed


# -- the console ----------------------------------------------------------------------------


@contextlib.contextmanager
def _watched(log: Path) -> Iterator[tuple[ConsoleWatcher, int]]:
    r, w = os.pipe()
    watcher = ConsoleWatcher(r, log, no_output=30.0)
    try:
        yield watcher, w
    finally:
        with contextlib.suppress(OSError):
            os.close(w)
        watcher.close()


@pytest.mark.parametrize(("line", "halt"), [
    (b"[   11.855182] reboot: Power down\n", True),
    (b"[    9.1] reboot: Restarting system\n", True),
    (b"reboot: System halted\n", True),
    (b"echo reboot: Power down is what it says\n", False),
])
def test_the_console_sees_the_guest_shut_itself_down(tmp_path: Path, line: bytes, halt: bool) -> None:
    with _watched(tmp_path / "console.log") as (watcher, w):
        os.write(w, b"Linux version 6.1.0\nsome boot text\n" + line)
        os.close(w)
        assert watcher.wait_for({EventKind.EOF}, timeout=10) is not None
        assert (watcher.halt is not None) is halt
        assert watcher.crash is None


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "full"
    d.mkdir()
    if os.geteuid() != 0 or proc.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(d)],
                                     timeout=30, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield d
    finally:
        proc.run(["umount", "-l", str(d)], timeout=30, check=False)


def test_a_console_log_the_disk_has_no_room_for_is_the_hosts_failure(full_dir: Path) -> None:
    """ENOSPC on the console log is recorded (a host failure), and the console
    is still watched: it is not the VM stopping."""
    with _watched(full_dir / "console.log") as (watcher, w):
        os.write(w, b"x" * 60000 + b"\n")
        os.write(w, b"[    5.0] BUG: kernel NULL pointer dereference, address: 0000000000000000\n")
        assert watcher.wait_for({EventKind.CRASH}, timeout=10) is not None
        assert not watcher.ended
        assert watcher.log_error is not None and "No space left on device" in watcher.log_error
        assert str(full_dir / "console.log") in watcher.log_error


# -- outcomes and exit statuses -------------------------------------------------------------


def _run(done: list[RunStatus]) -> ReproRun:
    outs = [RunOutcome(i, st, title="t" if st is RunStatus.CRASHED else None, detail="d")
            for i, st in enumerate(done)]
    return ReproRun(ReproResult(outs, [None] * len(outs)))


@pytest.mark.parametrize(("statuses", "rc"), [
    ([RunStatus.OK, RunStatus.CRASHED], 0),
    ([RunStatus.OK, RunStatus.INFRA], 0),
    ([RunStatus.INFRA, RunStatus.INFRA], 3),
    ([RunStatus.BOOT_FAILED, RunStatus.INFRA], 1),
    ([RunStatus.GUEST_STOPPED, RunStatus.GUEST_STOPPED], 1),
    ([RunStatus.REPRO_FAILED, RunStatus.OK], 1),
])
def test_repro_exits_non_zero_when_no_run_tested_the_kernel(statuses: list[RunStatus], rc: int) -> None:
    assert exit_status(_run(statuses)) == rc


def test_the_summary_says_no_run_tested_the_kernel() -> None:
    lines = summary_lines(_run([RunStatus.GUEST_STOPPED, RunStatus.GUEST_STOPPED]).result)  # type: ignore[arg-type]
    assert "no run tested the kernel: 2 x the guest stopped itself" in lines
    assert any("powers the guest off or reboots it" in ln for ln in lines)


def test_pass_through_statuses_never_collide() -> None:
    own = {exitcodes.PASS_OWN_STATUS_RESERVED, exitcodes.PASS_GUEST_STOPPED, exitcodes.PASS_BAD_INPUT,
           exitcodes.PASS_OURS, exitcodes.PASS_BOOT_FAILED, exitcodes.PASS_CRASHED, exitcodes.PASS_TIMEOUT,
           130, 143, 129}
    for status in range(256):
        passed = exitcodes.guest_status(status)
        assert passed == status or passed == exitcodes.PASS_OWN_STATUS_RESERVED
        assert (passed in own) == (status in own)
    assert VMRunResult([4, 4]).status == 4
    assert VMRunResult([0, exitcodes.PASS_BOOT_FAILED, 3]).status == exitcodes.PASS_BOOT_FAILED
    assert describe_status(137) == "killed by SIGKILL (status 137)"
    assert describe_status(-1) == "with no exit status (killed by a signal)"
    assert describe_status(4) == "with status 4"


def test_the_oom_killers_line_is_found() -> None:
    console = ("[    8.27] repro invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE)\n"
               "[    8.32] Out of memory: Killed process 125 (repro) total-vm:175740kB, anon-rss:173916kB\n")
    assert oom_kill(console) == "Out of memory: Killed process 125 (repro)"
    assert oom_kill("nothing here\n") is None


def test_a_compile_errors_file_name_is_whole(tmp_path: Path) -> None:
    d = tmp_path / ("a-long-directory-name-" * 4)
    d.mkdir()
    src = d / "my_reproducer_with_a_long_name.c"
    src.write_text("int main(void) {\n" + "".join(f"  undeclared_{i}++;\n" for i in range(300)) + "}\n")
    with pytest.raises(ReproCompileError) as e:
        CProgram(src).prepare(tmp_path / "w")
    assert f"does not compile: {src}:2:3: error: " in str(e.value), str(e.value)


# -- leftovers of killed runs and the cache -------------------------------------------------


def test_temp_dirs_of_a_killed_run_are_reaped_and_others_are_not(tmp_path: Path) -> None:
    code = ("import os, signal, sys; from pathlib import Path; from kvmlab import owner; "
            f"d = owner.mkdtemp('pool', Path({str(tmp_path)!r})); (d / 'overlay.qcow2').write_bytes(b'x'); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    p = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert p.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob("kvmlab-pool-*")
    mine = owner.mkdtemp("pool", tmp_path)
    legacy_old = tmp_path / "kvmlab-pool-abcd1234"
    legacy_new = tmp_path / "kvmlab-boot-efgh5678"
    other = tmp_path / "kvmlab-ci-something"
    for d in (legacy_old, legacy_new, other):
        d.mkdir()
    old = time.time() - owner.LEGACY_AGE - 60
    os.utime(legacy_old, (old, old))
    os.utime(other, (old, old))
    removed = owner.reap_tempdirs(tmp_path)
    assert sorted(removed) == sorted([left, legacy_old])
    assert mine.is_dir() and legacy_new.is_dir() and other.is_dir()


def _entry(root: Path, where: str, name: str, size: int, age: float) -> Path:
    p = root / where / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\1" * size)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_the_cache_is_pruned_least_recently_used_first_and_not_while_in_use(tmp_path: Path) -> None:
    root = tmp_path / "kvmlab"
    old = _entry(root, "initramfs", "initramfs-a-files-1.cpio", 300_000, 3000)
    mid = _entry(root, "runs", "repro-1", 300_000, 2000)
    new = _entry(root, "initramfs", "initramfs-a.cpio.gz", 300_000, 10)
    key = _entry(root, "initramfs", "id_ed25519", 100, 5000)  # not an entry: the guest's SSH key
    half = _entry(root, "initramfs", ".initramfs-files-xyz", 1000, 5000)  # a killed run's half-written file
    shared = tmp_path / "shared-builds"
    (shared / "b1").mkdir(parents=True)
    (shared / "b1" / "bzImage").write_bytes(b"\1" * 500_000)
    (root / "kernel").mkdir()
    (root / "kernel" / "builds").symlink_to(shared)  # a link: not this cache's to remove
    assert {e.path for e in cache.entries(root)} == {old, mid, new}
    with cache.in_use(root), cache.exclusive(root, wait=False) as got:
        assert not got  # another kvmlab command holds the cache: no pruning
    with cache.exclusive(root, wait=False) as got:
        assert got
        removed, _left = cache.prune(root, 700_000)
    assert [e.path for e in removed] == [old]
    assert not old.exists() and mid.exists() and new.exists() and key.exists() and not half.exists()
    assert (shared / "b1" / "bzImage").exists()


def test_a_command_that_fills_the_cache_prunes_it_after(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(os.environ["XDG_CACHE_HOME"]) / "kvmlab"
    old = _entry(root, "runs", "repro-old", 2_000_000, 5000)
    new = _entry(root, "runs", "repro-new", 2_000_000, 100)
    conf = tmp_path / "c.yaml"
    conf.write_text("cache:\n  max_size_gb: 0.0025\n")  # 2.7 MB: one of the two fits
    assert main(["cache", "--conf", str(conf)]) == 0
    assert "(over: kvmlab cache prune)" in capsys.readouterr().out
    assert main(["kernel", "fragments", "--conf", str(conf)]) == 0
    assert not old.exists() and new.exists()


def test_cache_prune_removes_what_it_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(os.environ["XDG_CACHE_HOME"]) / "kvmlab"
    a = _entry(root, "bisect", "k1", 1_000_000, 100)
    assert main(["cache", "prune", "--max-size", "500K", "--dry-run"]) == 0
    assert a.exists() and f"would remove bisections {a}" in capsys.readouterr().out
    assert main(["cache", "prune", "--all"]) == 0
    assert not a.exists() and f"removed bisections {a}" in capsys.readouterr().out


def test_doctor_kernel_probes_now_even_with_a_remembered_answer(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from kvmlab.vmm import accel

    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        pytest.skip("no kernel in /boot to pass as --kernel")
    probes: list[Path] = []

    def probe(qemu: str, kernel: Path, seconds: float = 0.0) -> accel.AccelChoice:
        probes.append(kernel)
        return accel.AccelChoice(accel.Accel.TCG, accel.TCG_SCALE, "probed: no KVM banner")

    monkeypatch.setattr(accel, "probe_kvm", probe)
    root = Path(os.environ["XDG_CACHE_HOME"]) / "kvmlab"
    root.mkdir(parents=True)
    (root / "accel.json").write_text(json.dumps({accel._host_key("qemu-system-x86_64"): {
        "accel": "kvm", "scale": 1.0, "reason": "an old answer"}}))
    logging.getLogger("kvmlab").setLevel(logging.CRITICAL)
    main(["doctor"])
    assert probes == [] and "remembered from an earlier probe" in capsys.readouterr().out
    main(["doctor", "--kernel", str(kernels[-1])])
    out = capsys.readouterr().out
    assert probes == [kernels[-1]]
    assert f"probed now with {kernels[-1].name}: probed: no KVM banner" in out
    remembered = json.loads((root / "accel.json").read_text())
    assert remembered[accel._host_key("qemu-system-x86_64")]["accel"] == "tcg"
