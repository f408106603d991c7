"""Build a small initramfs guest root from the host in seconds.

Contents: busybox (static), the host's sshd and sftp-server with the shared
libraries they need, a generated host key and an authorized key, a static
address on the first NIC (QEMU user-mode networking always hands out
10.0.2.15), and a getty on ttyS0. When the kernel has virtio drivers as
modules, they are taken from the kernel's modules directory (with their
dependencies, in load order) and loaded by /init.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kvmlab import cache, proc
from kvmlab.errors import HostToolError
from kvmlab.vmm.cpio import CpioArchive
from kvmlab.vmm.modules import ModuleSet, kernel_release, module_bytes, resolve_modules
from kvmlab.vmm.root import GuestRoot, RootKind

log = logging.getLogger(__name__)

#: Modules the guest needs for networking and disks, by module name.
NEEDED_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_console")

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
SSHD = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")

_INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run/sshd /tmp /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
for m in $(cat /etc/kvmlab-modules 2>/dev/null); do insmod "/lib/modules/$m" 2>/dev/null; done
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
if [ -n "$nic" ]; then
  # The NIC before lo: link events are rate-limited to one a second, and the
  # NIC's must not wait behind lo's.
  ip link set "$nic" up
  ip addr add 10.0.2.15/24 dev "$nic"
  ip route add default via 10.0.2.2
fi
ip link set lo up
hostname kvmlab
# -r: no re-exec per connection (saves loading sshd again under TCG); an sshd
# that no longer knows -r exits at once and is started without it.
sshd_args="-f /etc/ssh/sshd_config -E /tmp/sshd.log"
/usr/sbin/sshd -r $sshd_args 2>/dev/null || /usr/sbin/sshd $sshd_args
if [ -n "$nic" ]; then
  # Packets sent before the carrier is on are dropped (no qdisc yet) and the
  # host's first SSH attempt would wait out TCP retransmission (seconds). The
  # carrier is normally on already; operstate lags it by up to a second.
  i=0
  while [ "$(cat /sys/class/net/$nic/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do
    sleep 0.05; i=$((i+1))
  done
fi
echo "kvmlab-guest-ready"
exec /sbin/init
"""

_INITTAB = """::sysinit:/bin/true
ttyS0::respawn:/sbin/getty -n -l /bin/sh -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/poweroff -f
"""

_SSHD_CONFIG = """Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
StrictModes no
AuthorizedKeysFile /root/.ssh/authorized_keys
Subsystem sftp /usr/lib/openssh/sftp-server
"""

#: Printed by /init once sshd has been started; the console watcher's ready marker.
READY_MARKER = "kvmlab-guest-ready"


def _ldd(binary: Path) -> list[Path]:
    out = proc.run(["ldd", str(binary)], timeout=30).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _find_busybox() -> Path:
    for p in BUSYBOX_CANDIDATES:
        if p.is_file():
            return p
    raise HostToolError("busybox: not found (install busybox-static)")


def _keygen(path: Path, comment: str) -> None:
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], timeout=30)
    path.chmod(0o600)


def build_initramfs(
    out_dir: Path,
    *,
    modules_dir: Path | None = None,
    kernel: Path | None = None,
) -> GuestRoot:
    """Build (or reuse) an initramfs in ``out_dir`` and return it as a GuestRoot.

    ``modules_dir``: where the kernel's modules live; by default
    ``/lib/modules/<release of kernel>`` when ``kernel`` is given and that
    directory exists. Modules the kernel has built in are not included.
    The result is cached in ``out_dir`` by a hash of its inputs; the SSH key
    pair is made once per ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if modules_dir is None and kernel is not None:
        release = kernel_release(kernel)
        if release and Path("/lib/modules", release).is_dir():
            modules_dir = Path("/lib/modules", release)
    mods = resolve_modules(modules_dir, NEEDED_MODULES) if modules_dir else ModuleSet(())

    key = out_dir / "id_ed25519"
    host_key = out_dir / "ssh_host_ed25519_key"
    if not key.exists():
        _keygen(key, "kvmlab-initramfs")
    if not host_key.exists():
        _keygen(host_key, "kvmlab-guest-host-key")

    busybox = _find_busybox()
    for tool in (SSHD, SFTP_SERVER):
        if not tool.is_file():
            raise HostToolError(f"{tool}: not found (install openssh-server)")
    inputs = hashlib.sha256()
    for p in (busybox, SSHD, SFTP_SERVER, key.with_suffix(".pub"), host_key):
        inputs.update(p.read_bytes())
    inputs.update(_INIT.encode() + _INITTAB.encode() + _SSHD_CONFIG.encode())
    inputs.update(repr((str(modules_dir), mods.paths)).encode())
    digest = inputs.hexdigest()[:16]
    image = out_dir / f"initramfs-{digest}.cpio.gz"
    root = GuestRoot(name="initramfs", kind=RootKind.INITRAMFS, path=image, ssh_key=key)
    if image.is_file():
        cache.touch(image)
        return root

    log.info("building initramfs %s (%d modules)", image, len(mods.paths))
    cpio = CpioArchive()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root/.ssh",
              "run/sshd", "var/empty", "lib", "lib64", "var/log"):
        cpio.mkdir(d)
    cpio.host_file(busybox, 0o755)
    if str(busybox) != "/bin/busybox":
        cpio.symlink("bin/busybox", str(busybox))
    applets = proc.run([str(busybox), "--list-full"], timeout=30).stdout.split()
    for applet in applets:
        cpio.symlink(applet, "/bin/busybox")
    cpio.file("init", _INIT.encode(), 0o755)
    cpio.file("etc/inittab", _INITTAB.encode())
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n")
    cpio.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    cpio.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600)
    cpio.file("etc/hostname", b"kvmlab\n")
    cpio.file("etc/ssh/sshd_config", _SSHD_CONFIG.encode())
    cpio.file("etc/ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600)
    cpio.file("etc/ssh/ssh_host_ed25519_key.pub", host_key.with_suffix(".pub").read_bytes())
    cpio.file("root/.ssh/authorized_keys", key.with_suffix(".pub").read_bytes(), 0o600)
    libs: set[Path] = set()
    for tool in (SSHD, SFTP_SERVER):
        cpio.host_file(tool, 0o755)
        libs.update(_ldd(tool))
    for lib in sorted(libs):
        cpio.host_file(lib, 0o755)
    if modules_dir is not None:
        for rel, plain in zip(mods.paths, mods.plain_names(), strict=True):
            cpio.file(f"lib/modules/{plain}", module_bytes(modules_dir / rel))
        cpio.file("etc/kvmlab-modules", ("\n".join(mods.plain_names()) + "\n").encode())

    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".initramfs-")
    try:
        with os.fdopen(fd, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(cpio.finish())
        os.replace(tmp, image)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    shutil.copymode(key.with_suffix(".pub"), image)
    return root


#: Where :func:`with_files` puts its files in the guest (not under /tmp:
#: /init mounts a tmpfs over it).
EXTRA_DIR = "/.kvmlab-files"


def with_files(root: GuestRoot, files: Sequence[tuple[Path, str, int]]) -> GuestRoot:
    """``root`` with ``files`` (host path, name, mode) under EXTRA_DIR in the
    guest, as a second, uncompressed cpio appended to the image: the kernel
    unpacks every archive of a concatenated initramfs, and QEMU hands the guest
    its initrd far faster than SFTP into an emulated guest can copy (tens of
    MiB of syzkaller binaries take about a minute under TCG).

    The image is written next to ``root``'s, named by the inputs' hash, and
    reused.
    """
    h = hashlib.sha256(str(root.path.resolve()).encode())
    for host, name, mode in files:
        st = host.stat()
        h.update(f"\0{host.resolve()}\0{name}\0{mode}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    image = root.path.with_name(f"{root.path.name.split('.')[0]}-files-{h.hexdigest()[:16]}.cpio")
    if image.is_file():
        cache.touch(image)
    else:
        cpio = CpioArchive()
        for host, name, mode in files:
            cpio.file(f"{EXTRA_DIR.lstrip('/')}/{name}", host.read_bytes(), mode)
        base = root.path.read_bytes()
        fd, tmp = tempfile.mkstemp(dir=image.parent, prefix=".initramfs-files-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(base)
                f.write(b"\0" * (-len(base) % 4))  # the next archive starts 4-byte aligned
                f.write(cpio.finish())
            os.chmod(tmp, 0o644)  # like the image it extends: libvirt's qemu reads it
            os.replace(tmp, image)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dataclasses.replace(root, path=image)
