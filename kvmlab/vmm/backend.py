"""The backend contract: what a VM backend must do, and nothing more.

A backend creates an :class:`Instance` from a :class:`~kvmlab.vmm.spec.VMSpec`.
An instance gives its console as a readable file descriptor, the host port
forwarded to its SSH port, tells whether it is still running, and closes
(graceful stop, then a hard kill; nothing survives ``close``). Everything that
is the same for every backend (console watching, SSH, copying files in,
running commands, pools) lives once, above, in :mod:`kvmlab.vmm.machine` and
:mod:`kvmlab.vmm.pool`; that is why copy/run are not part of this contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from kvmlab.vmm.spec import VMSpec


@runtime_checkable
class Instance(Protocol):
    """A started VM."""

    @property
    def name(self) -> str: ...

    @property
    def ssh_port(self) -> int:
        """Port on 127.0.0.1 forwarded to the guest's port 22."""
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
    """Optional: the host pid of the VM's qemu process."""

    def qemu_pid(self) -> int | None: ...


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

    def create(self, spec: VMSpec, *, workdir: Path, ssh_port: int, index: int) -> Instance:
        """Start one VM. ``workdir`` is the VM's own directory (overlay, logs).

        Raises InfraError when the VM can't be started (qemu missing,
        libvirtd down, port taken...); a kernel that doesn't boot is *not*
        an error here: it is seen later on the console.
        """
        ...
