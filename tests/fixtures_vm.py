"""Fixtures for real VM tests: a prebuilt Debian cloud kernel, the host-built
initramfs for it, and helpers to prove nothing is left behind."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from kvmlab import proc
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.modules import kernel_release
from kvmlab.vmm.root import GuestRoot
from kvmlab.vmm.spec import Accel, VMSpec
from tests.conftest import TEST_CACHE


@dataclass(frozen=True)
class CloudKernel:
    bzimage: Path
    modules: Path
    release: str


def _unpack(deb: Path) -> CloudKernel | None:
    dest = TEST_CACHE / "cloud-kernel" / deb.stem
    if not (dest / "boot").is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc.run(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=300)
        images = sorted((tmp / "boot").glob("vmlinuz-*"))
        release = kernel_release(images[-1]) if images else None
        if release is None:
            return None
        # A .deb carries no modules.dep (its postinst makes it): depmod does.
        proc.run(["depmod", "-b", str(tmp), release], timeout=120)
        tmp.rename(dest)
    image = sorted((dest / "boot").glob("vmlinuz-*"))[-1]
    release = kernel_release(image) or ""
    return CloudKernel(image, dest / "lib" / "modules" / release, release)


def _find_cloud_kernel() -> CloudKernel | None:
    """The Debian cloud kernel, unpacked from its .deb with ``dpkg-deb -x`` into
    the test cache (scripts/setup.sh installs it, so apt keeps the .deb);
    else the installed one."""
    debs = sorted(Path("/var/cache/apt/archives").glob("linux-image-*-cloud-amd64_*.deb"))
    debs = [d for d in debs if re.match(r"linux-image-\d", d.name) and "-dbg" not in d.name]
    if debs and shutil.which("dpkg-deb") and shutil.which("depmod"):
        k = _unpack(debs[-1])
        if k is not None:
            return k
    for img in sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64")):
        release = kernel_release(img)
        if release and Path("/lib/modules", release).is_dir():
            return CloudKernel(img, Path("/lib/modules", release), release)
    return None


@pytest.fixture(scope="session")
def cloud_kernel() -> CloudKernel:
    k = _find_cloud_kernel()
    if k is None:
        pytest.skip("no Debian cloud kernel (bash scripts/setup.sh installs linux-image-cloud-amd64)")
    return k


@pytest.fixture(scope="session")
def cloud_initramfs(cloud_kernel: CloudKernel) -> GuestRoot:
    return build_initramfs(TEST_CACHE / "initramfs-cloud", kernel=cloud_kernel.bzimage,
                           modules_dir=cloud_kernel.modules)


@pytest.fixture(scope="session")
def tcg_timeouts() -> Timeouts:
    # Tests run on hosts where KVM may not work: TCG, scaled as kvmlab would.
    return Timeouts().scaled(TCG_SCALE)


@pytest.fixture
def cloud_spec(cloud_kernel: CloudKernel, cloud_initramfs: GuestRoot) -> VMSpec:
    return VMSpec(kernel=cloud_kernel.bzimage, root=cloud_initramfs, cpus=1, memory_mb=512,
                  accel=Accel.TCG, name="kvmlab-test")


MARKER = READY_MARKER


def qemu_children() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "qemu-system" in " ".join(p.cmdline()[:1])]


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[Path]:
    """Yields a work dir; afterwards fails if a qemu child process survived or
    a VM left an overlay behind."""
    yield tmp_path
    left = qemu_children()
    for p in left:
        p.kill()
    assert not left, f"qemu processes survived: {[p.pid for p in left]}"
    overlays = list(tmp_path.rglob("overlay.qcow2"))
    assert not overlays, f"overlays survived: {overlays}"
