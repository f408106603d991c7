"""Kernel fixtures shared by every test of a run: the demo tree, a builder with
one work directory under TEST_CACHE, and builds through its cache, so a CI run
builds each kernel once.

Reuse from other tests:

* ``demo_tree`` -> :class:`kvmlab.kernel.demo_tree.DemoTree` (``.path``, the
  planted commits, reproducer sources).
* ``base_kernel`` -> BuildOutcome of the demo's base commit (v6.1) with the
  ``base`` fragment; ``artifacts["bzImage"]``, ``["vmlinux"]``...
* ``build_kernel(commit, fragments=("base",))`` -> BuildOutcome, cached.
* ``busybox_initramfs(init_script, extra={"/repro": path})`` -> Path of a cpio.
* :func:`boot_console` boots a kernel + initramfs under TCG and returns the
  console text.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.errors import ProcessError
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest
from kvmlab.kernel.demo_tree import DEFAULT_TARBALL, DemoTree, compile_reproducer, make_demo_tree
from kvmlab.outcome import BuildOutcome
from tests.conftest import TEST_CACHE

KERNEL_CACHE = TEST_CACHE / "kernel"
BUSYBOX = Path("/bin/busybox")

BuildKernel = Callable[..., BuildOutcome]
MakeInitramfs = Callable[..., Path]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed on this host")


@pytest.fixture(scope="session")
def demo_tree() -> DemoTree:
    """The demo kernel history (made once, kept in TEST_CACHE)."""
    if not DEFAULT_TARBALL.is_file():
        pytest.skip(f"{DEFAULT_TARBALL} missing (apt-get install linux-source-6.1)")
    _need("git")
    KERNEL_CACHE.mkdir(parents=True, exist_ok=True)
    return make_demo_tree(KERNEL_CACHE / "linux-demo")


@pytest.fixture(scope="session")
def kernel_builder() -> KernelBuilder:
    """One builder, one work dir (slots + build cache) for the whole run."""
    _need("make")
    _need("gcc")
    return KernelBuilder(KERNEL_CACHE / "work", jobs=os.cpu_count())


@pytest.fixture(scope="session")
def build_kernel(demo_tree: DemoTree, kernel_builder: KernelBuilder) -> BuildKernel:
    """``build_kernel(commit, fragments=("base",))``: a demo-tree build through
    the shared cache."""

    def build(commit: str, fragments: Sequence[str] = ("base",)) -> BuildOutcome:
        return kernel_builder.build(demo_tree.path, commit, ConfigRequest.from_fragments(fragments))

    return build


@pytest.fixture(scope="session")
def base_kernel(demo_tree: DemoTree, build_kernel: BuildKernel) -> BuildOutcome:
    """The demo's base commit (v6.1) built with ``base``."""
    return build_kernel(demo_tree.base, ("base",))


@pytest.fixture(scope="session")
def reproducers(demo_tree: DemoTree, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Static binaries of the demo's reproducers, by bug name."""
    out = tmp_path_factory.mktemp("repro")
    return {
        name: compile_reproducer(Path(src), out / name) for name, src in demo_tree.reproducers.items()
    }


def make_initramfs(out: Path, init_script: str, extra: Mapping[str, Path] | None = None) -> Path:
    """An uncompressed newc cpio with static busybox, ``/init`` = ``init_script``
    and ``extra`` files (guest path -> host file), all executable."""
    if not BUSYBOX.is_file():
        pytest.skip(f"{BUSYBOX} missing (apt-get install busybox-static)")
    _need("cpio")
    stage = out.with_suffix(".d")
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp"):
        (stage / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, stage / "bin" / "busybox")
    for applet in ("sh", "mount", "echo", "cat", "poweroff", "sleep", "seq"):
        (stage / "bin" / applet).symlink_to("busybox")
    (stage / "init").write_text(init_script)
    (stage / "init").chmod(0o755)
    for guest, host in (extra or {}).items():
        dst = stage / guest.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, dst)
        dst.chmod(0o755)
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    proc.run(
        ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0", "-O", str(out)],
        cwd=stage, input_text="\n".join(names) + "\n", timeout=60,
    )
    shutil.rmtree(stage)
    return out


@pytest.fixture
def busybox_initramfs(tmp_path: Path) -> MakeInitramfs:
    def make(init_script: str, extra: Mapping[str, Path] | None = None) -> Path:
        return make_initramfs(tmp_path / "initramfs.cpio", init_script, extra)

    return make


INIT_PRELUDE = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
"""


def boot_console(kernel: Path, initramfs: Path, *, timeout: float = 180.0, memory_mb: int = 512) -> str:
    """Boot ``kernel`` with ``initramfs`` under TCG; the console until the
    guest powers off, panics (no reboot) or ``timeout`` seconds pass."""
    _need("qemu-system-x86_64")
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", "1",
        "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initramfs),
        "-append", "console=ttyS0 panic=-1 oops=panic rdinit=/init",
    ]
    try:
        res = proc.run(argv, timeout=timeout, check=False)
    except ProcessError as e:
        if not e.timed_out:
            raise
        return e.output_tail + "\n[kvmlab test: boot timed out]\n"
    return res.output
