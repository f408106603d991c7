"""The VM manager against real components: QEMU under TCG, a real libvirtd,
a real sshd in the guest, the Debian cloud kernel."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from kvmlab import exitcodes
from kvmlab.errors import KvmlabError, LibvirtError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.backend import Backend, HasLocalSSHPort
from kvmlab.vmm.console import EventKind
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.spec import VMSpec
from tests.conftest import REPO, signal_disposition, track_pid
from tests.fixtures_vm import MARKER, CloudKernel, qemu_children

pytestmark = pytest.mark.vm


def _backend(name: str) -> Backend:
    if name == "qemu":
        return QemuBackend()
    try:
        return LibvirtBackend("qemu:///system")
    except LibvirtError as e:
        pytest.skip(f"libvirtd not reachable: {e}")


BACKENDS = [pytest.param("qemu"), pytest.param("libvirt", marks=pytest.mark.libvirt)]


def _our_domains() -> set[str]:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        return {d.name() for d in conn.listAllDomains() if d.name().startswith(f"kvmlab-{os.getpid()}-")}
    finally:
        conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_boot_ssh_copy_and_panic(backend: str, cloud_spec: VMSpec, cloud_kernel: CloudKernel,
                                 tcg_timeouts: Timeouts, no_leftovers: Path) -> None:
    be = _backend(backend)
    with Pool(cloud_spec, 1, backend=be, timeouts=tcg_timeouts, workdir=no_leftovers,
              ready_marker=MARKER) as pool:
        m = pool.machines[0]
        boot = m.wait_ready()
        assert boot.ok, boot.console_tail
        res = m.run("uname -r", timeout=60)
        assert res.exit_status == 0
        assert res.output.strip() == cloud_kernel.release
        payload = no_leftovers / "payload.bin"
        payload.write_bytes(os.urandom(100_000))
        m.copy_in(payload, "/tmp/payload.bin", mode=0o644)
        res = m.run("md5sum /tmp/payload.bin", timeout=60)
        assert res.output.split()[0] == hashlib.md5(payload.read_bytes()).hexdigest()
        # A real kernel panic: seen on the console, with its text. The SSH
        # connection dies with the kernel, so the command may raise.
        with contextlib.suppress(KvmlabError):
            m.run("echo c > /proc/sysrq-trigger", timeout=30)
        assert m.watcher.wait_for({EventKind.CRASH}, timeout=60) is not None, m.watcher.tail()
        m.watcher.settle(quiet=1.0, limit=30)
        text = m.watcher.crash_text()
        assert "sysrq" in text.lower()
        assert "Kernel panic - not syncing" in text
        assert "Call Trace" in text
        assert "Kernel panic - not syncing" in m.console_log.read_text(errors="replace")
        # -no-reboot semantics: the panic stopped the VM, it did not reboot.
        deadline = time.monotonic() + 30
        while m.instance.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not m.instance.alive()
        assert m.watcher.first(EventKind.REBOOT) is None
    if backend == "libvirt":
        assert not _our_domains()
    # The console log stays in the caller's work dir; the overlay-free
    # initramfs VM made nothing else that must survive.
    assert (no_leftovers / "vm-0" / "console.log").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_of_three_boots_together(backend: str, cloud_spec: VMSpec, tcg_timeouts: Timeouts,
                                      no_leftovers: Path) -> None:
    be = _backend(backend)
    t0 = time.monotonic()
    with Pool(cloud_spec, 3, backend=be, timeouts=tcg_timeouts, workdir=no_leftovers,
              ready_marker=MARKER) as pool:
        ports = {m.instance.local_ssh_port for m in pool.machines if isinstance(m.instance, HasLocalSSHPort)}
        assert len(ports) == 3
        boots = pool.map(lambda m: m.wait_ready())
        assert all(b.ok for b in boots), [b.reason for b in boots]
        outs = pool.map(lambda m: m.run("cat /proc/sys/kernel/random/boot_id", timeout=60).output.strip())
        assert len(set(outs)) == 3
        assert [m.index for m in pool.machines] == [0, 1, 2]
    wall = time.monotonic() - t0
    # Concurrent, not one after the other: well under three sequential boots.
    assert wall < sum(b.seconds for b in boots) + 30
    if backend == "libvirt":
        assert not _our_domains()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_that_cannot_boot_is_a_boot_failure(backend: str, cloud_spec: VMSpec,
                                                   tcg_timeouts: Timeouts, no_leftovers: Path) -> None:
    # A kernel that panics during boot: no init to run.
    spec = dataclasses.replace(cloud_spec, cmdline=("rdinit=/no/such/init",))
    with Pool(spec, 1, backend=_backend(backend), timeouts=tcg_timeouts, workdir=no_leftovers,
              ready_marker=MARKER) as pool:
        boot = pool.machines[0].wait_ready()
    assert not boot.ok
    assert boot.crashed
    assert "Kernel panic - not syncing" in boot.reason
    assert "Kernel panic" in boot.console_tail


def test_kernel_without_serial_console_is_no_output(cloud_spec: VMSpec, tcg_timeouts: Timeouts,
                                                    no_leftovers: Path) -> None:
    # The console goes nowhere we read: the boot ends as "no output" within
    # the boot timeout instead of hanging.
    spec = dataclasses.replace(cloud_spec, cmdline=("console=tty0",))
    base = spec.full_cmdline().replace("console=ttyS0,115200", "").replace("earlyprintk=serial", "")
    spec = dataclasses.replace(spec, extra_args=("-append", base))
    short = dataclasses.replace(tcg_timeouts, boot=20.0)
    with Pool(spec, 1, backend=QemuBackend(), timeouts=short, workdir=no_leftovers,
              ready_marker=MARKER) as pool:
        boot = pool.machines[0].wait_ready()
    assert not boot.ok
    assert boot.timed_out and boot.reason.startswith(("no output", "timed out")), boot.reason


#: The first lines of every holder: the signal dispositions the tests rely on,
#: set in the process that gets the signals. A shell starts background jobs
#: (``bash scripts/test.sh > log &``) with SIGINT and SIGQUIT ignored, the
#: ignore is inherited, and Python installs its Ctrl-C handler only when
#: SIGINT is not ignored: a holder that did not set it would never see Ctrl-C.
HOLDER_SIGNALS = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C -> KeyboardInterrupt, as in a terminal
signal.signal(signal.SIGTERM, signal.SIG_DFL)  # kvmlab's pools install their own handler
"""


StartHolder = Callable[[str], tuple[subprocess.Popen[str], str]]


@pytest.fixture
def start_holder(tmp_path: Path, cloud_kernel: CloudKernel) -> Iterator[StartHolder]:
    """``start_holder(body)``: start a separate Python process that makes an
    initramfs spec for the cloud kernel and runs ``body`` (which prints one
    line, then holds its VMs); returns the process and that line.

    The holder starts with SIGINT ignored, as a background job's children do
    (whatever way this pytest was started), and sets the dispositions it needs
    itself (HOLDER_SIGNALS). Whatever the test does, the holders are killed
    afterwards with their process group, and their libvirt domains destroyed.
    """
    started: list[subprocess.Popen[str]] = []

    def start(body: str) -> tuple[subprocess.Popen[str], str]:
        script = tmp_path / f"hold{len(started)}.py"
        script.write_text(textwrap.dedent(HOLDER_SIGNALS) + textwrap.dedent(f"""
            import time
            from pathlib import Path
            from kvmlab.timeouts import TCG_SCALE, Timeouts
            from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
            from kvmlab.vmm.pool import Pool
            from kvmlab.vmm.qemu_backend import QemuBackend
            from kvmlab.vmm.libvirt_backend import LibvirtBackend
            from kvmlab.vmm.spec import Accel, VMSpec
            root = build_initramfs(Path({str(tmp_path / 'ir')!r}),
                                   kernel=Path({str(cloud_kernel.bzimage)!r}),
                                   modules_dir=Path({str(cloud_kernel.modules)!r}))
            spec = VMSpec(kernel=Path({str(cloud_kernel.bzimage)!r}), root=root, cpus=1, memory_mb=256,
                          accel=Accel.TCG)
        """) + textwrap.dedent(body))
        # `trap "" INT` before exec: the background-job case, on purpose.
        p = subprocess.Popen(["bash", "-c", 'trap "" INT; exec "$0" "$1"', sys.executable, str(script)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
        started.append(p)
        track_pid(p.pid)
        assert p.stdout is not None
        return p, p.stdout.readline()

    try:
        yield start
    finally:
        for p in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
            if p.stdout is not None:
                p.stdout.close()
        # QEMU dies with its holder (parent-death signal); libvirt domains don't.
        with contextlib.suppress(Exception):
            _destroy_domains_of(p.pid for p in started)


def _destroy_domains_of(pids: Iterable[int]) -> None:
    import libvirt

    prefixes = tuple(f"kvmlab-{pid}-" for pid in pids)
    conn = libvirt.open("qemu:///system")
    try:
        for d in conn.listAllDomains():
            if d.name().startswith(prefixes):
                with contextlib.suppress(libvirt.libvirtError):
                    d.destroy()
    finally:
        conn.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_nothing_survives_signals(how: signal.Signals, start_holder: StartHolder) -> None:
    """A kvmlab process holding a pool is killed with SIGTERM / Ctrl-C: its
    qemu processes, temp dirs and (libvirt) domains all go."""
    p, line = start_holder("""
        pools = [Pool(spec, 1, backend=QemuBackend(), timeouts=Timeouts()),
                 Pool(spec, 1, backend=LibvirtBackend(), timeouts=Timeouts())]
        with pools[0], pools[1]:
            print("WORKDIRS", pools[0].workdir, pools[1].workdir, flush=True)
            time.sleep(600)
    """)
    assert line.startswith("WORKDIRS"), line
    dirs = [Path(d) for d in line.split()[1:]]
    import psutil

    holder = psutil.Process(p.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not [c for c in holder.children(recursive=True)
                                               if "qemu" in c.name()]:
        time.sleep(0.1)
    doms = {d for d in _all_domains() if d.startswith(f"kvmlab-{p.pid}-")}
    assert doms, "the libvirt pool's domain should be running"
    # It was started ignoring SIGINT (a background job's lot) and set its own.
    assert signal_disposition(p.pid, how) == "caught"
    os.kill(p.pid, how)
    assert p.wait(timeout=60) != 0
    assert not [c for c in qemu_children()], "qemu survived"
    assert not any(d.exists() for d in dirs), f"temp dirs survived: {dirs}"
    assert not {d for d in _all_domains() if d.startswith(f"kvmlab-{p.pid}-")}, "libvirt domain survived"


def test_qemu_dies_with_a_sigkilled_kvmlab(start_holder: StartHolder) -> None:
    """kill -9 gives kvmlab no chance to clean up: its qemu processes still go
    (parent-death signal), and they were not killed early when the pool's
    start-up threads finished (the signal follows the forking thread)."""
    p, line = start_holder("""
        with Pool(spec, 2, backend=QemuBackend(), timeouts=Timeouts().scaled(TCG_SCALE),
                  ready_marker=READY_MARKER) as pool:
            boots = pool.map(lambda m: m.wait_ready())
            print("READY", all(b.ok for b in boots), flush=True)
            time.sleep(600)
    """)
    assert line.strip() == "READY True", line
    import psutil

    qemus = [c for c in psutil.Process(p.pid).children(recursive=True) if "qemu" in c.name()]
    assert len(qemus) == 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    _, alive = psutil.wait_procs(qemus, timeout=15)
    for q in alive:
        q.kill()
    assert not alive, f"qemu survived kill -9 of kvmlab: {[q.pid for q in alive]}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_kvmlab_in_a_background_job_stops_cleanly_on_sigterm(backend: str, cloud_kernel: CloudKernel,
                                                             tmp_path: Path) -> None:
    """``kvmlab ... &`` from a script ignores Ctrl-C (the shell's doing, checked
    here first); ``kill PID`` (SIGTERM) still stops its VMs and removes what
    they made, while a command runs in them."""
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "kvmlab.cli", "vm", "run", "--kernel", str(cloud_kernel.bzimage),
            "--modules", str(cloud_kernel.modules), "--count", "1", "--accel", "tcg", "--backend", backend,
            "--workdir", str(work), "--", "sleep", "600"]
    # A non-interactive shell starts `cmd &` with SIGINT and SIGQUIT ignored;
    # the trap makes sure of it whatever this shell's settings.
    # kvmlab's stdout (where a boot failure is reported) joins its stderr.
    script = 'trap "" INT; "$@" >&2 & echo "$!"; wait "$!"'
    shell = subprocess.Popen(["bash", "-c", script, "bash", *argv], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert shell.stdout is not None and shell.stderr is not None
        pid = int(shell.stdout.readline())
        track_pid(pid)
        seen = []
        for line in shell.stderr:
            seen.append(line)
            if "ready for SSH" in line or "error" in line or "boot failed" in line:
                break
        assert "ready for SSH" in seen[-1], "".join(seen) + _console_tails(work)
        assert signal_disposition(pid, signal.SIGINT) == "ignored"
        import psutil

        qemus = [c for c in psutil.Process(pid).children(recursive=True) if "qemu" in c.name()]
        doms = {d for d in _all_domains() if d.startswith(f"kvmlab-{pid}-")}
        assert qemus if backend == "qemu" else doms, "no VM running"
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        _, err = shell.communicate(timeout=90)
        stopped_in = time.monotonic() - t0
        assert shell.returncode == 128 + signal.SIGTERM, err  # kvmlab's own exit status
        _, alive = psutil.wait_procs(qemus, timeout=15)
        assert not alive, f"qemu survived SIGTERM: {alive}"
        assert not {d for d in _all_domains() if d.startswith(f"kvmlab-{pid}-")}, "libvirt domain survived"
        assert not list(work.rglob("overlay*")), "overlays survived"
        assert "Traceback" not in err, err
        assert stopped_in < 60, f"kvmlab took {stopped_in:.0f} s to stop"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=30)


def _console_tails(work: Path) -> str:
    return "".join(f"\n--- {log} (end):\n{log.read_text(errors='replace')[-3000:]}"
                   for log in sorted(work.rglob("console*.log")))


def _all_domains() -> set[str]:
    import libvirt

    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        pytest.skip("libvirtd not reachable")
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


@pytest.mark.libvirt
def test_libvirtd_down_is_one_clear_line(cloud_kernel: CloudKernel, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from kvmlab.cli import main

    conf = tmp_path / "kvmlab.yaml"
    conf.write_text("vm:\n  backend: libvirt\n  uri: qemu+unix:///system?socket=/nonexistent/libvirt-sock\n"
                    "  accel: tcg\n")
    rc = main(["vm", "run", "--kernel", str(cloud_kernel.bzimage), "--modules", str(cloud_kernel.modules),
               "--conf", str(conf), "--", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == exitcodes.PASS_OURS  # vm run passes the command's status on: kvmlab's own is reserved
    assert err[-1].startswith("kvmlab: infrastructure error: libvirt at qemu+unix:///system?socket=")
    assert "is libvirtd running?" in err[-1]
    assert not qemu_children()


@pytest.mark.unit
def test_missing_kernel_and_unknown_config_key_are_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from kvmlab.cli import main

    rc = main(["vm", "run", "--kernel", str(tmp_path / "bzImage"), "--accel", "tcg", "--", "true"])
    assert rc == exitcodes.PASS_BAD_INPUT
    assert capsys.readouterr().err.strip() == f"kvmlab: error: --kernel {tmp_path / 'bzImage'}: no such file"
    conf = tmp_path / "c.yaml"
    conf.write_text("vm:\n  memory: 512\n")
    rc = main(["doctor", "--conf", str(conf)])
    assert rc == 2
    assert "unknown key 'memory'" in capsys.readouterr().err
