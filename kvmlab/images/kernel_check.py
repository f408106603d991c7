"""Can a kernel boot a Debian disk image? A check of its ``.config``.

A kernel without what systemd needs (cgroups, inotify...) does not fail
loudly: the guest just never answers SSH, which would look like a boot
failure *of the kernel under test*. Checking the config first turns that into
a clear one-line user error before any VM starts.
"""

from __future__ import annotations

from kvmlab.kernel.config import parse_config

#: Built in (``=y``) or the guest's systemd 252 does not come up.
SYSTEMD_OPTIONS: tuple[str, ...] = (
    "CONFIG_CGROUPS",
    "CONFIG_INOTIFY_USER",
    "CONFIG_SIGNALFD",
    "CONFIG_TIMERFD",
    "CONFIG_EPOLL",
    "CONFIG_FHANDLE",
    "CONFIG_UNIX",
    "CONFIG_PROC_FS",
    "CONFIG_SYSFS",
    "CONFIG_TMPFS",
    "CONFIG_DEVTMPFS",
    "CONFIG_INET",
)

#: Needed to reach the root disk and the network; ``=m`` does when an initrd
#: loads them (:func:`kvmlab.vmm.disk_initrd.build_modules_initrd`).
DEVICE_OPTIONS: tuple[str, ...] = (
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_BLK",
    "CONFIG_VIRTIO_NET",
)

#: The root filesystem: the kernel mounts it before any initrd module could help
#: (kvmlab's initrd carries only the virtio modules).
ROOTFS_OPTIONS: dict[str, str] = {"ext4": "CONFIG_EXT4_FS"}


def missing_for_disk_boot(
    config_text: str, *, filesystem: str = "ext4", with_initrd: bool = False
) -> list[str]:
    """Options the kernel lacks to boot a kvmlab disk image, as ``CONFIG_X=y``
    strings (empty when it can). ``with_initrd``: virtio as modules is fine."""
    cfg = parse_config(config_text, source="kernel .config")
    missing = [f"{opt}=y" for opt in SYSTEMD_OPTIONS if cfg.get(opt) != "y"]
    ok = ("y", "m") if with_initrd else ("y",)
    missing += [f"{opt}=y" for opt in DEVICE_OPTIONS if cfg.get(opt) not in ok]
    fs_opt = ROOTFS_OPTIONS.get(filesystem)
    if fs_opt is not None and cfg.get(fs_opt) != "y":
        missing.append(f"{fs_opt}=y")
    return missing
