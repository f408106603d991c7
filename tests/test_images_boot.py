"""Boot the default disk image for real through the VM manager (TCG), SSH in,
and prove the base image is never written, even by ``rm -rf /`` in the guest."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.images import BuildResult, Recipe
from kvmlab.images.kernel_check import missing_for_disk_boot
from kvmlab.outcome import BuildOutcome, BuildStatus
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.backend import Backend
from kvmlab.vmm.disk_initrd import build_modules_initrd
from kvmlab.vmm.factory import close_backend
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.spec import Accel, VMSpec

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def disk_kernel(tmp_path: Path) -> tuple[Path, Path]:
    """A kernel that boots systemd from a virtio disk, and its virtio initrd.

    The Debian cloud kernel (installed by scripts/setup.sh) has everything
    systemd needs but virtio as modules, so it gets kvmlab's module-loading
    initrd (built here from its modules, not the host's initramfs).
    """
    kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))
    if not kernels:
        pytest.skip("no Debian cloud kernel in /boot (apt-get install linux-image-cloud-amd64)")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    if not Path("/lib/modules", release, "modules.dep").is_file():
        pytest.skip(f"modules of {release} are not installed")
    return kernel, build_modules_initrd(release, tmp_path / "virtio-initrd.cpio")


def _overlay(workdir: Path) -> Path:
    """The VM's qcow2 overlay: in its work dir (qemu) or the disk the domain
    XML names (a volume on the libvirt host, here this machine)."""
    local = list(workdir.glob("vm-*/overlay.qcow2"))
    if local:
        return local[0]
    xml = ET.parse(next(workdir.glob("vm-*/domain.xml")))
    source = xml.find("devices/disk/source")
    assert source is not None
    return Path(source.get("file", ""))


def boot_and_check(
    kernel: Path, initrd: Path | None, image: BuildResult, recipe: Recipe, tmp_path: Path,
    backend: Backend | None = None,
) -> None:
    """Boot the image once, check the guest, wreck it, and check the base image."""
    root = image.entry.root()
    before = sha256(root.path)
    spec = VMSpec(
        kernel=kernel,
        root=root,
        accel=Accel.TCG,  # nested KVM is not usable on the test machines
        memory_mb=1024,
        name="kvmlab-imgtest",
        initrd=initrd,
    )
    workdir = tmp_path / "pool"
    workdir.mkdir()
    be = backend or QemuBackend()
    with Pool(spec, 1, backend=be, timeouts=Timeouts().scaled(TCG_SCALE), workdir=workdir) as pool:
        m = pool.machines[0]
        boot = m.wait_ready()
        assert boot.ok, f"{boot.reason}\n{boot.console_tail}"

        for key, want in recipe.sysctls:
            r = m.run(f"sysctl -n {key}", timeout=60)
            assert r.ok, r.output
            assert r.output.split() == want.split(), (key, r.output)

        r = m.run("hostname; ip -4 -o addr show dev eth0; cat /proc/cmdline", timeout=60)
        assert r.ok, r.output
        assert r.output.splitlines()[0] == recipe.hostname
        assert "inet 10.0.2.15/" in r.output  # DHCP from QEMU's user network
        assert "root=/dev/vda" in r.output

        r = m.run("echo written-by-guest > /root/kvmlab-probe && sync && cat /root/kvmlab-probe", timeout=60)
        assert r.ok and r.output.strip() == "written-by-guest", r.output

        # The VM writes into its own overlay, which is backed by the base
        # image (libvirt: by the image's copy in the host's kvmlab pool).
        overlay = _overlay(workdir)
        info = json.loads(
            proc.run(["qemu-img", "info", "-U", "--output=json", str(overlay)], timeout=60).stdout
        )
        backing = Path(info["backing-filename"]).resolve()
        if isinstance(be, LibvirtBackend):
            assert backing.parent == overlay.parent and sha256(backing) == before
        else:
            assert backing == root.path.resolve()
        assert sha256(root.path) == before

        # Destroy the guest's filesystem; only the overlay may change.
        r = m.run("rm -rf --no-preserve-root / >/dev/null 2>&1; sync; echo done", timeout=600)
        assert "done" in r.output, r.output
        r = m.run("ls /bin/sh", timeout=60)
        assert not r.ok, "rm -rf / left /bin/sh in the guest"
    assert sha256(root.path) == before
    assert not overlay.exists(), "the pool left the VM's overlay behind"


@pytest.mark.parametrize("backend", ["qemu", pytest.param("libvirt", marks=pytest.mark.libvirt)])
def test_image_boots_and_base_stays_unchanged(
    backend: str, bookworm_image: BuildResult, bookworm_recipe: Recipe, tmp_path: Path
) -> None:
    """With the Debian cloud kernel and kvmlab's virtio initrd, on both backends."""
    kernel, initrd = disk_kernel(tmp_path)
    config = Path("/boot", kernel.name.replace("vmlinuz-", "config-"))
    if config.is_file():
        assert missing_for_disk_boot(config.read_text(), with_initrd=True) == []
    be: Backend = QemuBackend() if backend == "qemu" else LibvirtBackend()
    try:
        boot_and_check(kernel, initrd, bookworm_image, bookworm_recipe, tmp_path, be)
    finally:
        close_backend(be)  # libvirt: the image's volume in the host's pool goes too


@pytest.mark.kernel
def test_project_kernel_boots_the_image(
    base_kernel: BuildOutcome, bookworm_image: BuildResult, bookworm_recipe: Recipe, tmp_path: Path
) -> None:
    """With the project's own ``base`` kernel build (virtio built in, no initrd),
    when its config can run the image's systemd."""
    if base_kernel.status is not BuildStatus.OK:
        pytest.skip(f"base kernel build failed: {base_kernel.error}")
    config = Path(base_kernel.artifacts["config"]).read_text()
    missing = missing_for_disk_boot(config, filesystem=bookworm_recipe.filesystem)
    if missing:
        pytest.skip("the base kernel config cannot run the image's systemd; it lacks " + " ".join(missing))
    boot_and_check(Path(base_kernel.artifacts["bzImage"]), None, bookworm_image, bookworm_recipe, tmp_path)
