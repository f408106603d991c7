"""The ``libvirt`` backend: transient domains on a libvirt host, local or remote.

Works the same on every URI (``qemu:///system``, ``qemu:///session``,
``qemu+ssh://user@host/system``): the kernel, the initramfs and the disk
overlay reach the host as storage volumes (:mod:`kvmlab.vmm.storage`) and the
domain XML names only their paths on the host. The guest's SSH is forwarded to
the host's 127.0.0.1 on a port QEMU picks (read back from the monitor), reached
through :meth:`kvmlab.vmm.host.Host.open_tcp`.

The console is read through libvirt's console stream, pumped into a pipe the
console watcher reads. The domain is created paused, the console opened, then
the domain resumed, so no console byte is lost. The host also writes the
console to a log file in the pool: when the stream ends while the domain runs
(a dropped connection, or libvirt ending a pty stream while the guest opens
ttyS0), the pump reconnects if it must and follows that file from the byte
the stream stopped at, so nothing is lost and nothing is repeated. Input
typed into the console goes back through the same stream; the monitor is
QEMU's, through libvirt-qemu's monitor command passthrough.

Snapshots (:class:`~kvmlab.vmm.backend.Snapshotting`): libvirt saves a booted
domain into a file of the kvmlab pool on its host; each clone is fed from it
there (see :meth:`LibvirtBackend.restore`): nothing crosses to the client.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from kvmlab.config import cache_dir
from kvmlab.errors import InfraError, KvmlabError, LibvirtError, UserError
from kvmlab.vmm.accel import AccelChoice, with_accel
from kvmlab.vmm.backend import GuestStream, Instance, SavedState
from kvmlab.vmm.domain_xml import domain_xml, hostfwd_port, relay_xml
from kvmlab.vmm.host import DOMAIN_PREFIX, Host, open_connection
from kvmlab.vmm.host_accel import kernel_kind, resolve_host_accel
from kvmlab.vmm.qmp import MIGRATION_BANDWIDTH, incoming_port, wait_migration
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import Accel, VMSpec
from kvmlab.vmm.storage import download

__all__ = ["DOMAIN_PREFIX", "LibvirtBackend", "LibvirtInstance", "LocalLibvirtInstance", "open_connection"]

log = logging.getLogger(__name__)


def qmp(dom: Any, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """One QMP command through libvirt's monitor passthrough; its ``return``."""
    req: dict[str, Any] = {"execute": command}
    if arguments:
        req["arguments"] = arguments
    try:
        out = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(req), 0))
    except libvirt.libvirtError as e:
        raise LibvirtError(f"qmp {command}: {e.get_error_message()}") from e
    if "error" in out:
        raise LibvirtError(f"qmp {command}: {out['error'].get('desc', out['error'])}")
    ret = out.get("return")
    return ret if isinstance(ret, dict) else {}

#: Seconds between reads of the host's console log while following it.
_FOLLOW_POLL = 0.5


def _drop_stream(stream: Any) -> None:
    """Remove a console stream's callback, abort the stream and free it.

    libvirt-python never releases the data it registered with the callback
    (a dict holding the Python stream), so the stream object outlives
    everything, and with it the C stream and its reference on the
    connection: a remote host's ssh transport would stay up after the host
    is closed. The C stream is therefore freed here, by hand.
    """
    with contextlib.suppress(libvirt.libvirtError):
        stream.eventRemoveCallback()
    with contextlib.suppress(libvirt.libvirtError):
        stream.abort()
    handle, stream._o = stream._o, None
    with contextlib.suppress(AttributeError):
        del stream.cb  # its __del__ would remove the callback of a freed stream
    if handle is not None:
        libvirt.libvirtmod.virStreamFree(handle)


class _ConsolePump:
    """Copy a domain's console into a pipe; see the module docstring."""

    def __init__(self, inst: LibvirtInstance) -> None:
        self._inst = inst
        self._host = inst.host
        self.read_fd, self._write_fd = os.pipe()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._following = False
        self.forwarded = 0
        """Console bytes written to the pipe so far (an offset into the log)."""
        self._remove_listener = self._host.on_connection_lost(lambda why: self._stream_ended())

    def open_stream(self, dom: Any) -> None:
        stream = self._host.conn().newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        events = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                  | libvirt.VIR_STREAM_EVENT_HANGUP)
        stream.eventAddCallback(events, self._on_event, None)
        self._stream = stream

    def _write(self, data: bytes) -> bool:
        try:
            os.write(self._write_fd, data)
        except OSError:
            self._finish()
            return False
        self.forwarded += len(data)
        return True

    def _on_event(self, stream: Any, events: int, opaque: Any) -> None:
        while not self._done.is_set():
            with self._lock:
                if self._following:
                    return
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError as e:
                    log.debug("%s: console stream ended: %s", self._inst.name, e)
                    data = b""
                if data == -2:  # nothing more for now
                    return
                if isinstance(data, int) or not data:
                    break
                if not self._write(data):
                    return
        self._stream_ended()

    def _stream_ended(self) -> None:
        """Stop reading the stream and follow the host's console log instead."""
        with self._lock:
            if self._following or self._done.is_set():
                return
            self._following = True
            stream, self._stream = self._stream, None
        if stream is not None:
            _drop_stream(stream)
        threading.Thread(target=self._follow, name=f"console-log:{self._inst.name}", daemon=True).start()

    def _offset_in_log(self, vol: Any) -> int:
        """Where the console bytes not forwarded yet start in the host's log.

        The host's virtlogd rotates a log past its size limit (2 MiB by
        default) into ``.0``, ``.1``, ``.2``: the bytes in those come first.
        When older ones were dropped the gap cannot be placed; the log is then
        followed from its end, and a warning says output may be missing.
        """
        before = 0
        for n in range(8):
            rotated = self._host.storage.volume(f"{self._inst.console_log_what}.{n}")
            if rotated is None:
                break
            before += int(rotated.info()[1])
        size = int(vol.info()[1])
        offset = self.forwarded - before
        if not 0 <= offset <= size:
            log.warning("%s: the host rotated the console log past what kvmlab had read; "
                        "output while disconnected may be missing", self._inst.name)
            return size
        return offset

    def _follow(self) -> None:
        inst = self._inst
        offset: int | None = None
        try:
            while not self._done.is_set():
                lost = self._host.connection_lost
                if lost is not None:
                    inst.state = "reconnecting"
                    deadline = time.monotonic() + self._host.timeouts.reconnect
                    if not self._host.revive(deadline):
                        inst.lost(f"{lost}; no new connection within {self._host.timeouts.reconnect:.0f}s")
                        return
                    log.info("%s: re-attached after the connection came back", inst.name)
                inst.state = "running"
                dom = self._host.lookup(inst.name)
                active = False
                with contextlib.suppress(libvirt.libvirtError):
                    active = dom is not None and bool(dom.isActive())
                vol = self._host.storage.volume(inst.console_log_what)
                if vol is None:
                    if not self._done.is_set():
                        log.warning("%s: the host has no console log; console output ends here", inst.name)
                    return
                try:
                    if offset is None:
                        offset = self._offset_in_log(vol)
                    data = b""
                    if int(vol.info()[1]) < offset:
                        # Rotated while we follow it: the end of the old file, then the new one.
                        rotated = self._host.storage.volume(f"{inst.console_log_what}.0")
                        data = download(self._host.conn(), rotated, offset) if rotated is not None else b""
                        offset = -len(data)
                    data += download(self._host.conn(), vol, max(offset, 0))
                except (libvirt.libvirtError, LibvirtError, OSError) as e:
                    log.debug("%s: reading the console log: %s", inst.name, e)
                    time.sleep(_FOLLOW_POLL)
                    continue
                offset += len(data)
                if data and not self._write(data):
                    return
                if not active:
                    return  # the domain ended: everything it printed is in
                time.sleep(_FOLLOW_POLL)
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._done.set()
            stream, self._stream = self._stream, None
        self._remove_listener()
        if stream is not None:
            _drop_stream(stream)
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
    """One transient domain on a host; see :class:`kvmlab.vmm.backend.Instance`."""

    def __init__(self, host: Host, name: str, *, volumes: list[str], console_log_what: str,
                 disk: str | None = None, scale: float = 1.0) -> None:
        self.host = host
        self._scale = scale
        self._name = name
        self._volumes = volumes
        self._disk = disk
        self.console_log_what = console_log_what
        self.ssh_port = 0
        """The guest's SSH port on the host's 127.0.0.1."""
        self.state = "running"
        """``running``, ``reconnecting`` (the connection dropped), ``lost`` or ``closed``."""
        self._failure: str | None = None
        self._closed = False
        self.pump = _ConsolePump(self)

    @property
    def name(self) -> str:
        return self._name

    def time_scale(self) -> float:
        """:class:`~kvmlab.vmm.backend.HasTimeScale`: TCG_SCALE when the host
        chose TCG for a spec that left it to the host, else 1."""
        return self._scale

    def connect(self, timeout: float) -> GuestStream:
        return self.host.open_tcp(self.ssh_port, timeout)

    def console_fd(self) -> int:
        return self.pump.read_fd

    def alive(self) -> bool:
        if self.state == "reconnecting":
            return True  # not known yet: the pump decides within the reconnect time
        if self.state != "running":
            return False
        if self.host.connection_lost is not None:
            return True  # the pump starts reconnecting
        dom = self.host.lookup(self._name)
        if dom is None:
            return False
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    def keep_disk(self) -> str | None:
        """Keep the VM's overlay volume when it closes (a saved state needs
        it); returns its path on the host (None: no overlay of its own)."""
        own = [v for v in self._volumes if v.endswith(".qcow2")]
        for v in own:
            self._volumes.remove(v)
        return self._disk if own else None

    def lost(self, why: str) -> None:
        """The host stopped answering for good: the VM counts as gone."""
        self._failure = why
        self.state = "lost"
        log.warning("%s: %s", self._name, why)

    def failure(self) -> str | None:
        """Why the VM is gone when its host failed, not its kernel (None otherwise)."""
        return self._failure

    def console_write(self, data: bytes) -> None:
        try:
            self.pump.write(data)
        except InfraError as e:
            raise InfraError(f"{self._name}: {e}") from e

    def monitor(self, command: str, *, timeout: float) -> str:
        # libvirt bounds monitor commands by its own job timeout (30 s);
        # ``timeout`` can't shorten it.
        dom = self.host.lookup(self._name)
        if dom is None:
            raise LibvirtError(f"{self._name}: monitor {command!r}: the domain is gone")
        try:
            out = libvirt_qemu.qemuMonitorCommand(dom, command,
                                                  libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self._name}: monitor {command!r}: {e.get_error_message()}") from e
        return str(out)

    def qemu_pid(self) -> int | None:
        if not (self.host.address.local and self.host.address.path == "system"):
            return None
        pidfile = Path("/run/libvirt/qemu") / f"{self._name}.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def close(self, timeout: float) -> None:
        if self._closed:
            return
        self._closed = True
        prior, self.state = self.state, "closed"
        # The console first: the stream the destroy ends is not followed.
        self.pump.close()
        try:
            if prior != "lost" or self.host.connection_lost is None:
                dom = self.host.lookup(self._name)
                # A test guest has nothing to save: destroy (SIGTERM, then
                # SIGKILL inside libvirt) rather than an ACPI shutdown.
                if dom is not None and dom.isActive():
                    dom.destroy()
                self.host.forget_domain(self._name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                self.host.forget_domain(self._name)  # it ended on its own (a panic) meanwhile
            else:
                log.warning("%s: could not destroy (the host's cleanup retries): %s", self._name, e)
        except LibvirtError as e:
            log.warning("%s: could not destroy (the host's cleanup retries): %s", self._name, e)
        finally:
            with contextlib.suppress(LibvirtError):
                for what in self._volumes:
                    self.host.storage.delete(what)


class LocalLibvirtInstance(LibvirtInstance):
    """A domain on this machine's libvirt: its SSH forward is on our own
    127.0.0.1 too (:class:`~kvmlab.vmm.backend.HasLocalSSHPort`)."""

    @property
    def local_ssh_port(self) -> int:
        return self.ssh_port


@dataclass
class _Relay:
    """A saved domain restored once more to feed one clone."""

    dom: Any
    volumes: list[str]
    """Its console log and disk (names in the pool)."""


@dataclass
class _RelaySlot:
    """The relays of one saved state: one at a time (they share its name),
    and one kept restored ahead of the next clone."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    warm: _Relay | None = None
    discarded: bool = False


class LibvirtBackend:
    """Start VMs as transient libvirt domains on one :class:`Host` (or on the
    host of a URI, connected at once). ``owns_host`` (default: when given a
    URI): :meth:`close` closes the host."""

    name = "libvirt"

    def __init__(self, host: Host | str = "qemu:///system", *, owns_host: bool | None = None,
                 probe_cache: Path | None = None) -> None:
        self._owns_host = isinstance(host, str) if owns_host is None else owns_host
        self._probe_cache = probe_cache
        """Where the host's KVM probe is remembered (default: kvmlab's cache dir)."""
        self._accel: dict[str, AccelChoice] = {}
        self._accel_lock = threading.Lock()
        self._lock = threading.Lock()
        self._relays: dict[str, _RelaySlot] = {}
        self._relay_seq = itertools.count(1)
        self.host = Host(host, capacity=1 << 16) if isinstance(host, str) else host
        if isinstance(host, str):
            # Fail early, with the host's own message, when it is unreachable
            # (a Host given by a fleet connects on first use instead).
            self.host.conn()

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> LibvirtInstance:
        return self._create(spec, workdir=workdir, index=index)

    def per_host_accel(self) -> bool:
        """:class:`~kvmlab.vmm.backend.ResolvesAccel`: ``Accel.AUTO`` is
        resolved on this host (:meth:`accel_for`)."""
        return True

    def accel_for(self, kernel: Path) -> AccelChoice:
        """The accelerator of VMs of ``kernel`` on this host: its own setting,
        or probed there (once per kernel type; see :mod:`kvmlab.vmm.host_accel`)."""
        kind = kernel_kind(kernel)
        with self._accel_lock:  # held while probing: concurrent VMs wait for the one probe
            choice = self._accel.get(kind)
            if choice is None:
                choice = resolve_host_accel(self.host, kernel, cache_dir=self._probe_cache or cache_dir())
                log.info("%s: %s (%s)", self.host.label, choice.accel.value, choice.reason)
                self._accel[kind] = choice
        return choice

    def _create(self, spec: VMSpec, *, workdir: Path, index: int, saved: SavedState | None = None,
                timeout: float = 60.0) -> LibvirtInstance:
        host = self.host
        scale = 1.0
        if spec.accel is Accel.AUTO:
            choice = self.accel_for(spec.kernel)
            spec, scale = with_accel(spec, choice), choice.scale
        name = host.new_domain_name(spec.name, index)
        volumes: list[str] = []
        try:
            kernel = host.storage.upload(spec.kernel, "kernel").path
            initrd_file = spec.root.path if spec.root.kind is RootKind.INITRAMFS else spec.initrd
            initrd = host.storage.upload(initrd_file, "initrd").path if initrd_file else None
            if spec.shares and not host.address.local:
                raise UserError(f"{host.label}: a shared directory (--share) is this machine's: it needs a "
                                "VM on this machine (the qemu backend or a local libvirt)")
            disk = None
            if spec.root.kind is RootKind.DISK and spec.root.persistent:
                # A kept disk stays where the session keeps it: on this machine.
                if not host.address.local:
                    raise UserError(f"{host.label}: a kept disk (--keep/--resume) needs a VM on this "
                                    "machine (the qemu backend or a local libvirt)")
                disk = str(spec.root.path.resolve())
            elif spec.root.kind is RootKind.DISK and saved is not None and saved.disk:
                disk = host.storage.overlay_on(name, backing=saved.disk)
                volumes.append(f"{name}.qcow2")
            elif spec.root.kind is RootKind.DISK:
                disk = host.storage.overlay(name, base=spec.root.path)
                volumes.append(f"{name}.qcow2")
            log_what = f"{name}.console.log"
            console_log = host.storage.file_path(log_what)
            volumes.append(log_what)
            xml = domain_xml(spec, name=name, kernel=kernel, initrd=initrd, disk=disk,
                             console_log=console_log, owner=host.owner, incoming=saved is not None)
            (workdir / "domain.xml").write_text(xml)
            (workdir / "host").write_text(f"{host.label} {host.uri}\n")
            try:
                dom = host.conn().createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
            except libvirt.libvirtError as e:
                raise LibvirtError(f"{host.label}: could not start {name}: {e.get_error_message()}") from e
        except BaseException:
            host.forget_domain(name)
            with contextlib.suppress(LibvirtError):
                for what in volumes:
                    host.storage.delete(what)
            raise
        cls = LocalLibvirtInstance if host.address.local else LibvirtInstance
        inst = cls(host, name, volumes=volumes, console_log_what=log_what, disk=disk, scale=scale)
        try:
            if saved is not None:
                self._receive(dom, saved, name=name, timeout=timeout)
            usernet = libvirt_qemu.qemuMonitorCommand(
                dom, "info usernet", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            port = hostfwd_port(usernet)
            if port is None:
                raise InfraError(f"{host.label}: {name}: QEMU reports no SSH forward: {usernet.strip()!r}")
            inst.ssh_port = port
            inst.pump.open_stream(dom)
            if not spec.paused:
                dom.resume()
        except BaseException as e:
            inst.close(1.0)
            if isinstance(e, libvirt.libvirtError):
                raise InfraError(f"{host.label}: could not attach the console of {name}: "
                                 f"{e.get_error_message()}") from e
            raise
        log.debug("%s: %s started, SSH on the host's 127.0.0.1:%d", host.label, name, inst.ssh_port)
        return inst

    # -- snapshots ----------------------------------------------------------

    def save(self, instance: Instance, *, timeout: float) -> SavedState:
        """libvirt's own save (``virDomainSave``) into a file of the host's
        kvmlab pool; the domain ends with it."""
        inst = instance
        if not isinstance(inst, LibvirtInstance) or inst.host is not self.host:
            raise InfraError(f"{instance.name}: not a VM of this backend")
        host = self.host
        what = f"{inst.name}.state"
        path = host.storage.file_path(what)
        dom = host.lookup(inst.name)
        if dom is None:
            raise LibvirtError(f"{host.label}: {inst.name}: the domain is gone")
        try:
            dom.saveFlags(path, None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
        except libvirt.libvirtError as e:
            with contextlib.suppress(LibvirtError):
                host.storage.delete(what)
            raise LibvirtError(f"{host.label}: could not save {inst.name}: {e.get_error_message()}") from e
        disk = inst.keep_disk()
        inst.close(timeout)
        return SavedState(path, inst.name, disk)

    def restore(self, saved: SavedState, spec: VMSpec, *, workdir: Path, index: int,
                timeout: float) -> LibvirtInstance:
        """A clone: a new domain waiting for an incoming migration, fed by
        the saved domain restored once more (``virDomainRestore``, under its
        own name, so one at a time) and migrated into it over the host's
        127.0.0.1; the restored one then ends. The relay for the next clone is
        restored right away, in the background (it holds the guest's memory
        on the host until a clone takes it or the state is discarded). libvirt cannot restore a saved
        domain under another name, and QEMU (inside libvirt's sandbox, which
        forbids it to start a process) cannot read a state file itself."""
        return self._create(spec, workdir=workdir, index=index, saved=saved, timeout=timeout)

    def _receive(self, dom: Any, saved: SavedState, *, name: str, timeout: float) -> None:
        host = self.host
        qmp(dom, "migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        port = incoming_port(qmp(dom, "query-migrate"))
        if port is None:
            raise InfraError(f"{host.label}: {name}: QEMU reports no port for the incoming migration")
        slot = self._relay_slot(saved.path)
        with slot.lock:
            if slot.discarded:
                raise InfraError(f"{host.label}: {saved.name}: its saved state was discarded")
            relay = slot.warm or self._restore_relay(saved)
            slot.warm = None
            try:
                qmp(relay.dom, "migrate-set-parameters", {"max-bandwidth": MIGRATION_BANDWIDTH})
                qmp(relay.dom, "migrate", {"uri": f"tcp:127.0.0.1:{port}"})
                wait_migration(lambda: qmp(dom, "query-migrate"), what=f"{host.label}: {name}: restoring",
                               timeout=timeout)
            finally:
                self._end_relay(relay)
        # The next clone's relay is restored while this clone runs.
        threading.Thread(target=self._warm_up, args=(saved, slot), name=f"relay:{saved.name}",
                         daemon=True).start()

    def _restore_relay(self, saved: SavedState) -> _Relay:
        """The saved domain restored once more (paused, under its own name),
        with a console log and a disk of its own."""
        host = self.host
        relay = _Relay(None, [f"{saved.name}.relay{next(self._relay_seq)}.console.log"])
        try:
            disk = None
            if saved.disk:
                what = relay.volumes[0].removesuffix(".console.log")
                disk = host.storage.overlay_on(what, backing=saved.disk)
                relay.volumes.append(f"{what}.qcow2")
            conn = host.conn()
            xml = relay_xml(conn.saveImageGetXMLDesc(saved.path, 0),
                            console_log=host.storage.file_path(relay.volumes[0]), disk=disk)
            host.own_domain(saved.name)
            try:
                conn.restoreFlags(saved.path, xml, libvirt.VIR_DOMAIN_SAVE_PAUSED)
            except libvirt.libvirtError as e:
                raise LibvirtError(f"{host.label}: could not restore {saved.name}: "
                                   f"{e.get_error_message()}") from e
            relay.dom = host.lookup(saved.name)
            if relay.dom is None:
                raise LibvirtError(f"{host.label}: {saved.name}: not there after its restore")
        except BaseException:
            self._end_relay(relay)
            raise
        return relay

    def _end_relay(self, relay: _Relay) -> None:
        host = self.host
        if relay.dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                relay.dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                host.forget_domain(relay.dom.name())
        with contextlib.suppress(LibvirtError):
            for what in relay.volumes:
                host.storage.delete(what)

    def _warm_up(self, saved: SavedState, slot: _RelaySlot) -> None:
        with slot.lock:
            if slot.warm is not None or slot.discarded:
                return
            try:
                slot.warm = self._restore_relay(saved)
            except KvmlabError as e:  # the next clone restores it itself, and says why if it fails
                log.debug("%s: restoring %s ahead of its clone: %s", self.host.label, saved.name, e)

    def _relay_slot(self, path: str) -> _RelaySlot:
        with self._lock:
            return self._relays.setdefault(path, _RelaySlot())

    def discard(self, saved: SavedState) -> None:
        slot = self._relay_slot(saved.path)
        with slot.lock:
            slot.discarded = True
            if slot.warm is not None:
                self._end_relay(slot.warm)
                slot.warm = None
        storage = self.host.storage
        with contextlib.suppress(LibvirtError):
            for path in (saved.path, saved.disk):
                if path:
                    storage.delete_path(path)

    def close(self) -> None:
        """Close the host if this backend opened it."""
        if self._owns_host:
            self.host.close()
