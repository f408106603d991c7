"""A tiny initramfs that lets a modular kernel (a Debian cloud kernel) boot a disk image.

Kernels built by kvmlab have virtio-blk, virtio-net and ext4 built in and boot
a disk image directly. A distribution kernel has the virtio drivers as
modules, so the root disk cannot be found without an initramfs. This one holds
only static busybox, the virtio modules (with their dependencies, from the
kernel's own ``modules.dep``: :mod:`kvmlab.vmm.modules`) and an ``/init`` that
loads them, mounts the ``root=`` device and switches to it. It does not depend
on the host's own initramfs-tools output.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kvmlab.errors import HostToolError
from kvmlab.vmm.cpio import CpioArchive
from kvmlab.vmm.modules import module_bytes, resolve_modules

log = logging.getLogger(__name__)

#: Modules a disk-image guest needs from a modular kernel (dependencies are added).
VIRTIO_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "virtio_net")

BUSYBOX = Path("/bin/busybox")
_APPLETS = ("sh", "mount", "umount", "insmod", "switch_root", "sleep", "cat", "mkdir", "echo")

INIT_SCRIPT = """#!/bin/sh
# kvmlab: load the virtio modules, mount root= and switch to it.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m" || echo "kvmlab-initrd: insmod $m failed"
done
root=
fstype=ext4
for word in $(cat /proc/cmdline); do
    case "$word" in
        root=*) root=${word#root=} ;;
        rootfstype=*) fstype=${word#rootfstype=} ;;
    esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t "$fstype" -o rw "$root" /newroot; then
    echo "kvmlab-initrd: cannot mount root=$root"
    exec sh
fi
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
"""


def build_modules_initrd(
    release: str,
    out: Path,
    *,
    modules_root: Path = Path("/lib/modules"),
    modules: Sequence[str] = VIRTIO_MODULES,
    busybox: Path = BUSYBOX,
) -> Path:
    """Write a newc cpio to ``out`` that boots kernel ``release`` from a virtio disk."""
    mdir = modules_root / release
    mods = resolve_modules(mdir, modules, strict=True)
    if not busybox.is_file():
        raise HostToolError(f"{busybox}: not found (install busybox-static)")
    cpio = CpioArchive()
    for d in ("dev", "proc", "sys", "newroot", "lib/modules"):
        cpio.mkdir(d)
    cpio.host_file(busybox, 0o755, name="bin/busybox")
    for applet in _APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    names = []
    for rel, plain in zip(mods.paths, mods.plain_names(), strict=True):
        name = Path(plain).name
        cpio.file(f"lib/modules/{name}", module_bytes(mdir / rel))
        names.append(name)
    cpio.file("modules.order", ("\n".join(names) + "\n").encode())
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cpio.finish())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("initrd for %s with %d modules: %s", release, len(names), out)
    return out
