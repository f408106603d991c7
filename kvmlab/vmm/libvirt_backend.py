"""The ``libvirt`` backend: transient domains through libvirt-python.

Works on any URI (``qemu:///system``, ``qemu:///session``,
``qemu+ssh://host/system``). The console is read through libvirt itself — its
console stream — so it works for a remote URI too; a thread pumps the stream
into a pipe the console watcher reads, and input typed into the console goes
back through the same stream. The domain is created paused, the console
opened, then the domain resumed, so no console byte is lost. The monitor is
QEMU's, through libvirt-qemu's monitor command passthrough.

Files (kernel, initrd, overlay) are referenced by path: with a remote URI
they must exist at the same paths on the remote host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from kvmlab import proc
from kvmlab.errors import InfraError, LibvirtError
from kvmlab.vmm.domain_xml import domain_xml
from kvmlab.vmm.overlay import make_overlay
from kvmlab.vmm.qemu_backend import PortInUseError
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import VMSpec

log = logging.getLogger(__name__)

#: Domains kvmlab creates are named ``kvmlab-<pid>-<spec name>-<index>``; the
#: pid lets a later run remove domains whose kvmlab process died (kill -9).
DOMAIN_PREFIX = "kvmlab-"


def _quiet(ctx: Any, err: Any) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


libvirt.registerErrorHandler(_quiet, None)


def open_connection(uri: str) -> Any:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise LibvirtError(f"libvirt at {uri}: {e.get_error_message()} (is libvirtd running?)") from e


def reap_stale_domains(conn: Any) -> list[str]:
    """Destroy kvmlab domains whose owning kvmlab process is gone."""
    reaped = []
    for dom in conn.listAllDomains():
        m = re.match(rf"{DOMAIN_PREFIX}(\d+)-", dom.name())
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or proc.pid_alive(pid):
            continue
        try:
            dom.destroy()
            reaped.append(dom.name())
        except libvirt.libvirtError:
            pass
    return reaped


class _EventLoop:
    """libvirt's default event loop, run in one daemon thread per process.

    Console streams are read non-blocking from this loop: a blocking
    ``virStream.recv`` in one thread can stall other calls on libvirt
    connections (seen here: a domain destroy hung behind it).
    """

    _lock = threading.Lock()
    _started = False

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls._started:
                return
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=cls._run, name="libvirt-events", daemon=True).start()
            cls._started = True

    @staticmethod
    def _run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()


class _ConsolePump:
    """Copy a domain's console, read non-blocking from libvirt's event loop,
    into a pipe.

    libvirt sometimes ends a pty console stream while the domain runs on
    (seen here while the guest's getty opens ttyS0); the pump then opens the
    console again, so the pipe ends only when the domain does.
    """

    def __init__(self, conn: Any, dom: Any) -> None:
        self._conn = conn
        self._dom = dom
        self.read_fd, self._write_fd = os.pipe()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._open()

    def _open(self) -> None:
        stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        self._dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        events = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                  | libvirt.VIR_STREAM_EVENT_HANGUP)
        stream.eventAddCallback(events, self._on_event, None)
        self._stream = stream

    def _on_event(self, stream: Any, events: int, opaque: Any) -> None:
        while not self._done.is_set():
            try:
                data = stream.recv(65536)
            except libvirt.libvirtError as e:
                log.debug("console stream ended: %s", e)
                self._ended(stream)
                return
            if data == -2:  # nothing more for now
                return
            if isinstance(data, int) or not data:
                self._ended(stream)
                return
            try:
                os.write(self._write_fd, data)
            except OSError:
                self._finish()
                return

    def _ended(self, stream: Any) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        try:
            active = bool(self._dom.isActive())
        except libvirt.libvirtError:
            active = False
        if active and not self._done.is_set():
            log.debug("console stream ended while the domain runs: reopening")
            try:
                self._open()
                return
            except libvirt.libvirtError as e:
                log.debug("could not reopen the console: %s", e)
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._done.set()
            if self._stream is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._stream.eventRemoveCallback()
                with contextlib.suppress(libvirt.libvirtError):
                    self._stream.abort()
            with contextlib.suppress(OSError):
                os.close(self._write_fd)

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Send ``data`` into the console (the stream is non-blocking: wait
        while it is full, at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while data:
            with self._lock:
                stream = None if self._done.is_set() else self._stream
            if stream is None:
                raise InfraError("the console stream has ended")
            try:
                sent = stream.send(data)
            except libvirt.libvirtError as e:
                raise InfraError(f"console input: {e.get_error_message()}") from e
            if sent == -2:  # full for now
                if time.monotonic() > deadline:
                    raise InfraError("console input: the stream stays full")
                time.sleep(0.01)
                continue
            data = data[sent:]

    def close(self) -> None:
        self._finish()
        with contextlib.suppress(OSError):
            os.close(self.read_fd)


class LibvirtInstance:
    """One transient domain; see :class:`kvmlab.vmm.backend.Instance`."""

    def __init__(self, conn: Any, dom: Any, ssh_port: int, pump: _ConsolePump, files: list[Path]) -> None:
        self._conn = conn
        self._dom = dom
        self._name: str = dom.name()
        self._ssh_port = ssh_port
        self._pump = pump
        self._files = files
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def ssh_port(self) -> int:
        return self._ssh_port

    def console_fd(self) -> int:
        return self._pump.read_fd

    def alive(self) -> bool:
        try:
            return bool(self._dom.isActive())
        except libvirt.libvirtError:
            return False

    def console_write(self, data: bytes) -> None:
        try:
            self._pump.write(data)
        except InfraError as e:
            raise InfraError(f"{self._name}: {e}") from e

    def monitor(self, command: str, *, timeout: float) -> str:
        # libvirt bounds monitor commands by its own job timeout (30 s);
        # ``timeout`` can't shorten it.
        try:
            out = libvirt_qemu.qemuMonitorCommand(
                self._dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self._name}: monitor {command!r}: {e.get_error_message()}") from e
        return str(out)

    def qemu_pid(self) -> int | None:
        pidfile = Path("/run/libvirt/qemu") / f"{self._name}.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def close(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._dom.isActive():
                # A test guest has nothing to save: destroy (SIGTERM, then
                # SIGKILL inside libvirt) rather than an ACPI shutdown.
                self._dom.destroy()
        except libvirt.libvirtError as e:
            if self.alive():
                log.warning("%s: could not destroy: %s", self._name, e)
        finally:
            self._pump.close()
            for f in self._files:
                f.unlink(missing_ok=True)
            self._conn.close()


class LibvirtBackend:
    """Start VMs as transient libvirt domains at ``uri``."""

    name = "libvirt"

    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        _EventLoop.ensure()
        conn = open_connection(uri)
        try:
            reaped = reap_stale_domains(conn)
        finally:
            conn.close()
        if reaped:
            log.warning("removed %d domains left by dead kvmlab processes: %s", len(reaped), reaped)

    def create(self, spec: VMSpec, *, workdir: Path, ssh_port: int, index: int) -> LibvirtInstance:
        files: list[Path] = []
        disk = None
        if spec.root.kind is RootKind.DISK:
            if spec.root.persistent:
                disk = spec.root.path
            else:
                disk = make_overlay(spec.root.path, workdir / "overlay.qcow2")
                files.append(disk)
        local_system = self.uri in ("qemu:///system", "qemu+unix:///system") and os.geteuid() == 0
        name = f"{DOMAIN_PREFIX}{os.getpid()}-{spec.name}-{index}"
        xml = domain_xml(
            spec,
            name=name,
            ssh_port=ssh_port,
            kernel=spec.kernel.resolve(),
            initrd=(spec.root.path if spec.root.kind is RootKind.INITRAMFS else spec.initrd),
            disk=disk.resolve() if disk else None,
            run_as_root=local_system,
        )
        (workdir / "domain.xml").write_text(xml)
        conn = open_connection(self.uri)
        try:
            dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as e:
            conn.close()
            msg = e.get_error_message()
            if "hostfwd" in msg or "host forwarding" in msg:
                raise PortInUseError(f"libvirt: qemu could not forward 127.0.0.1:{ssh_port}") from e
            raise LibvirtError(f"libvirt: could not start {name}: {msg}") from e
        try:
            pump = _ConsolePump(conn, dom)
            if not spec.paused:
                dom.resume()
        except libvirt.libvirtError as e:
            try:
                dom.destroy()
            finally:
                conn.close()
            msg = e.get_error_message()
            raise InfraError(f"libvirt: could not attach the console of {name}: {msg}") from e
        return LibvirtInstance(conn, dom, ssh_port, pump, files)
