"""Fixtures for ``kvmlab boot`` tests: the kernel builds they share (each
built once per run through the shared builder), the CLI run as a person runs
it (a separate process with the test's isolated HOME), and the check that a
session left nothing behind.

Builds (shared by every test of a run):

* ``smp_preempt_kernel`` and ``gdb_kernel`` — the demo's v6.1 with the suite's
  debug config (``KASAN_CONFIG``: smp and preempt for --cpus, share for 9p,
  gdb for full debug info and the kernel's gdb scripts); an incremental build
  after the KASAN test's build of the head.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest

from kvmlab import proc
from kvmlab.host_uri import parse_owned_name
from kvmlab.kernel.demo_tree import DemoTree
from kvmlab.outcome import BuildOutcome, BuildStatus
from kvmlab.session.store import SessionDir, SessionStore
from kvmlab.vmm.storage import POOL_NAME
from tests.conftest import TEST_CACHE
from tests.fixtures_kernel import KASAN_CONFIG, KERNEL_CACHE, BuildKernel

KVMLAB = (sys.executable, "-m", "kvmlab.cli")

RunKvmlab = Callable[..., proc.Completed]


def _ok(build: BuildOutcome) -> BuildOutcome:
    if build.status is not BuildStatus.OK:
        pytest.fail(f"kernel build failed at {build.commit[:12]}: {build.error}")
    return build


@pytest.fixture(scope="session")
def debug_head_kernel(demo_tree: DemoTree, build_kernel: BuildKernel) -> BuildOutcome:
    """The demo's head with the suite's debug config (KASAN, full DWARF): the
    KASAN tests' build, so a crash report gets file:line from its vmlinux."""
    return _ok(build_kernel(demo_tree.head, KASAN_CONFIG))


@pytest.fixture(scope="session")
def smp_preempt_kernel(demo_tree: DemoTree, build_kernel: BuildKernel) -> BuildOutcome:
    return _ok(build_kernel(demo_tree.base, KASAN_CONFIG))


@pytest.fixture(scope="session")
def gdb_kernel(demo_tree: DemoTree, build_kernel: BuildKernel) -> BuildOutcome:
    return _ok(build_kernel(demo_tree.base, KASAN_CONFIG))


@pytest.fixture
def shared_caches() -> None:
    """Point the isolated HOME's kvmlab caches at the run's shared ones: a
    ``kvmlab boot --tree`` finds the fixtures' builds, and the initramfs is
    made once per run."""
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "kvmlab"
    cache.mkdir(parents=True, exist_ok=True)
    for name, target in (("kernel", KERNEL_CACHE / "work"), ("initramfs", TEST_CACHE / "initramfs-boot"),
                         ("images", TEST_CACHE / "images")):
        target.mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to(target)


@pytest.fixture
def kvmlab_cli(shared_caches: None) -> RunKvmlab:
    """``kvmlab_cli(*args, timeout=...)``: the CLI in its own process, no
    terminal (stdin /dev/null), as CI would run it."""

    def run(*args: str | Path, timeout: float = 600.0) -> proc.Completed:
        return proc.run([*KVMLAB, *map(str, args)], timeout=timeout, check=False)

    return run


def start_kvmlab(args: Sequence[str | Path], log: Path) -> subprocess.Popen[bytes]:
    """A ``kvmlab`` left running in the background (a session), its stdout
    and stderr in ``log``."""
    with log.open("wb") as out:
        return proc.spawn([*KVMLAB, *map(str, args)], stdout=out, stderr=subprocess.STDOUT)


def wait_for_session(name: str, *, timeout: float, state: str = "running",
                     owner: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> SessionDir:
    """Wait until session ``name`` is in ``state`` (its owner still alive)."""
    store = SessionStore()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owner is not None and owner.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            pytest.fail(f"kvmlab boot {name} exited with {owner.returncode}: {text[-2000:]}")
        d = store.root / name
        if (d / "session.json").is_file():
            sd = SessionDir(d)
            if sd.read().state == state:
                return sd
        time.sleep(0.5)
    text = log.read_text(errors="replace")[-2000:] if log else ""
    pytest.fail(f"session {name} not {state} after {timeout:.0f} s: {text}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def assert_nothing_left(sd: SessionDir, ssh_port: int, *, timeout: float = 30.0) -> None:
    """The session ended and took its VM with it: no owner, no qemu process, no
    libvirt domain or volume, nothing on its SSH port, no overlay."""
    assert ssh_port, f"session {sd.name} never recorded its SSH port"
    rec = sd.read()
    deadline = time.monotonic() + timeout
    while sd.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sd.running(), f"session {sd.name} still owned by its kvmlab"
    rec = sd.read()
    assert rec.state == "ended", rec
    assert rec.qemu_pid, "the record never had the VM's qemu pid"
    assert not psutil.pid_exists(rec.qemu_pid) or "qemu" not in " ".join(
        psutil.Process(rec.qemu_pid).cmdline()[:1]), f"qemu {rec.qemu_pid} survived"
    if rec.domain:
        import libvirt

        conn = libvirt.open(rec.uri or "qemu:///system")
        try:
            assert rec.domain not in [d.name() for d in conn.listAllDomains()], f"{rec.domain} survived"
            pool = conn.storagePoolLookupByName(POOL_NAME)
            pool.refresh(0)
            # The session's kvmlab made them: they carry its pid.
            left = [v for v in pool.listVolumes() if (p := parse_owned_name(v)) and p[0].pid == rec.pid]
            assert not left, f"volumes of session {sd.name} survived in the {POOL_NAME} pool: {left}"
        finally:
            conn.close()
    assert not port_open(ssh_port), f"something still listens on the session's SSH port {ssh_port}"
    assert not list(sd.path.glob("*.qcow2")), "an overlay survived"
    assert not (sd.path / "qmp.sock").exists()
