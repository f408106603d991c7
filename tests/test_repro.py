"""Reproducer runs: bad input before anything boots (unit), and real runs on
the demo kernels (vm + kernel tiers)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import psutil
import pytest

from kvmlab import oops
from kvmlab.cli import main
from kvmlab.errors import UserError
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildOutcome, RunStatus
from kvmlab.repro.reproducer import CProgram, ReproCompileError, ShellCommand, SyzProgram
from kvmlab.repro.runner import ReproOptions, ReproResult, run_repro
from kvmlab.repro.syz import SyzBinaryError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.spec import Accel, VMSpec
from tests.conftest import TEST_CACHE
from tests.fixtures_kernel import BuildKernel


@pytest.mark.unit
def test_reproducer_that_does_not_compile_is_one_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.c"
    src.write_text("int main(void) { return missing_function(; }\n")
    with pytest.raises(ReproCompileError, match=r"bad.c does not compile: .*error"):
        CProgram(src).prepare(tmp_path)


@pytest.mark.unit
def test_reproducer_that_does_not_link_names_the_missing_symbol(tmp_path: Path) -> None:
    src = tmp_path / "nolink.c"
    src.write_text("void missing_function(void);\nint main(void) { missing_function(); return 0; }\n")
    with pytest.raises(ReproCompileError, match=r"undefined reference to .missing_function"):
        CProgram(src).prepare(tmp_path / "fresh" / "dir")


@pytest.mark.unit
def test_c_reproducer_is_static(tmp_path: Path) -> None:
    src = tmp_path / "ok.c"
    src.write_text("#include <pthread.h>\nint main(void) { return 0; }\n")
    prepared = CProgram(src).prepare(tmp_path)
    binary = prepared.files[0][0]
    assert binary.is_file()
    assert b"ld-linux" not in binary.read_bytes()[:4096]  # no ELF interpreter: static


@pytest.mark.unit
def test_syz_reproducer_needs_its_binaries(tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    prog.write_text("r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file0\\x00', 0x0, 0x0)\n")
    execprog = tmp_path / "syz-execprog"
    execprog.write_text("")
    with pytest.raises(SyzBinaryError, match=r"syz-execprog .*: not executable"):
        SyzProgram(prog, execprog, tmp_path / "syz-executor").prepare(tmp_path)
    with pytest.raises(SyzBinaryError, match=r"syz-executor .*: no such file"):
        SyzProgram(prog, Path("/bin/true"), tmp_path / "syz-executor").prepare(tmp_path)
    with pytest.raises(UserError):
        ShellCommand("  ").prepare(tmp_path)


def _spec(build: BuildOutcome, tmp: Path, cmdline: tuple[str, ...] = ()) -> VMSpec:
    root = build_initramfs(TEST_CACHE / "initramfs-demo", kernel=Path(build.artifacts["bzImage"]))
    return VMSpec(kernel=Path(build.artifacts["bzImage"]), root=root, cpus=1, memory_mb=512,
                  accel=Accel.TCG, name="kvmlab-test", cmdline=cmdline)


def _run(spec: VMSpec, prepared: object, tmp: Path, count: int, **kw: object) -> ReproResult:
    opts = ReproOptions(count=count, run_time=float(kw.pop("run_time", 30.0)), **kw)  # type: ignore[arg-type]
    return run_repro(spec, prepared, backend=QemuBackend(), timeouts=Timeouts().scaled(4),  # type: ignore[arg-type]
                     options=opts, workdir=tmp, ready_marker=READY_MARKER)


@pytest.mark.vm
@pytest.mark.kernel
@pytest.mark.slow
def test_planted_bug_crashes_every_run_with_its_title(demo_tree: DemoTree, build_kernel: BuildKernel,
                                                     tmp_path: Path) -> None:
    build = build_kernel(demo_tree.culprit)
    prepared = CProgram(Path(demo_tree.reproducers["culprit"])).prepare(tmp_path)
    res = _run(_spec(build, tmp_path), prepared, tmp_path / "runs", 2)
    assert [o.status for o in res.outcomes] == [RunStatus.CRASHED, RunStatus.CRASHED]
    # syzbot's title for the plain kernel's oops (the demo records the console line).
    expected = "BUG: unable to handle kernel NULL pointer dereference in comm_digest_compute"
    for o in res.outcomes:
        assert o.title is not None and oops.same_bug(o.title, expected), (o.title, expected)
        assert "comm_digest" in o.report
        assert Path(o.console_log or "").is_file()
    assert (tmp_path / "runs" / "result.json").is_file()
    assert (tmp_path / "runs" / "vm-0" / "report.txt").is_file()


@pytest.mark.vm
@pytest.mark.kernel
@pytest.mark.slow
def test_base_commit_runs_are_ok_and_cli_prints_all_runs_ok(demo_tree: DemoTree, build_kernel: BuildKernel,
                                                            tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    build = build_kernel(demo_tree.base)
    rc = main(["repro", "--kernel", build.artifacts["bzImage"], demo_tree.reproducers["culprit"],
               "--count", "2", "--run-time", "20", "--accel", "tcg", "--workdir", str(tmp_path / "w"),
               "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "run #0: OK" in out and "run #1: OK" in out
    assert "all runs: OK" in out
    # The C reproducer returns at once on this kernel: still a run, and said so.
    assert re.search(r"run #0: the reproducer exited after \d+\.\ds with status 0 "
                     r"\(output: .*vm-0/repro.log\)", out), out
    assert "prctl(PR_GET_COMM_DIGEST) = -1" in (tmp_path / "w" / "vm-0" / "repro.log").read_text()
    assert (tmp_path / "r.json").is_file()


@pytest.mark.vm
@pytest.mark.kernel
@pytest.mark.slow
def test_flaky_bug_crashes_a_fraction_of_runs(demo_tree: DemoTree, build_kernel: BuildKernel,
                                              tmp_path: Path) -> None:
    build = build_kernel(demo_tree.flaky_culprit)
    prepared = CProgram(Path(demo_tree.reproducers["flaky_culprit"])).prepare(tmp_path)
    spec = _spec(build, tmp_path)
    statuses: list[RunStatus] = []
    # About a third of runs crash: run batches until both answers were seen
    # (at most 24 runs; both missing by chance has probability < 1e-4).
    for batch in range(6):
        res = _run(spec, prepared, tmp_path / f"b{batch}", 4, run_time=15.0)
        statuses += [o.status for o in res.outcomes]
        for o in res.outcomes:
            if o.status is RunStatus.CRASHED:
                assert o.title is not None and "timerslack" in o.report
        if RunStatus.CRASHED in statuses and RunStatus.OK in statuses:
            break
    assert set(statuses) == {RunStatus.CRASHED, RunStatus.OK}, statuses


@pytest.mark.vm
@pytest.mark.kernel
@pytest.mark.slow
def test_boot_panic_is_boot_failed_and_killed_qemu_is_infra(demo_tree: DemoTree, build_kernel: BuildKernel,
                                                            tmp_path: Path) -> None:
    build = build_kernel(demo_tree.base)
    # A kernel that panics while booting.
    prepared = ShellCommand("true").prepare(tmp_path)
    res = _run(_spec(build, tmp_path, ("rdinit=/no/such/init",)), prepared, tmp_path / "panic", 1)
    (o,) = res.outcomes
    assert o.status is RunStatus.BOOT_FAILED
    assert o.title and "panic" in o.title.lower()

    # Killing one VM's qemu from outside during its run: infra for that run only.
    prepared = ShellCommand("sleep 25").prepare(tmp_path)
    killed = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + 240
        log = tmp_path / "kill" / "vm-1" / "console.log"
        while time.monotonic() < deadline:
            if log.is_file() and READY_MARKER in log.read_text(errors="replace"):
                time.sleep(6)  # the reproducer is running now
                for p in psutil.Process().children(recursive=True):
                    if "kvmlab-test-1" in " ".join(p.cmdline()):
                        p.kill()
                        killed.set()
                        return
            time.sleep(0.2)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = _run(_spec(build, tmp_path), prepared, tmp_path / "kill", 2, run_time=30.0)
    t.join(5)
    assert killed.is_set()
    by_index = {o.index: o for o in res.outcomes}
    assert by_index[0].status is RunStatus.OK, by_index[0]
    # Not a hang ("lost connection"), in whichever order SSH's break, the
    # console's end and QEMU's exit are seen.
    assert by_index[1].status is RunStatus.INFRA, by_index[1]


_RT_HOG = r"""
#include <sched.h>
#include <stdio.h>
/* Take the only CPU for good: no RT throttling, then spin at the top RT priority. */
int main(void) {
    FILE *f = fopen("/proc/sys/kernel/sched_rt_runtime_us", "w");
    struct sched_param p = { .sched_priority = 99 };
    if (!f || fprintf(f, "-1\n") < 0 || fclose(f) || sched_setscheduler(0, SCHED_FIFO, &p))
        return perror("rt hog"), 1;
    for (;;)
        ;
}
"""


@pytest.mark.vm
@pytest.mark.kernel
@pytest.mark.slow
def test_reproducers_that_hang_the_guest_or_kill_sshd_are_its_hang(demo_tree: DemoTree,
                                                                   build_kernel: BuildKernel,
                                                                   tmp_path: Path) -> None:
    """Neither is our failure (infra, retried) nor OK: the guest stopped
    answering because of the reproducer, which syzkaller reports as a hang."""
    build = build_kernel(demo_tree.base)
    spec = _spec(build, tmp_path)
    (tmp_path / "hog.c").write_text(_RT_HOG)
    hog = CProgram(tmp_path / "hog.c").prepare(tmp_path / "hog")
    killer = ShellCommand("killall sshd; sleep 30").prepare(tmp_path / "killer")
    for name, prepared in (("hang", hog), ("sshd", killer)):
        (o,) = _run(spec, prepared, tmp_path / name, 1, run_time=15.0).outcomes
        assert o.status is RunStatus.CRASHED, (name, o)
        assert o.crash_type == "HANG" or (o.title or "").startswith("INFO: rcu"), (name, o)
        if name == "sshd":
            assert o.title == "lost connection to test machine", o


@pytest.mark.unit
def test_run_lines_and_summary_in_the_bisection_logs_words() -> None:
    from kvmlab.outcome import RunOutcome
    from kvmlab.repro.runner import run_line, summary_lines

    crash = "BUG: kernel NULL pointer dereference in comm_digest_compute"
    outs = [
        RunOutcome(0, RunStatus.CRASHED, title=crash, duration=9.0),
        RunOutcome(1, RunStatus.OK, duration=20.0),
        RunOutcome(2, RunStatus.BOOT_FAILED, title="no output", duration=240.0),
        RunOutcome(3, RunStatus.INFRA, detail="vm died with no crash on the console", duration=3.0),
        RunOutcome(4, RunStatus.CRASHED, title="WARNING in foo", duration=5.0),
    ]
    assert [run_line(o) for o in outs] == [
        f"run #0: crashed: {crash}",
        "run #1: OK",
        "run #2: boot failed: no output",
        "run #3: infra error: vm died with no crash on the console",
        "run #4: crashed: WARNING in foo",
    ]
    res = ReproResult(outs, [True, None, None, None, False], wall=250.0)
    lines = summary_lines(res)
    assert lines[0].startswith("crash rate: 2/5 (40%)")
    assert f"  1 x {crash}" in lines and "  1 x WARNING in foo" in lines
    assert "  run #4 crashed with a different bug: WARNING in foo" in lines
    assert summary_lines(ReproResult(outs[1:2], [None]))[0] == "all runs: OK"
    assert summary_lines(ReproResult(outs[:1], [True]))[0] == f"all runs: crashed: {crash}"
    assert res.to_json()["titles"] == {crash: 1, "WARNING in foo": 1}
