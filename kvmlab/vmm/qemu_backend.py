"""The ``qemu`` backend: kvmlab starts qemu-system-x86_64 itself.

For a workstation with no libvirtd. The serial console is QEMU's stdout (a
pipe the console watcher reads); QEMU's own messages go to ``qemu.log`` in the
VM's work dir.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kvmlab import proc
from kvmlab.errors import HostToolError, InfraError
from kvmlab.vmm.overlay import make_overlay
from kvmlab.vmm.ports import PortAllocator, PortInUseError, connect_local
from kvmlab.vmm.qemu_argv import qemu_argv
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import VMSpec

log = logging.getLogger(__name__)


__all__ = ["PortInUseError", "QemuBackend", "QemuInstance"]


class QemuInstance:
    """One qemu process; see :class:`kvmlab.vmm.backend.Instance`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], ssh_port: int, files: list[Path],
                 on_close: Callable[[], None] = lambda: None) -> None:
        self._name = name
        self._popen = popen
        self._ssh_port = ssh_port
        self._files = files
        self._on_close = on_close

    @property
    def name(self) -> str:
        return self._name

    @property
    def local_ssh_port(self) -> int:
        return self._ssh_port

    def connect(self, timeout: float) -> socket.socket:
        return connect_local(self._ssh_port, timeout)

    def console_fd(self) -> int:
        assert self._popen.stdout is not None
        return self._popen.stdout.fileno()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def qemu_pid(self) -> int | None:
        return self._popen.pid if self.alive() else None

    def close(self, timeout: float) -> None:
        proc.kill_group(self._popen, grace=timeout)
        if self._popen.stdout is not None:
            self._popen.stdout.close()
        for f in self._files:
            f.unlink(missing_ok=True)
        self._on_close()
        self._on_close = lambda: None


class QemuBackend:
    """Start VMs as child processes of kvmlab, SSH forwarded to 127.0.0.1."""

    name = "qemu"

    def __init__(self) -> None:
        self._ports = PortAllocator()

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> QemuInstance:
        if shutil.which(spec.qemu) is None:
            raise HostToolError(f"{spec.qemu}: not found (install qemu-system-x86)")
        return self._ports.start_with_port(
            lambda port: self._start(spec, workdir=workdir, index=index, ssh_port=port), what=f"vm {index}"
        )

    def _start(self, spec: VMSpec, *, workdir: Path, index: int, ssh_port: int) -> QemuInstance:
        files: list[Path] = []
        disk = None
        if spec.root.kind is RootKind.DISK:
            disk = make_overlay(spec.root.path, workdir / "overlay.qcow2")
            files.append(disk)
        qemu_log = workdir / "qemu.log"
        # The VM's own name in the argv: ps shows which pool member it is.
        argv = qemu_argv(dataclasses.replace(spec, name=f"{spec.name}-{index}"), ssh_port=ssh_port, disk=disk)
        (workdir / "qemu.argv").write_text(" ".join(argv) + "\n")
        with qemu_log.open("wb") as err:
            popen = proc.spawn(argv, stdout=subprocess.PIPE, stderr=err, die_with_us=True)
        inst = QemuInstance(f"{spec.name}-{index}", popen, ssh_port, files,
                            on_close=lambda: self._ports.release(ssh_port))
        # QEMU fails fast on bad arguments or a taken port; catch that here so
        # the error names the cause instead of showing up as a silent console.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and inst.alive():
            time.sleep(0.05)
        if not inst.alive():
            inst.close(1.0)
            msg = qemu_log.read_text(errors="replace").strip()
            last = msg.splitlines()[-1] if msg else "no message"
            if "hostfwd" in msg or "Could not set up host forwarding" in msg:
                raise PortInUseError(f"qemu could not forward 127.0.0.1:{ssh_port}: {last}")
            raise InfraError(f"qemu exited at start: {last}")
        return inst
