"""Shared fixtures: isolated HOME/XDG dirs, and a session check that no qemu
process or libvirt domain started by the tests survives them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent

#: Heavy artifacts (unpacked kernels, built kernels, images, the demo tree)
#: shared by every test of a run. Empty in a fresh checkout, so CI builds each
#: once per run; kept between runs in a developer's checkout.
TEST_CACHE = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache"))

_CCACHE_DIR = os.environ.get("CCACHE_DIR") or str(Path.home() / ".cache" / "ccache")

pytest_plugins: list[str] = [
    "tests.fixtures_vm", "tests.fixtures_kernel", "tests.fixtures_images", "tests.fixtures_boot",
]


def _qemu_pids() -> set[int]:
    """qemu processes this test process started (directly, or through kvmlab).

    Only our own descendants: another test run on the same host is not ours
    to judge or to kill.
    """
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("qemu-system"):
                pids.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def _libvirt_domains() -> set[str]:
    """libvirt domains this test process made (kvmlab names them kvmlab-<pid>-...)."""
    try:
        import libvirt
    except ImportError:
        return set()
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return set()
    try:
        mine = f"kvmlab-{os.getpid()}-"
        return {d.name() for d in conn.listAllDomains() if d.name().startswith(mine)}
    finally:
        conn.close()


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    left_qemu = _qemu_pids()
    left_doms = _libvirt_domains()
    for pid in left_qemu:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    if left_qemu or left_doms:
        pytest.fail(
            f"tests left behind qemu processes {sorted(left_qemu)} "
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
    # Real compiles in tests still share the host's ccache between runs.
    monkeypatch.setenv("CCACHE_DIR", _CCACHE_DIR)
