"""Kernel fixtures shared by every test of a run: the demo tree, a builder with
one work directory under TEST_CACHE, and builds through its cache, so a CI run
builds each kernel once.

The suite builds its kernels with the configs of :data:`TEST_CONFIGS` only:
each config is one cold build on a fresh machine (about 7-11 min on 2 cores),
later commits of the same config are incremental (seconds). A test that needs
another config adds it there, says so, and reports its cold cost (README, "Test
budget").

Reuse from other tests:

* ``demo_tree`` -> :class:`kvmlab.kernel.demo_tree.DemoTree` (``.path``, the
  planted commits, reproducer sources).
* ``base_kernel`` -> BuildOutcome of the demo's base commit (v6.1) with
  :data:`TEST_CONFIG`; ``artifacts["bzImage"]``, ``["vmlinux"]``...
* ``build_kernel(commit, fragments=TEST_CONFIG)`` -> BuildOutcome, cached.
* ``kasan_culprit`` -> the demo's head built with :data:`KASAN_CONFIG`, booted
  once with the planted bug's reproducer: (BuildOutcome, console text).
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
from kvmlab.outcome import BuildOutcome, BuildStatus
from tests.conftest import TEST_CACHE

KERNEL_CACHE = TEST_CACHE / "kernel"
BUSYBOX = Path("/bin/busybox")

#: The config every kernel test builds unless it needs KASAN or line numbers:
#: ``base`` without debug info (nothing symbolizes these kernels).
TEST_CONFIG: tuple[str, ...] = ("base", "nodwarf")
#: The suite's one debug kernel: KASAN with full DWARF and the kernel's gdb
#: scripts, SMP, full preemption and 9p. The KASAN report test, the test that
#: symbolizes a report with addr2line, and ``kvmlab boot``'s --cpus/PREEMPT,
#: --share and --gdb tests all share it (one cold build instead of three).
KASAN_CONFIG: tuple[str, ...] = ("base", "kasan", "smp", "preempt", "share", "gdb")
#: Every config the suite builds, with its cold cost on 2 cores (empty ccache).
TEST_CONFIGS: dict[tuple[str, ...], str] = {
    TEST_CONFIG: "cold build ~7 min",
    KASAN_CONFIG: "cold build ~13 min",
}

BuildKernel = Callable[..., BuildOutcome]
MakeInitramfs = Callable[..., Path]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed on this host")


@pytest.fixture(scope="session")
def demo_tree() -> DemoTree:
    """The demo kernel history (made once, kept in TEST_CACHE), from
    ``$KVMLAB_TEST_DEMO_SOURCE`` (a tarball or a directory) when set, else
    Debian's linux-source-6.1."""
    source = Path(os.environ.get("KVMLAB_TEST_DEMO_SOURCE") or DEFAULT_TARBALL)
    if not source.exists():
        pytest.skip(f"{source} missing (apt-get install linux-source-6.1)")
    _need("git")
    KERNEL_CACHE.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    demo = make_demo_tree(KERNEL_CACHE / "linux-demo", tarball=source, progress=notes.append)
    if any(n.startswith("note:") for n in notes):
        # A test cache kept from another source: its ids are not this source's.
        print("\n".join(n for n in notes if n.startswith("note:")))
    return demo


@pytest.fixture(scope="session")
def kernel_builder() -> KernelBuilder:
    """One builder, one work dir (slots + build cache) for the whole run."""
    _need("make")
    _need("gcc")
    return KernelBuilder(KERNEL_CACHE / "work", jobs=os.cpu_count())


def check_test_config(fragments: Sequence[str]) -> tuple[str, ...]:
    """``fragments`` as a tuple; fails the calling test when the suite does not
    budget for that config (see :data:`TEST_CONFIGS`)."""
    key = tuple(fragments)
    if key not in TEST_CONFIGS:
        known = "; ".join(",".join(k) for k in TEST_CONFIGS)
        pytest.fail(f"kernel config {','.join(key)} is not one of the test suite's ({known}): each new "
                    "config is a ~10 min cold build on a fresh machine; add it to TEST_CONFIGS in "
                    "tests/fixtures_kernel.py with its measured cold cost (README: Test budget)",
                    pytrace=False)
    return key


@pytest.fixture(scope="session")
def build_kernel(demo_tree: DemoTree, kernel_builder: KernelBuilder) -> BuildKernel:
    """``build_kernel(commit, fragments=TEST_CONFIG)``: a demo-tree build
    through the shared cache, with one of :data:`TEST_CONFIGS`."""

    def build(commit: str, fragments: Sequence[str] = TEST_CONFIG) -> BuildOutcome:
        request = ConfigRequest.from_fragments(check_test_config(fragments))
        return kernel_builder.build(demo_tree.path, commit, request)

    return build


@pytest.fixture(scope="session")
def base_kernel(demo_tree: DemoTree, build_kernel: BuildKernel) -> BuildOutcome:
    """The demo's base commit (v6.1) built with :data:`TEST_CONFIG`."""
    return build_kernel(demo_tree.base, TEST_CONFIG)


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


@pytest.fixture(scope="session")
def kasan_culprit(demo_tree: DemoTree, build_kernel: BuildKernel, reproducers: dict[str, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildOutcome, str]:
    """The demo's head (which has the planted use-after-free) built with
    :data:`KASAN_CONFIG` and booted once under TCG running the culprit's
    reproducer: (build, console). One KASAN build and boot for the tests that
    look at the KASAN report and symbolize it."""
    build = build_kernel(demo_tree.head, KASAN_CONFIG)
    if build.status is not BuildStatus.OK:
        return build, ""
    initramfs = make_initramfs(tmp_path_factory.mktemp("kasan") / "initramfs.cpio",
                               INIT_PRELUDE + "/repro\necho KVMLAB-USERSPACE-OK\npoweroff -f\n",
                               {"/repro": reproducers["culprit"]})
    return build, boot_console(Path(build.artifacts["bzImage"]), initramfs, timeout=300)


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
