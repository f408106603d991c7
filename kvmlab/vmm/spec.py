"""What a VM is: the pure description both backends start from."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab.vmm.root import GuestRoot

#: Kernel command line every kvmlab guest gets: serial console, a panic stops
#: the VM at once (with ``-no-reboot``), and an oops or a warning is a panic so
#: that a crash can't be missed (syzbot runs its kernels the same way).
BASE_CMDLINE: tuple[str, ...] = (
    "console=ttyS0,115200",
    "earlyprintk=serial",
    "panic=-1",
    "oops=panic",
    "panic_on_warn=1",
    "net.ifnames=0",
    "biosdevname=0",
    "printk.devkmsg=on",
)


@dataclass(frozen=True)
class Share:
    """A host directory exported to the guest over 9p (virtio transport); the
    guest mounts it with ``mount -t 9p -o trans=virtio,version=9p2000.L TAG DIR``."""

    tag: str
    """The mount tag the guest names (at most 31 characters)."""
    path: Path
    """The host directory, absolute."""


class Accel(enum.Enum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class VMSpec:
    """One virtual machine: kernel, root, size. Backends turn it into a VM."""

    kernel: Path
    """The bzImage to boot directly (no bootloader)."""
    root: GuestRoot
    cpus: int = 2
    """vCPUs."""
    memory_mb: int = 1024
    """Guest RAM in MiB."""
    cmdline: tuple[str, ...] = ()
    """Extra kernel command-line words, after BASE_CMDLINE and the root's."""
    accel: Accel = Accel.TCG
    """The accelerator to use; ``AUTO`` must be resolved (see accel.py) before a
    backend sees the spec."""
    name: str = "kvmlab"
    """Prefix of the VM's name (the backend adds the pool index)."""
    qemu: str = "qemu-system-x86_64"
    initrd: Path | None = None
    """For a disk root: an initrd that loads the drivers the kernel has as
    modules (virtio) before mounting the root. Unused with an initramfs root."""
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    """Extra QEMU arguments (direct backend) for advanced use."""
    paused: bool = False
    """Start with the vCPUs stopped (QEMU ``-S``; a libvirt domain is not
    resumed): a debugger attaches first and lets it run."""
    shares: tuple[Share, ...] = ()
    """Host directories the guest can mount (9p over virtio)."""

    def full_cmdline(self) -> str:
        return " ".join((*BASE_CMDLINE, *self.root.cmdline, *self.cmdline))
