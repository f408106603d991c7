"""Shared fixtures: isolated HOME/XDG dirs, and a check after every test that it
left no process, qemu or libvirt domain running (the test that leaked is the
one that fails, and what it left is killed so that it cannot fail the next)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent

#: Heavy artifacts (unpacked kernels, built kernels, images, the demo tree)
#: shared by every test of a run. Empty in a fresh checkout, so CI builds each
#: once per run; kept between runs in a developer's checkout.
TEST_CACHE = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache"))

_CCACHE_DIR = os.environ.get("CCACHE_DIR") or str(Path.home() / ".cache" / "ccache")

#: Seconds a test's processes get to finish exiting after it returns (a pool
#: closing in another thread, a killed child not yet reaped) before they count
#: as left behind.
EXIT_GRACE = 5.0

pytest_plugins: list[str] = [
    "tests.fixtures_vm", "tests.fixtures_kernel", "tests.fixtures_images", "tests.fixtures_boot",
    "tests.budget", "pytester",
]

#: Pids of helper processes tests started (e.g. a VM-holding kvmlab in a
#: subprocess): the libvirt domains named after them are the tests' too.
#: Registered with :func:`track_pid`.
_TRACKED_PIDS: set[int] = set()


def track_pid(pid: int) -> None:
    """Count libvirt domains named after ``pid`` (kvmlab-<pid>-...) as this
    test run's, so the leftover check finds them after ``pid`` is gone."""
    _TRACKED_PIDS.add(pid)


#: Pids of long-lived processes a session fixture started (the lab host's
#: init): what runs below them is the fixture's, not a test's leftover.
#: Registered with :func:`session_process`.
_SESSION_ROOTS: set[int] = set()


def session_process(pid: int) -> None:
    """Count processes below ``pid`` as a session fixture's (the per-test
    leftover check skips them; the fixture must stop them itself)."""
    _SESSION_ROOTS.add(pid)


def _below_session_root(p: psutil.Process) -> bool:
    try:
        return any(a.pid in _SESSION_ROOTS for a in p.parents())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def signal_disposition(pid: int, sig: signal.Signals) -> str:
    """``ignored``, ``caught`` or ``default``: how process ``pid`` treats
    ``sig`` now (from /proc/PID/status)."""
    masks = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigIgn", "SigCgt"):
            masks[key] = int(value.strip(), 16)
    bit = 1 << (int(sig) - 1)
    if masks["SigIgn"] & bit:
        return "ignored"
    return "caught" if masks["SigCgt"] & bit else "default"


def _descendants() -> dict[int, psutil.Process]:
    """Live (not zombie) processes below this test process."""
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _describe(procs: Iterable[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            out.append(f"{p.pid} (gone)")
    return out


def _qemu_pids() -> set[int]:
    """qemu processes this test process started (directly, or through kvmlab).

    Only our own descendants: another test run on the same host is not ours
    to judge or to kill.
    """
    pids = set()
    for pid, p in _descendants().items():
        try:
            if p.name().startswith("qemu-system"):
                pids.add(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def _libvirt_domains(owners: Iterable[int] = ()) -> set[str]:
    """Running libvirt domains made by this test process or by ``owners``
    (kvmlab names them kvmlab-<pid>-...)."""
    try:
        import libvirt
    except ImportError:
        return set()
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return set()
    try:
        prefixes = tuple(f"kvmlab-{pid}-" for pid in {os.getpid(), *owners})
        return {d.name() for d in conn.listAllDomains() if d.name().startswith(prefixes)}
    finally:
        conn.close()


def _destroy_domains(names: Iterable[str]) -> None:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                dom = conn.lookupByName(name)
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).undefine()
    finally:
        conn.close()


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _still_running(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``procs`` still running after up to ``timeout`` seconds.

    Polls instead of waiting: waiting would reap a child whose exit status a
    Popen object of the test may still want.
    """
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _kill(procs: Iterable[psutil.Process]) -> None:
    procs = list(procs)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.kill()
    _still_running(procs, 10)


@pytest.fixture(autouse=True)
def _nothing_left_by_this_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: processes it started that still run, and libvirt
    domains it made, are killed, and the test errors naming them."""
    before = set(_descendants())
    yield
    new = {pid: p for pid, p in _descendants().items()
           if pid not in before and pid not in _SESSION_ROOTS and not _below_session_root(p)}
    alive = _still_running(new.values(), EXIT_GRACE)
    owners = {*_TRACKED_PIDS, *new}
    doms = _libvirt_domains(owners)
    if not alive and not doms:
        return
    left = [f"process {d}" for d in _describe(alive)] + [f"libvirt domain {d}" for d in sorted(doms)]
    _kill(alive)
    if doms:
        _destroy_domains(doms)
    pytest.fail(
        f"{request.node.nodeid} left behind: {'; '.join(left)} (now killed: stop what a test starts "
        "in a finally or a fixture finalizer)",
        pytrace=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Tests check how kvmlab acts on Ctrl-C. A test run started as a
    background job of a shell without job control (``bash .ci/run &`` in a
    script) inherits SIGINT ignored: Python then raises no KeyboardInterrupt
    and every process a test starts inherits the ignore (three tests failed
    so, for that reason alone). Python's own handler is put back."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_WATCHED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE)


@pytest.fixture(autouse=True)
def _signal_handlers_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """kvmlab's commands run in this process set signal handlers: one left
    behind (an ignored SIGHUP is inherited by every process a later test
    starts) would change what later tests see. Restored, and the test errors."""
    before = {s: signal.getsignal(s) for s in _WATCHED_SIGNALS}
    yield
    changed = [s.name for s in _WATCHED_SIGNALS if signal.getsignal(s) != before[s]]
    if not changed:
        return
    for s, h in before.items():
        signal.signal(s, h)
    pytest.fail(f"{request.node.nodeid} left its signal handlers for {', '.join(changed)} changed",
                pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers() -> Iterator[None]:
    """The last net: anything a session fixture or a test's teardown left."""
    yield
    left_qemu = _qemu_pids()
    left_doms = _libvirt_domains(_TRACKED_PIDS)
    for pid in left_qemu:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    if left_doms:
        _destroy_domains(left_doms)
    if left_qemu or left_doms:
        pytest.fail(
            f"the test session left behind qemu processes {sorted(left_qemu)} "
            f"and libvirt domains {sorted(left_doms)}"
        )


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own HOME and XDG dirs so nothing leaks into the user's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    for var in ("KVMLAB_CONFIG", "KVMLAB_FRAGMENTS_DIR", "KVMLAB_RECIPES_DIR"):
        monkeypatch.delenv(var, raising=False)
    # Real compiles in tests still share the host's ccache between runs.
    monkeypatch.setenv("CCACHE_DIR", _CCACHE_DIR)
