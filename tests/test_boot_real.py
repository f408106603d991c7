"""``kvmlab boot`` for real, as a script or CI would use it (no terminal):
``-- CMD`` exit statuses, a crash's status and saved report, N CPUs and a
PREEMPT kernel from a ``--tree`` build, two sessions side by side with
``ps``/``ssh``/``kill``, ``--share``, ``--gdb`` with a real gdb, ``--keep`` and
``--resume``, ``--dry-run``. The interactive console is tests/test_boot_tmux.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

from kvmlab import exitcodes, proc
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildOutcome
from kvmlab.session.foreground import EXIT_CRASH, EXIT_TIMEOUT
from kvmlab.session.store import SessionDir, SessionStore
from kvmlab.vmm.modules import kernel_release
from tests.fixtures_boot import RunKvmlab, assert_nothing_left, port_open, start_kvmlab, wait_for_session
from tests.fixtures_kernel import KASAN_CONFIG
from tests.fixtures_vm import CloudKernel

pytestmark = [pytest.mark.vm]

#: Seconds one TCG boot of a demo kernel may take to answer SSH, with margin.
BOOT = 240.0


def _git(tree: Path, *args: str) -> str:
    return proc.run(["git", "-C", str(tree), *args], timeout=60).stdout


def _bz(build: BuildOutcome) -> str:
    return build.artifacts["bzImage"]


@pytest.mark.kernel
def test_tree_build_gives_n_cpus_and_a_preempt_kernel_and_leaves_the_checkout_alone(
    demo_tree: DemoTree, smp_preempt_kernel: BuildOutcome, kvmlab_cli: RunKvmlab,
) -> None:
    head, status = _git(demo_tree.path, "rev-parse", "HEAD"), _git(demo_tree.path, "status", "--porcelain")
    res = kvmlab_cli("boot", "--tree", demo_tree.path, demo_tree.base, "--config", ",".join(KASAN_CONFIG),
                     "--cpus", "4", "--accel", "tcg", "--", "nproc; uname -v; uname -r")
    assert res.returncode == 0, res.stderr
    nproc, version, release = res.stdout.split("\n")[:3]
    assert nproc == "4", res.stdout
    assert re.search(r" SMP PREEMPT ", version) and "PREEMPT_DYNAMIC" not in version, version
    assert release == kernel_release(Path(_bz(smp_preempt_kernel)))
    assert "build cache hit" in res.stderr  # the fixture's build, not a new one
    assert "warning" not in res.stderr
    assert _git(demo_tree.path, "rev-parse", "HEAD") == head
    assert _git(demo_tree.path, "status", "--porcelain") == status


@pytest.mark.kernel
def test_command_status_output_and_timeout(base_kernel: BuildOutcome, kvmlab_cli: RunKvmlab) -> None:
    res = kvmlab_cli("boot", "--kernel", _bz(base_kernel), "--accel", "tcg", "--name", "three",
                     "--", "echo out; echo err >&2; exit 3")
    assert res.returncode == 3, res.stderr
    assert res.stdout.splitlines() == ["out", "err"]
    rec = SessionStore().get("three").read()
    assert (rec.state, rec.result) == ("ended", "command done: exit status 3")
    res = kvmlab_cli("boot", "--kernel", _bz(base_kernel), "--accel", "tcg", "--timeout", "5",
                     "--", "echo started; sleep 600")
    assert res.returncode == EXIT_TIMEOUT, res.stderr
    assert res.stdout == "started\n"
    assert "kvmlab: timeout: 'echo started; sleep 600' still running after 5 s" in res.stderr


@pytest.mark.kernel
def test_crash_is_its_own_status_with_the_title_on_stderr_and_a_symbolized_report(
    demo_tree: DemoTree, debug_head_kernel: BuildOutcome, kvmlab_cli: RunKvmlab,
) -> None:
    # The debug kernel (KASAN, full DWARF; the KASAN tests' build): the
    # planted bug is a use-after-free there, and vmlinux has line numbers.
    res = kvmlab_cli("boot", "--kernel", _bz(debug_head_kernel), "--accel", "tcg", "--name", "crash",
                     "--repro", demo_tree.reproducers["culprit"], "--", "cd /tmp/kvmlab-repro && ./repro")
    assert res.returncode == EXIT_CRASH, res.stderr
    title = demo_tree.titles["culprit"]["kasan"]
    assert f"kvmlab: crash: {title}\n" in res.stderr, res.stderr
    sd = SessionStore().get("crash")
    report = (sd.path / "report-1.txt").read_text()
    assert report.startswith(title)
    # vmlinux sits next to the bzImage in the build cache: frames got file:line.
    assert re.search(r"[ :]comm_digest_compute\+0x[0-9a-f]+/0x[0-9a-f]+ kernel/sys\.c:\d+", report), report
    assert sd.read().crashes == (title,)


@pytest.mark.kernel
def test_a_kernel_that_panics_while_booting_is_a_named_boot_failure(base_kernel: BuildOutcome,
                                                                    kvmlab_cli: RunKvmlab) -> None:
    # No init in the initramfs and no root device: the kernel panics at boot.
    res = kvmlab_cli("boot", "--kernel", _bz(base_kernel), "--accel", "tcg", "--name", "nope",
                     "--cmdline", "rdinit=/no/such/init", "--", "true")
    title = "kernel panic: VFS: Unable to mount root fs on unknown-block(NUM,NUM)"  # syzkaller's title
    assert res.returncode == EXIT_CRASH, res.stderr
    assert f"kvmlab: crash: {title}\n" in res.stderr and f"kvmlab: boot failed: {title}\n" in res.stderr
    assert SessionStore().get("nope").read().result == f"boot failed: {title}"


@pytest.mark.kernel
def test_two_sessions_side_by_side_ps_ssh_kill(base_kernel: BuildOutcome, kvmlab_cli: RunKvmlab,
                                              tmp_path: Path) -> None:
    owners = {}
    for name in ("left", "right"):
        log = tmp_path / f"{name}.log"
        owners[name] = (start_kvmlab(["boot", "--kernel", _bz(base_kernel), "--accel", "tcg", "--name", name],
                                     log), log)
    try:
        sds = {n: wait_for_session(n, timeout=BOOT, owner=p, log=log) for n, (p, log) in owners.items()}
        ps = kvmlab_cli("ps")
        assert ps.returncode == 0
        rows = {ln.split()[0]: ln.split() for ln in ps.stdout.splitlines()[1:]}
        assert set(rows) == {"left", "right"}
        ports = {n: sds[n].read().ssh_port for n in sds}
        assert ports["left"] != ports["right"]
        for n in sds:
            assert rows[n][1] == "running" and rows[n][5] == f"127.0.0.1:{ports[n]}"
            assert rows[n][8] == str(owners[n][0].pid) and rows[n][9] == str(sds[n].path)
        # Each name reaches its own guest: mark one, look for the mark in both.
        assert kvmlab_cli("ssh", "left", "--", "touch /tmp/i-am-left").returncode == 0
        for n, want in (("left", "yes"), ("right", "no")):
            r = kvmlab_cli("ssh", n, "--", "test -e /tmp/i-am-left && echo yes || echo no")
            assert r.stdout.strip() == want, (n, r.stdout, r.stderr)
        assert kvmlab_cli("ssh", "right", "--", "exit 7").returncode == 7
        (tmp_path / "up.txt").write_text("to the guest\n")
        assert kvmlab_cli("scp", tmp_path / "up.txt", "right:/tmp/").returncode == 0
        assert kvmlab_cli("scp", "right:/tmp/up.txt", tmp_path / "down.txt").returncode == 0
        assert (tmp_path / "down.txt").read_text() == "to the guest\n"
        amb = kvmlab_cli("ssh")  # which one?
        assert amb.returncode == 2 and "2 are running (left, right)" in amb.stderr

        killed = kvmlab_cli("kill", "left")
        assert killed.returncode == 0 and killed.stdout == "left: stopped\n", killed.stderr
        assert owners["left"][0].wait(timeout=60) == 128 + 15
        assert_nothing_left(sds["left"], ports["left"])
        assert sds["left"].read().result == "ended by SIGTERM"
        assert kvmlab_cli("ssh", "right", "--", "echo still here").stdout == "still here\n"
        assert "left" not in kvmlab_cli("ps").stdout
        assert kvmlab_cli("kill", "right").returncode == 0
        assert owners["right"][0].wait(timeout=60) == 128 + 15
        assert_nothing_left(sds["right"], ports["right"])
        assert kvmlab_cli("ps").stdout == ""
        assert kvmlab_cli("kill", "--rm", "left").stdout == f"left: removed {sds['left'].path}\n"
        assert not sds["left"].path.exists()
    finally:
        for p, _ in owners.values():
            proc.kill_group(p)


@pytest.mark.kernel
def test_share_a_host_directory(gdb_kernel: BuildOutcome, kvmlab_cli: RunKvmlab, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "fix.sh").write_text("echo from the host\n")
    res = kvmlab_cli("boot", "--kernel", _bz(gdb_kernel), "--accel", "tcg", "--share", src,
                     "--", f"sh {src}/fix.sh && echo from the guest > {src}/out.txt")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "from the host\n"
    assert (src / "out.txt").read_text() == "from the guest\n"


@pytest.mark.kernel
def test_share_on_a_kernel_without_9p_is_a_clear_error(base_kernel: BuildOutcome, kvmlab_cli: RunKvmlab,
                                                      tmp_path: Path) -> None:
    res = kvmlab_cli("boot", "--kernel", _bz(base_kernel), "--accel", "tcg", "--share", tmp_path,
                     "--", "true")
    assert res.returncode == exitcodes.PASS_BAD_INPUT
    assert "--share: mounting kvmlab0" in res.stderr and "'share' config fragment" in res.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["qemu", pytest.param("libvirt", marks=pytest.mark.libvirt)])
def test_gdb_attaches_and_reads_linux_banner(backend: str, gdb_kernel: BuildOutcome, tmp_path: Path,
                                             kvmlab_cli: RunKvmlab) -> None:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed (scripts/setup.sh installs it)")
    name = f"gdb-{backend}"
    log = tmp_path / "boot.log"
    owner = start_kvmlab(["boot", "--kernel", _bz(gdb_kernel), "--accel", "tcg", "--backend", backend,
                          "--gdb", "--name", name], log)
    try:
        sd = wait_for_session(name, timeout=120, state="starting", owner=owner, log=log)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and not line:
            line = next((ln for ln in log.read_text().splitlines() if "kernel paused for gdb" in ln), "")
            time.sleep(0.2)
        assert line, log.read_text()
        port = sd.read().gdb_port
        gdb = shlex.split(line.split(": ", 2)[2])
        assert gdb[0] == "gdb" and f"target remote 127.0.0.1:{port}" in gdb and "lx-symbols" in gdb
        # The printed command, in batch mode: run to start_kernel (the
        # kernel's page tables are up there), read the banner, let go.
        batch = [gdb[0], "-batch", "-nx", *gdb[1:], "-ex", "hbreak start_kernel", "-ex", "continue",
                 "-ex", "print linux_banner", "-ex", "lx-version", "-ex", "detach"]
        out = proc.run(batch, timeout=300, check=False).output
        release = kernel_release(Path(_bz(gdb_kernel)))
        assert re.search(rf'^\$1 = (0x[0-9a-f]+ <linux_banner> )?"Linux version {re.escape(release or "")} '
                         r'\(kvmlab@kvmlab\)', out, re.M), out
        assert re.search(rf"^Linux version {re.escape(release or '')} ", out, re.M), out  # lx-version
        assert "start_kernel" in out
        # After detach the kernel runs on, to SSH; kvmlab ssh and scp reach
        # it through the port the session recorded (the VM's forward on
        # this machine, on both backends).
        wait_for_session(name, timeout=BOOT, owner=owner, log=log)
        ssh_port = sd.read().ssh_port
        assert kvmlab_cli("ssh", name, "--", "uname -r").stdout == f"{release}\n"
        (tmp_path / "up.txt").write_text("to the guest\n")
        assert kvmlab_cli("scp", tmp_path / "up.txt", f"{name}:/tmp/").returncode == 0
        assert kvmlab_cli("ssh", name, "--", "cat /tmp/up.txt").stdout == "to the guest\n"
    finally:
        proc.kill_group(owner, grace=30)
    assert_nothing_left(SessionDir(sd.path), ssh_port)
    assert not port_open(port), "the gdbstub's port is still open"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["qemu"])
def test_keep_then_resume_the_same_disk(backend: str, cloud_kernel: CloudKernel, bookworm_image: object,
                                        kvmlab_cli: RunKvmlab) -> None:
    kernel = "/boot/vmlinuz-" + cloud_kernel.release
    if not Path(kernel).is_file() or not Path("/lib/modules", cloud_kernel.release).is_dir():
        pytest.skip(f"the cloud kernel {cloud_kernel.release} is not installed on the host (its modules "
                    "make the disk's initrd)")
    first = kvmlab_cli("boot", "--kernel", kernel, "--accel", "tcg", "--root", "bookworm", "--keep",
                       "--name", "kept", "--backend", backend, "--", "echo remembered > /root/mark")
    assert first.returncode == 0, first.stderr
    sd = SessionStore().get("kept")
    assert sd.kept_disk.is_file()
    assert kvmlab_cli("ps", "--all").stdout.split("\n")[1].split()[:2] == ["kept", "kept"]
    again = kvmlab_cli("boot", "--resume", "kept", "--", "cat /root/mark")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "remembered\n"
    fresh = kvmlab_cli("boot", "--kernel", kernel, "--accel", "tcg", "--root", "bookworm",
                       "--", "cat /root/mark 2>&1 || true")
    assert "No such file" in fresh.stdout  # throwaway by default
    assert kvmlab_cli("kill", "--rm", "kept").returncode == 0
    assert not sd.path.exists()


def test_dry_run_prints_the_command_line_and_starts_nothing(cloud_kernel: CloudKernel, kvmlab_cli: RunKvmlab,
                                                           tmp_path: Path) -> None:
    args = ("boot", "--kernel", cloud_kernel.bzimage, "--modules", cloud_kernel.modules, "--accel", "tcg",
            "--share", tmp_path, "--cpus", "3", "--memory", "2G", "--cmdline", "loglevel=7", "--dry-run")
    # Nothing is loaded on a dry run: any ELF file stands in for the vmlinux
    # (the cloud package has none; a bzImage is refused as one).
    res = kvmlab_cli(*args, "--gdb", "--vmlinux", Path("/bin/true").resolve())
    assert res.returncode == 0, res.stderr
    argv = shlex.split(res.stdout)
    assert argv[0] == "qemu-system-x86_64" and argv[argv.index("-smp") + 1] == "3"
    assert argv[argv.index("-m") + 1] == "2048" and "-S" in argv
    assert argv[argv.index("-kernel") + 1] == str(cloud_kernel.bzimage)
    assert argv[argv.index("-virtfs") + 1].startswith(f"local,path={tmp_path},mount_tag=kvmlab0")
    assert argv[argv.index("-append") + 1].endswith("loglevel=7 nokaslr")
    xml = kvmlab_cli(*args, "--backend", "libvirt")
    assert xml.returncode == 0, xml.stderr
    assert xml.stdout.startswith("<domain") and "<vcpu>3</vcpu>" in xml.stdout
    assert f'<source dir="{tmp_path}" />' in xml.stdout
    assert not SessionStore().all()
