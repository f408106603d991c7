"""The backend contract: what a VM backend must do, and nothing more.

A backend creates an :class:`Instance` from a :class:`~kvmlab.vmm.spec.VMSpec`.
An instance gives its console as a readable file descriptor, opens a new
stream to its guest's SSH port, tells whether it is still running, and closes
(graceful stop, then a hard kill; nothing survives ``close``). Everything that
is the same for every backend (console watching, SSH, copying files in,
running commands, pools) lives once, above, in :mod:`kvmlab.vmm.machine` and
:mod:`kvmlab.vmm.pool`; that is why copy/run are not part of this contract.

How the guest's port 22 is reached is the backend's business: a local QEMU
forwards it to a port on 127.0.0.1 and :meth:`Instance.connect` opens a TCP
socket there; a VM on a remote libvirt host forwards it to the *host's*
127.0.0.1 and ``connect`` opens a ``direct-tcpip`` channel through an SSH
connection to that host. Either way the caller gets one connected stream that
paramiko runs the guest's SSH session over.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias, runtime_checkable

import paramiko

from kvmlab.vmm.spec import VMSpec

#: A connected byte stream to the guest's SSH server: what paramiko accepts
#: as the ``sock`` of a client connection.
GuestStream: TypeAlias = socket.socket | paramiko.Channel


@runtime_checkable
class Instance(Protocol):
    """A started VM."""

    @property
    def name(self) -> str: ...

    def connect(self, timeout: float) -> GuestStream:
        """A new connected stream to the guest's port 22, within ``timeout``
        seconds. Raises :class:`kvmlab.errors.SSHError` when the way to the
        guest is not there (nothing listens yet, the host is unreachable)."""
        ...

    def console_fd(self) -> int:
        """A readable fd carrying the raw serial console from power-on."""
        ...

    def alive(self) -> bool: ...

    def close(self, timeout: float) -> None:
        """Stop the VM (``timeout`` seconds for a graceful stop, then kill) and
        remove everything it made. Idempotent."""
        ...


@runtime_checkable
class HasQemuPid(Protocol):
    """Optional: the pid of the VM's qemu process on this machine."""

    def qemu_pid(self) -> int | None: ...


@runtime_checkable
class HasLocalSSHPort(Protocol):
    """Optional: the guest's SSH is forwarded to this port on this machine's
    127.0.0.1 (a local QEMU or a local libvirt), for tools that need a plain
    ``ssh -p PORT`` command line. Remote instances do not have it."""

    @property
    def local_ssh_port(self) -> int: ...


@runtime_checkable
class HasFailure(Protocol):
    """Optional: the VM is gone because its *host* failed (connection lost
    for good, libvirtd gone), not its kernel; says why (None otherwise)."""

    def failure(self) -> str | None: ...


@runtime_checkable
class HasTimeScale(Protocol):
    """Optional: the VM's accelerator was chosen on its host (see
    :class:`ResolvesAccel`): the factor its timeouts are scaled by, on top of
    the pool's (1 for KVM, TCG_SCALE for TCG)."""

    def time_scale(self) -> float: ...


@runtime_checkable
class ResolvesAccel(Protocol):
    """Optional, for backends: a spec with ``Accel.AUTO`` is resolved by the
    backend on the host each VM runs on (its instances have
    :class:`HasTimeScale`)."""

    def per_host_accel(self) -> bool: ...


@runtime_checkable
class Closeable(Protocol):
    """Optional, for backends: releases what the backend keeps between VMs
    (connections, uploaded files on a host)."""

    def close(self) -> None: ...


@runtime_checkable
class HasConsoleInput(Protocol):
    """Optional: type into the VM's serial console."""

    def console_write(self, data: bytes) -> None:
        """Send ``data`` to the serial port as if typed; raises InfraError
        when the console is gone."""
        ...


@runtime_checkable
class HasMonitor(Protocol):
    """Optional: QEMU's human monitor (HMP), e.g. ``info registers``,
    ``gdbserver tcp:127.0.0.1:1234``."""

    def monitor(self, command: str, *, timeout: float) -> str:
        """Run one HMP command and return its output (QEMU's own complaints
        included: HMP reports errors as text). Raises InfraError when the
        monitor can't be reached within ``timeout`` seconds."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> Instance:
        """Start one VM. ``workdir`` is the VM's own directory on this machine
        (console log, local files).

        Raises InfraError when the VM can't be started (qemu missing,
        libvirtd down, host unreachable...); a kernel that doesn't boot is
        *not* an error here: it is seen later on the console.
        """
        ...


@dataclass(frozen=True)
class SavedState:
    """A VM's state saved on the host of the backend that saved it (see
    :class:`Snapshotting`). Every path is a path on that host."""

    path: str
    """The saved state (the VM's memory and devices)."""
    name: str
    """The name the saved VM had."""
    disk: str | None = None
    """The saved VM's disk (its qcow2 overlay, written no more): each clone's
    own overlay is backed by it. None for an initramfs root."""


@runtime_checkable
class Snapshotting(Protocol):
    """Optional, for backends: save a booted VM once and start clones of it.

    A clone is a new VM (its own name, overlay, console and SSH port) that
    resumes where the saved VM stopped, without booting.
    """

    def save(self, instance: Instance, *, timeout: float) -> SavedState:
        """Stop ``instance`` (started by this backend) and save its state on
        its host; the instance is closed afterwards, except for its disk,
        which the state names. Raises InfraError when it cannot be saved."""
        ...

    def restore(self, saved: SavedState, spec: VMSpec, *, workdir: Path, index: int,
                timeout: float) -> Instance:
        """A running clone of ``saved`` (``spec`` must be the saved VM's).
        Raises InfraError when it cannot be restored within ``timeout`` seconds."""
        ...

    def discard(self, saved: SavedState) -> None:
        """Remove the saved state and its disk from the host."""
        ...


@runtime_checkable
class IsRestored(Protocol):
    """Optional, for instances: the VM is a clone of a saved one."""

    def refresh_helper(self) -> str | None:
        """The guest path of the helper that sets the clock and reseeds the
        RNG (:mod:`kvmlab.vmm.refresh`); None when the VM booted."""
        ...


class WrappedInstance:
    """An instance that wraps another (a fleet's placement, a restored clone)
    and passes on what it does and the optional abilities the layers above
    ask of it: its QEMU pid, its failure, whether it was restored, and its
    time scale (a VM on a host that chose TCG keeps its scaled timeouts
    however many layers wrap it). Subclasses add to it or change one."""

    def __init__(self, inner: Instance) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    def connect(self, timeout: float) -> GuestStream:
        return self.inner.connect(timeout)

    def console_fd(self) -> int:
        return self.inner.console_fd()

    def alive(self) -> bool:
        return self.inner.alive()

    def qemu_pid(self) -> int | None:
        return self.inner.qemu_pid() if isinstance(self.inner, HasQemuPid) else None

    def failure(self) -> str | None:
        return self.inner.failure() if isinstance(self.inner, HasFailure) else None

    def refresh_helper(self) -> str | None:
        return self.inner.refresh_helper() if isinstance(self.inner, IsRestored) else None

    def time_scale(self) -> float:
        return self.inner.time_scale() if isinstance(self.inner, HasTimeScale) else 1.0

    def close(self, timeout: float) -> None:
        self.inner.close(timeout)
