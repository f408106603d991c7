"""Guest roots: what a VM boots into besides the kernel.

Two kinds share one interface: an initramfs (kvmlab builds one from the host in
seconds) and a disk image (built from a recipe by :mod:`kvmlab.images`). A VM
never writes to either: a disk image is attached through a per-VM qcow2
overlay, an initramfs lives in RAM (unless the root is ``persistent``: then its
path is a disk the VM's owner keeps, e.g. ``kvmlab boot --keep``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class RootKind(enum.Enum):
    INITRAMFS = "initramfs"
    DISK = "disk"


@dataclass(frozen=True)
class GuestRoot:
    """A bootable guest root filesystem and how to log into it."""

    name: str
    """Human name, e.g. ``initramfs`` or ``bookworm``."""
    kind: RootKind
    path: Path
    """The initramfs (cpio, possibly compressed) or the base disk image (qcow2)."""
    ssh_key: Path
    """Private key that logs in as ``ssh_user`` (mode 0600)."""
    ssh_user: str = "root"
    cmdline: tuple[str, ...] = ()
    """Kernel command-line words this root needs, e.g. ``("root=/dev/vda", "rw")``."""
    persistent: bool = False
    """For a disk: ``path`` is the VM's own disk (a qcow2 overlay its owner
    keeps), attached as is and written to, instead of through a throwaway
    overlay the backend makes and removes."""
