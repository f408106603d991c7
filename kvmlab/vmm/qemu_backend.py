"""The ``qemu`` backend: kvmlab starts qemu-system-x86_64 itself.

For a workstation with no libvirtd. The serial console is QEMU's stdout (a
pipe the console watcher reads) and its stdin (what is typed into it); QEMU's
own messages go to ``qemu.log`` in the VM's work dir. The monitor is QMP on a
unix socket in the work dir.

Snapshots (:class:`~kvmlab.vmm.backend.Snapshotting`): a save streams the
stopped VM's migration state into a file in its work dir (``exec:cat``); a
clone is a new QEMU started with ``-incoming defer`` that reads it back, with
its own overlay on top of the saved VM's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmlab import owner, proc
from kvmlab.errors import HostToolError, InfraError
from kvmlab.vmm.backend import Instance, SavedState
from kvmlab.vmm.overlay import make_overlay
from kvmlab.vmm.ports import PortAllocator, PortInUseError, connect_local
from kvmlab.vmm.qemu_argv import qemu_argv
from kvmlab.vmm.qmp import MIGRATION_BANDWIDTH, QMPClient, wait_migration
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import VMSpec

log = logging.getLogger(__name__)


__all__ = ["PortInUseError", "QemuBackend", "QemuInstance"]


#: A unix socket path must fit in sun_path (108 bytes with the NUL).
_MAX_SOCKET_PATH = 100


def _qmp_path(workdir: Path) -> tuple[Path, Path | None]:
    """Where QEMU's QMP socket goes: in the VM's work dir when the path is
    short enough for a unix socket, else in a temp dir of its own (returned
    second, for removal)."""
    path = workdir.resolve() / "qmp.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path, None
    d = owner.mkdtemp("qmp")
    return d / "qmp.sock", d


class QemuInstance:
    """One qemu process; see :class:`kvmlab.vmm.backend.Instance`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], ssh_port: int, files: list[Path],
                 qmp: Path, qmp_dir: Path | None = None, on_close: Callable[[], None] = lambda: None,
                 *, workdir: Path | None = None, disk: Path | None = None) -> None:
        self._name = name
        self.workdir = workdir
        """The VM's work dir (where a save puts its state)."""
        self.disk = disk
        """The VM's own overlay (a disk root), or None."""
        self._popen = popen
        self._ssh_port = ssh_port
        self._files = files
        self._on_close = on_close
        self._qmp = QMPClient(qmp)
        self._qmp_path = qmp
        self._qmp_dir = qmp_dir

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

    def console_write(self, data: bytes) -> None:
        if self._popen.stdin is None:
            raise InfraError(f"{self._name}: the console takes no input")
        try:
            os.write(self._popen.stdin.fileno(), data)
        except (BrokenPipeError, ValueError, OSError) as e:
            raise InfraError(f"{self._name}: console input: {e}") from e

    def monitor(self, command: str, *, timeout: float) -> str:
        return self._qmp.hmp(command, timeout=timeout)

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Run one QMP command (see :meth:`QMPClient.execute`)."""
        return self._qmp.execute(command, arguments, timeout=timeout)

    def keep_disk(self) -> Path | None:
        """Keep the VM's overlay when it closes (a saved state needs it)."""
        if self.disk is not None and self.disk in self._files:
            self._files.remove(self.disk)
        return self.disk

    def close(self, timeout: float) -> None:
        self._qmp.close()
        proc.kill_group(self._popen, grace=timeout)
        for stream in (self._popen.stdout, self._popen.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for f in self._files:
            f.unlink(missing_ok=True)
        self._qmp_path.unlink(missing_ok=True)
        if self._qmp_dir is not None:
            shutil.rmtree(self._qmp_dir, ignore_errors=True)
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

    def save(self, instance: Instance, *, timeout: float) -> SavedState:
        """Stop the VM and stream its state into ``state`` in its work dir
        (QMP ``migrate`` to ``exec:cat``), then close it, keeping its overlay."""
        inst = instance
        if not isinstance(inst, QemuInstance) or inst.workdir is None:
            raise InfraError(f"{instance.name}: not a VM of this backend")
        state = inst.workdir.resolve() / "state"
        try:
            inst.qmp("stop", timeout=timeout)
            inst.qmp("migrate-set-parameters", {"max-bandwidth": MIGRATION_BANDWIDTH}, timeout=timeout)
            inst.qmp("migrate", {"uri": f"exec:cat > {shlex.quote(str(state))}"}, timeout=timeout)
            wait_migration(lambda: dict(inst.qmp("query-migrate", timeout=timeout)),
                           what=f"{inst.name}: saving", timeout=timeout)
        except BaseException:
            state.unlink(missing_ok=True)
            raise
        disk = inst.keep_disk()
        inst.close(timeout)
        log.debug("%s: saved (%d bytes) to %s", inst.name, state.stat().st_size, state)
        return SavedState(str(state), inst.name, str(disk) if disk is not None else None)

    def restore(self, saved: SavedState, spec: VMSpec, *, workdir: Path, index: int,
                timeout: float) -> QemuInstance:
        """A new QEMU waiting for an incoming migration (``-incoming defer``)
        that reads ``saved`` (``exec:cat``), then runs."""
        if shutil.which(spec.qemu) is None:
            raise HostToolError(f"{spec.qemu}: not found (install qemu-system-x86)")
        inst = self._ports.start_with_port(
            lambda port: self._start(spec, workdir=workdir, index=index, ssh_port=port, incoming=saved),
            what=f"vm {index}")
        try:
            inst.qmp("migrate-incoming", {"uri": f"exec:cat {shlex.quote(saved.path)}"}, timeout=timeout)
            wait_migration(lambda: dict(inst.qmp("query-migrate", timeout=timeout)),
                           what=f"{inst.name}: restoring", timeout=timeout)
            # The saved VM was stopped: its clone comes in stopped too.
            inst.qmp("cont", timeout=timeout)
        except BaseException:
            inst.close(1.0)
            raise
        return inst

    def discard(self, saved: SavedState) -> None:
        Path(saved.path).unlink(missing_ok=True)
        if saved.disk is not None:
            Path(saved.disk).unlink(missing_ok=True)

    def _start(self, spec: VMSpec, *, workdir: Path, index: int, ssh_port: int,
               incoming: SavedState | None = None) -> QemuInstance:
        files: list[Path] = []
        disk = None
        if spec.root.kind is RootKind.DISK:
            if spec.root.persistent:
                disk = spec.root.path
            else:
                base = Path(incoming.disk) if incoming is not None and incoming.disk else spec.root.path
                disk = make_overlay(base, workdir / "overlay.qcow2")
                files.append(disk)
        qemu_log = workdir / "qemu.log"
        qmp, qmp_dir = _qmp_path(workdir)
        # The VM's own name in the argv: ps shows which pool member it is.
        argv = qemu_argv(dataclasses.replace(spec, name=f"{spec.name}-{index}"), ssh_port=ssh_port, disk=disk,
                         qmp=qmp)
        if incoming is not None:
            argv += ["-incoming", "defer"]
        (workdir / "qemu.argv").write_text(" ".join(argv) + "\n")
        with qemu_log.open("wb") as err:
            popen = proc.spawn(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.PIPE,
                               die_with_us=True)
        inst = QemuInstance(f"{spec.name}-{index}", popen, ssh_port, files, qmp, qmp_dir,
                            on_close=lambda: self._ports.release(ssh_port), workdir=workdir, disk=disk)
        # QEMU fails fast on bad arguments or a taken port; catch that here so
        # the error names the cause instead of showing up as a silent console.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and inst.alive():
            time.sleep(0.05)
        if not inst.alive():
            msg = qemu_log.read_text(errors="replace").strip()
            if not msg and popen.returncode == 0 and incoming is None:
                # A clean exit without a word from QEMU: the guest reset or
                # powered off at once (-no-reboot), e.g. a kernel that does not
                # fit the RAM. That is the kernel's boot failing, and its console
                # is still in the pipe for the watcher to read.
                return inst
            inst.close(1.0)
            last = msg.splitlines()[-1] if msg else "no message"
            if "hostfwd" in msg or "Could not set up host forwarding" in msg:
                raise PortInUseError(f"qemu could not forward 127.0.0.1:{ssh_port}: {last}")
            raise InfraError(f"qemu exited at start: {last}")
        return inst
