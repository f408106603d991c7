"""A tiny initramfs that lets a modular kernel (a Debian cloud kernel) boot a disk image.

Kernels built by kvmlab have virtio-blk, virtio-net and ext4 built in and boot
a disk image directly. A distribution kernel has the virtio drivers as
modules, so the root disk cannot be found without an initramfs. This one holds
only static busybox, the virtio modules (with their dependencies, from the
kernel's own ``modules.dep``) and an ``/init`` that loads them, mounts the
``root=`` device and switches to it. It does not depend on the host's own
initramfs-tools output.
"""

from __future__ import annotations

import logging
import lzma
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kvmlab import proc
from kvmlab.errors import HostToolError, MissingFileError

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


def module_closure(modules_dep: str, wanted: Sequence[str]) -> list[str]:
    """Module paths (as in ``modules.dep``) to load, dependencies first.

    Raises ``KeyError`` naming a wanted module the kernel does not have.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        # Depth first: a module's own dependencies go in before it.
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise KeyError(name)
        visit(by_name[name])
    return order


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    # busybox insmod reads plain ELF; Debian ships .ko (older) or .ko.xz (newer).
    if path.suffix == ".xz":
        return lzma.decompress(data)
    return data


def kernel_builtin(modules_dir: Path, name: str) -> bool:
    builtin = modules_dir / "modules.builtin"
    if not builtin.is_file():
        return False
    return any(Path(line).name.split(".ko")[0] == name for line in builtin.read_text().splitlines())


def build_modules_initrd(
    release: str,
    out: Path,
    *,
    modules_root: Path = Path("/lib/modules"),
    modules: Sequence[str] = VIRTIO_MODULES,
    busybox: Path = BUSYBOX,
    timeout: float = 120.0,
) -> Path:
    """Write a newc cpio to ``out`` that boots kernel ``release`` from a virtio disk."""
    mdir = modules_root / release
    dep_file = mdir / "modules.dep"
    if not dep_file.is_file():
        raise MissingFileError(f"{dep_file}: no such file (modules of kernel {release} are not installed)")
    if not busybox.is_file():
        raise HostToolError(f"{busybox}: not found (install busybox-static)")
    if shutil.which("cpio") is None:
        raise HostToolError("cpio: not found")
    wanted = [m for m in modules if not kernel_builtin(mdir, m)]
    try:
        order = module_closure(dep_file.read_text(), wanted)
    except KeyError as e:
        raise MissingFileError(f"kernel {release} has no module {e.args[0]}") from None
    with tempfile.TemporaryDirectory(prefix="kvmlab-initrd-") as tmp:
        stage = Path(tmp)
        for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
            (stage / d).mkdir(parents=True)
        shutil.copy2(busybox, stage / "bin" / "busybox")
        for applet in _APPLETS:
            (stage / "bin" / applet).symlink_to("busybox")
        names = []
        for rel in order:
            plain = Path(rel).name.removesuffix(".xz")
            (stage / "lib" / "modules" / plain).write_bytes(_module_bytes(mdir / rel))
            names.append(plain)
        (stage / "modules.order").write_text("\n".join(names) + "\n")
        (stage / "init").write_text(INIT_SCRIPT)
        (stage / "init").chmod(0o755)
        listing = sorted(
            str(Path(dirpath, n).relative_to(stage))
            for dirpath, dirs, files in os.walk(stage)
            for n in (*dirs, *files)
        )
        tmp_out = out.with_name(out.name + ".part")
        proc.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "-O", str(tmp_out)],
            cwd=stage,
            input_text="\n".join(listing) + "\n",
            timeout=timeout,
        )
        os.replace(tmp_out, out)
    log.info("initrd for %s with %d modules: %s", release, len(order), out)
    return out
