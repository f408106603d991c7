"""A libvirt host kvmlab runs VMs on: this machine or a lab host over SSH.

A :class:`Host` owns what kvmlab has on one host for the length of a job: the
libvirt connection (with keepalive; a dropped one is replaced on demand), the
``kvmlab`` storage pool and the volumes this process uploaded
(:class:`~kvmlab.vmm.storage.HostStorage`), kvmlab's own SSH connection to
reach guests (remote hosts only), how many VMs it may run at once, and its
health in this job (infra failures, quarantine). :meth:`Host.close` removes
every domain and volume this process made there; a process that could not
(killed, or the host was unreachable) leaves them to the next run, which reaps
what dead owners on this client left (domains carry their owner, a
:class:`kvmlab.owner.Owner`, in kvmlab metadata, volumes in their names).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from kvmlab import cache
from kvmlab import owner as owners
from kvmlab.errors import LibvirtError
from kvmlab.host_uri import HostAddress, parse_host_uri
from kvmlab.owner import Owner
from kvmlab.text import counted
from kvmlab.vmm import volume_cache as vc
from kvmlab.vmm.backend import GuestStream
from kvmlab.vmm.domain_xml import domain_owner
from kvmlab.vmm.host_ssh import HostSSH
from kvmlab.vmm.ports import connect_local
from kvmlab.vmm.spec import Accel
from kvmlab.vmm.storage import HostStorage

log = logging.getLogger(__name__)

#: Domains kvmlab creates are named ``kvmlab-<pid>-...``.
DOMAIN_PREFIX = "kvmlab-"

#: Numbers the Host objects of this process (see ``Host.job``).
_JOBS = itertools.count(1)


def _quiet(ctx: Any, err: Any) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


libvirt.registerErrorHandler(_quiet, None)


class EventLoop:
    """libvirt's default event loop, run in one daemon thread per process.

    Needed before a connection opens, for keepalives, close callbacks and
    non-blocking console streams (a blocking ``virStream.recv`` in one thread
    can stall other calls on the connection).
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


@dataclass(frozen=True)
class HostTimeouts:
    """Seconds."""

    connect: float = 30.0
    """Opening the libvirt connection or kvmlab's SSH connection to a host."""
    keepalive_interval: int = 5
    """libvirt keepalive probe interval; ``keepalive_count`` unanswered probes
    drop the connection."""
    keepalive_count: int = 3
    reconnect: float = 60.0
    """How long a dropped connection is retried before the host's VMs count
    as lost (their runs become infra)."""


def open_connection(uri: str, timeout: float = 30.0) -> Any:
    """A libvirt connection within ``timeout`` seconds (libvirt's own SSH
    transport has no connect timeout, so the open runs in a helper thread)."""
    EventLoop.ensure()
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as e:
            box["err"] = e
        if box.get("abandoned") and "conn" in box:
            with contextlib.suppress(libvirt.libvirtError):
                box["conn"].close()

    t = threading.Thread(target=go, name="libvirt-open", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        box["abandoned"] = True
        raise LibvirtError(f"libvirt at {uri}: no answer within {timeout:.0f}s")
    if "err" in box:
        e = box["err"]
        hint = "" if parse_host_uri(uri).hostname else " (is libvirtd running?)"
        raise LibvirtError(f"libvirt at {uri}: {e.get_error_message()}{hint}") from e
    return box["conn"]


class Health:
    """A host's record in one job: infra failures, and quarantine."""

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = ""
        self.quarantined: str | None = None
        """Why the host takes no more VMs in this job (None: it does)."""


class Host:
    """One libvirt host; see the module docstring. Thread-safe.

    ``capacity``: VMs it may run at once for this job. ``label``: its name in
    log lines (default: from the URI). ``owner``: who makes things there
    (default: this process, :func:`kvmlab.owner.me`). ``accel``: the
    accelerator of VMs there (``auto``: probed on the host, see
    :mod:`kvmlab.vmm.host_accel`). ``cache_max_bytes``: what the host's cache
    of uploaded volumes may hold once this Host uploaded to it; at the end
    (:meth:`cleanup`) it is collected like ``kvmlab host gc`` (the default
    age limit; 0: never automatically).
    """

    def __init__(self, uri: str, *, capacity: int = 1, label: str | None = None,
                 timeouts: HostTimeouts | None = None, owner: Owner | None = None,
                 accel: Accel = Accel.AUTO, cache_max_bytes: int = vc.DEFAULT_MAX_BYTES) -> None:
        self.address: HostAddress = parse_host_uri(uri)
        self.cache_max_bytes = cache_max_bytes
        self.uri = uri
        self.capacity = capacity
        self.label = label or self.address.label
        self.timeouts = timeouts or HostTimeouts()
        self.owner = owner or owners.me()
        self.accel = accel
        self.health = Health()
        self._lock = threading.Lock()
        """Guards the state below (never held while talking to the host)."""
        self._open_lock = threading.RLock()
        self._conn: Any = None
        self._dead: str | None = None
        self.generation = 0
        """Bumped each time a new connection replaces a dropped one."""
        self._listeners: list[Callable[[str], None]] = []
        self._seq = 0
        self.job = next(_JOBS)
        """Tells this Host's domains and volumes from those of other Host
        objects of the same process."""
        self._domains: set[str] = set()
        self._reaped = False
        self._closed = False
        self.ssh: HostSSH | None = (
            None if self.address.local else HostSSH(self.address, connect_timeout=self.timeouts.connect)
        )
        self.storage = HostStorage(self.conn, images_dir=self._images_dir, owner=self.owner, job=self.job,
                                   label=self.label)
        # Clean up at interpreter exit if nobody called close() (a caller that
        # only drops the backend; SystemExit from SIGTERM; Ctrl-C).
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"Host({self.uri!r}, capacity={self.capacity})"

    # -- the connection ---------------------------------------------------

    def conn(self) -> Any:
        """The live libvirt connection, opened on first use. Raises
        LibvirtError when the connection dropped and no new one opens."""
        with self._lock:
            if self._closed:
                raise LibvirtError(f"{self.label}: host closed")
            if self._conn is not None and self._dead is None:
                return self._conn
        # Opening may take the connect timeout: only callers that need the
        # connection wait for it, not the event loop's close callback.
        with self._open_lock:
            with self._lock:
                if self._conn is not None and self._dead is None:
                    return self._conn
                old, self._conn = self._conn, None
            if old is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    old.unregisterCloseCallback()
                with contextlib.suppress(libvirt.libvirtError):
                    old.close()
            conn = open_connection(self.uri, self.timeouts.connect)
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(self.timeouts.keepalive_interval, self.timeouts.keepalive_count)
            with self._lock:
                gen = self.generation + 1
                conn.registerCloseCallback(lambda c, reason, opaque: self._on_close(gen, reason), None)
                self._conn = conn
                was_dead, self._dead = self._dead, None
                self.generation = gen
                first = not self._reaped
                self._reaped = True
            if was_dead is not None:
                log.info("%s: libvirt connection back", self.label)
            if first:
                self._reap(conn)
            return conn

    def _on_close(self, generation: int, reason: int) -> None:
        why = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed",
        }.get(reason, str(reason))
        with self._lock:
            if generation != self.generation or self._closed:
                return
            self._dead = f"libvirt connection to {self.label} lost ({why})"
            listeners = list(self._listeners)
        log.warning("%s: libvirt connection lost (%s)", self.label, why)
        for fn in listeners:
            fn(self._dead)

    @property
    def connection_lost(self) -> str | None:
        """Why the connection is down (None: it is up, or not opened yet)."""
        return self._dead

    def on_connection_lost(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """Call ``fn(reason)`` when the connection drops; returns the remover."""
        with self._lock:
            self._listeners.append(fn)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(fn)

        return remove

    def revive(self, deadline: float, poll: float = 1.0) -> bool:
        """Try to open a new connection until ``deadline`` (time.monotonic());
        True once one is open."""
        while True:
            try:
                self.conn()
                return True
            except LibvirtError as e:
                log.debug("%s: reconnect failed: %s", self.label, e)
            if time.monotonic() + poll > deadline or self._closed:
                return False
            time.sleep(poll)

    def lookup(self, name: str) -> Any | None:
        """The domain ``name`` on the current connection (None: no such
        domain, or no connection)."""
        try:
            return self.conn().lookupByName(name)
        except (libvirt.libvirtError, LibvirtError):
            return None

    def new_domain_name(self, spec_name: str, index: int) -> str:
        """A domain name no other VM of this process or client uses on the
        host; the host's cleanup destroys it unless :meth:`forget_domain`."""
        with self._lock:
            self._seq += 1
            name = (f"{DOMAIN_PREFIX}{self.owner.pid}-{spec_name}-{index}-{self.job}.{self._seq}"
                    f"-{self.owner.client}")
            self._domains.add(name)
        return name

    def own_domain(self, name: str) -> None:
        """A domain of this process made under a name it had before (a saved
        domain restored): the host's cleanup destroys it unless forgotten."""
        with self._lock:
            self._domains.add(name)

    def forget_domain(self, name: str) -> None:
        """The domain is gone (destroyed by its instance)."""
        with self._lock:
            self._domains.discard(name)

    # -- reaching guests --------------------------------------------------

    def open_tcp(self, port: int, timeout: float) -> GuestStream:
        """A stream to ``port`` on the host's 127.0.0.1 (through kvmlab's SSH
        connection to a remote host)."""
        if self.ssh is None:
            return connect_local(port, timeout)
        return self.ssh.open_tcp(port, timeout)

    def _images_dir(self) -> str:
        conn = self.conn()
        with contextlib.suppress(libvirt.libvirtError):
            path = ET.fromstring(conn.storagePoolLookupByName("default").XMLDesc(0)).findtext("target/path")
            if path:
                return path
        if self.address.path == "system":
            return "/var/lib/libvirt/images"
        if self.ssh is not None:
            home = self.ssh.run('printf %s "$HOME"', timeout=self.timeouts.connect).strip()
        else:
            home = str(Path.home())
        data = os.environ.get("XDG_DATA_HOME") if self.ssh is None else None
        return os.path.join(data or os.path.join(home, ".local", "share"), "libvirt", "images")

    # -- leftovers and cleanup --------------------------------------------

    def _left_by_dead(self, dom: Any) -> bool:
        """Whether a domain was started from this client by a kvmlab process
        that is gone (a pid since reused by another process counts as gone)."""
        try:
            owner = domain_owner(dom.XMLDesc(0))
        except libvirt.libvirtError:
            return False
        if owner is None:
            # Domains of kvmlab before owner metadata: kvmlab-<pid>-..., local only.
            name = dom.name()
            if not (self.address.local and name.startswith(DOMAIN_PREFIX)):
                return False
            pid_text = name[len(DOMAIN_PREFIX):].split("-", 1)[0]
            if not pid_text.isdigit():
                return False
            owner = Owner(int(pid_text), 0, "", self.owner.client.split("~", 1)[0])
        if not owners.is_ours(owner, self.owner.client):
            return False
        return owner != self.owner and not owners.alive(owner)

    def _reap(self, conn: Any) -> None:
        """Remove what dead kvmlab processes of this client left on the host."""
        reaped = []
        with contextlib.suppress(libvirt.libvirtError):
            for dom in conn.listAllDomains(0):
                if self._left_by_dead(dom):
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                        reaped.append(dom.name())
        try:
            vols = self.storage.reap(owners.alive)
        except LibvirtError:
            vols = []
        if reaped or vols:
            log.warning("%s: removed %d domains and %d volumes left by dead kvmlab processes: %s",
                        self.label, len(reaped), len(vols), reaped + vols)

    def cleanup(self) -> None:
        """Destroy every domain and remove every volume made through this Host
        (its connection is reopened if it dropped, for a moment)."""
        if self._conn is None and self.generation == 0:
            return  # never connected: made nothing
        if self._dead is not None and not self.revive(time.monotonic() + min(10.0, self.timeouts.reconnect)):
            log.warning("%s: unreachable, could not remove this run's VMs and volumes there "
                        "(the next kvmlab run from this machine removes them)", self.label)
            return
        with self._lock:
            names = sorted(self._domains)
        for name in names:
            dom = self.lookup(name)
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
            self.forget_domain(name)
        try:
            self.storage.remove_all()
        except LibvirtError as e:
            log.warning("%s: could not remove volumes: %s", self.label, e)
        if self.storage.bytes_uploaded and self.cache_max_bytes:
            self._collect_cache()

    def _collect_cache(self) -> None:
        """After a job that added to the host's volume cache: keep it within
        :attr:`cache_max_bytes` and :data:`~kvmlab.vmm.volume_cache.DEFAULT_MAX_AGE`
        (never a volume a running job leases; a failure is a warning)."""
        try:
            report = self.storage.cache(gc=True, max_bytes=self.cache_max_bytes, max_age=vc.DEFAULT_MAX_AGE)
        except LibvirtError as e:
            log.warning("%s: volume cache not collected: %s", self.label, e)
            return
        if report.removed:
            gone = report.removed_size
            log.info("%s: volume cache: removed %s (%s) used longest ago, %s left (limit %s)",
                     self.label, counted(len(report.removed), "volume"), cache.human(gone),
                     cache.human(report.size - gone), cache.human(self.cache_max_bytes))

    def close(self) -> None:
        """:meth:`cleanup`, then close the connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
        try:
            self.cleanup()
        except LibvirtError as e:
            log.warning("%s: cleanup: %s", self.label, e)
        finally:
            with self._lock:
                self._closed = True
                conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.unregisterCloseCallback()
                with contextlib.suppress(libvirt.libvirtError):
                    refs = conn.close()
                    if refs:  # a libvirt object still alive holds it (and a remote host's ssh)
                        log.debug("%s: the connection stays open: %d references left", self.label, refs)
            if self.ssh is not None:
                self.ssh.close()
            atexit.unregister(self.close)
