"""The virtio-module initramfs for booting disk images with a modular kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlab import proc
from kvmlab.errors import MissingFileError
from kvmlab.vmm.disk_initrd import BUSYBOX, build_modules_initrd
from kvmlab.vmm.modules import module_closure

pytestmark = pytest.mark.unit

V = "kernel/drivers/virtio"

DEP = f"""\
{V}/virtio.ko:
{V}/virtio_ring.ko: {V}/virtio.ko
{V}/virtio_pci.ko: {V}/virtio_pci_modern_dev.ko {V}/virtio_ring.ko {V}/virtio.ko
{V}/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: {V}/virtio_ring.ko {V}/virtio.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
 {V}/virtio_ring.ko {V}/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
"""


def test_closure_puts_dependencies_first_and_once() -> None:
    order = module_closure(DEP, ["virtio_pci", "virtio_blk", "virtio_net"], strict=True)
    names = [Path(p).name for p in order]
    assert len(names) == len(set(names)) == 8
    for mod, deps in (
        ("virtio_ring.ko", ["virtio.ko"]),
        ("virtio_pci.ko", ["virtio.ko", "virtio_ring.ko", "virtio_pci_modern_dev.ko"]),
        ("virtio_net.ko.xz", ["failover.ko", "net_failover.ko", "virtio_ring.ko"]),
        ("net_failover.ko", ["failover.ko"]),
    ):
        for d in deps:
            assert names.index(d) < names.index(mod), (d, mod)


def test_closure_names_a_missing_module() -> None:
    with pytest.raises(KeyError, match="virtio_gpu"):
        module_closure(DEP, ["virtio_gpu"], strict=True)


def _cloud_release() -> str:
    mods = Path("/lib/modules")
    releases = (
        sorted(p.name for p in mods.iterdir() if (p / "modules.dep").is_file()) if mods.is_dir() else []
    )
    if not releases:
        pytest.skip("no kernel modules installed under /lib/modules")
    return releases[-1]


def test_initrd_from_the_installed_kernel(tmp_path: Path) -> None:
    release = _cloud_release()
    if not BUSYBOX.is_file():
        pytest.skip(f"{BUSYBOX} missing (busybox-static)")
    out = build_modules_initrd(release, tmp_path / "initrd.cpio")
    listing = proc.run(["cpio", "-t", "--quiet", "-F", str(out)], timeout=60).stdout.split()
    assert "init" in listing and "bin/busybox" in listing and "bin/switch_root" in listing
    mods = [n for n in listing if n.startswith("lib/modules/")]
    assert "lib/modules/virtio_blk.ko" in mods or not mods  # empty when all are built in
    assert not any(n.endswith(".xz") for n in listing)
    assert not (tmp_path / "initrd.cpio.part").exists()
    assert os.access(out, os.R_OK)


def test_unknown_release_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"modules of kernel 0\.0-none are not installed"):
        build_modules_initrd("0.0-none", tmp_path / "x.cpio")


def test_kernel_check_names_what_systemd_lacks() -> None:
    from kvmlab.images.kernel_check import SYSTEMD_OPTIONS, missing_for_disk_boot

    full = "\n".join(f"{o}=y" for o in SYSTEMD_OPTIONS)
    devices = "CONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_NET=m\nCONFIG_EXT4_FS=y\n"
    assert missing_for_disk_boot(full + "\n" + devices, with_initrd=True) == []
    assert missing_for_disk_boot(full + "\n" + devices) == [
        "CONFIG_VIRTIO_PCI=y",
        "CONFIG_VIRTIO_BLK=y",
        "CONFIG_VIRTIO_NET=y",
    ]
    no_cgroups = full.replace("CONFIG_CGROUPS=y", "# CONFIG_CGROUPS is not set")
    assert missing_for_disk_boot(no_cgroups + "\n" + devices, with_initrd=True) == ["CONFIG_CGROUPS=y"]
    assert "CONFIG_EXT4_FS=y" in missing_for_disk_boot(full + "\nCONFIG_EXT4_FS=m\n", with_initrd=True)


def test_the_installed_cloud_kernel_passes_with_an_initrd() -> None:
    from kvmlab.images.kernel_check import missing_for_disk_boot

    configs = sorted(Path("/boot").glob("config-*-cloud-amd64"))
    if not configs:
        pytest.skip("no Debian cloud kernel config in /boot")
    text = configs[-1].read_text()
    assert missing_for_disk_boot(text, with_initrd=True) == []
    assert "CONFIG_VIRTIO_BLK=y" in missing_for_disk_boot(text)
