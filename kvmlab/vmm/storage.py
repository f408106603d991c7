"""Files reach a libvirt host through libvirt storage, never by path.

kvmlab keeps one ``dir`` storage pool per host, ``kvmlab``, in the host's
libvirt images directory. A kernel, an initramfs or a base disk image is
uploaded once per host and job into a volume named by its content hash
(:meth:`HostStorage.upload`, a ``virStorageVol.upload`` stream); a VM's disk
is a qcow2 volume backed by the base image's volume; the domain XML names only
``vol.path()`` paths.

Uploaded files are shared: each goes into the host's cache of
content-addressed volumes (:mod:`kvmlab.vmm.volume_cache`) once, for every
kvmlab process and client using the host, and a job leases what it uses so
that ``kvmlab host gc`` leaves it alone. Every other volume a kvmlab process
makes (overlays, console logs, leases) carries its owner
(``kvmlab-<pid>.<start>.<boot>@<client>_...``, :func:`kvmlab.host_uri.owned_name`)
in the name: the process removes them when it ends, and a later run of the
same client removes those of a dead process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import libvirt

from kvmlab.cache import file_sha256, human
from kvmlab.errors import LibvirtError, UserError
from kvmlab.host_uri import owned_name, parse_owned_name
from kvmlab.owner import Owner, alive, is_ours
from kvmlab.text import counted
from kvmlab.vmm import volume_cache as vc

log = logging.getLogger(__name__)

POOL_NAME = "kvmlab"
#: Bytes per chunk of an upload stream.
_CHUNK = 1 << 20


# -- pure parts ---------------------------------------------------------------------------------


def pool_xml(path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = POOL_NAME
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = path
    ET.indent(pool)
    return ET.tostring(pool, encoding="unicode") + "\n"


def raw_volume_xml(name: str, size: int) -> str:
    """A plain file volume of ``size`` bytes, filled by an upload."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(size)
    ET.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="raw")
    ET.indent(vol)
    return ET.tostring(vol, encoding="unicode") + "\n"


def overlay_volume_xml(name: str, *, backing: str, virtual_size: int) -> str:
    """A qcow2 volume backed by the qcow2 at ``backing`` (a path on the host)."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(virtual_size)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="qcow2")
    bs = ET.SubElement(vol, "backingStore")
    ET.SubElement(bs, "path").text = backing
    ET.SubElement(bs, "format", type="qcow2")
    ET.indent(vol)
    return ET.tostring(vol, encoding="unicode") + "\n"


def qcow2_virtual_size(header: bytes) -> int:
    """The virtual disk size in bytes from the first 32 bytes of a qcow2 file."""
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        raise ValueError("not a qcow2 image")
    (size,) = struct.unpack(">Q", header[24:32])
    return int(size)


def file_bytes(vol: Any) -> int:
    """The bytes of a volume's file on its host. Not ``info()``'s capacity:
    once libvirt has probed the pool (a refresh), a volume whose bytes are a
    qcow2 image reads as the image's virtual size there."""
    try:
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
    except (libvirt.libvirtError, AttributeError):  # a libvirt before 3.0
        return int(vol.info()[1])


#: Seconds a content volume someone else is uploading may go without growing
#: before it counts as abandoned (its uploader killed) and is uploaded again.
UPLOAD_STALL = 60.0
#: Seconds between looks at a volume someone else is uploading.
_POLL = 0.5


def volume_times(xml: str) -> tuple[float, float]:
    """``(atime, mtime)`` of a volume from its XML (0 when not given)."""
    root = ET.fromstring(xml)

    def t(tag: str) -> float:
        try:
            return float(root.findtext(f"target/timestamps/{tag}") or 0)
        except ValueError:
            return 0.0

    return t("atime"), t("mtime")


@dataclass(frozen=True)
class CacheReport:
    """What a host's volume cache holds, and what a collection removed."""

    volumes: list[vc.CachedVolume]
    """What it holds (before the collection)."""
    removed: list[vc.CachedVolume]
    stale_leases: list[str]
    """Leases of dead jobs that were dropped."""

    @property
    def size(self) -> int:
        return sum(v.size for v in self.volumes)

    @property
    def leased(self) -> int:
        return sum(v.leased for v in self.volumes)

    @property
    def removed_size(self) -> int:
        """Bytes the collection removed."""
        return sum(v.size for v in self.removed)

    def summary(self) -> str:
        """One line: the cache's volumes, size, and how many a job uses now."""
        return (f"{counted(len(self.volumes), 'cached volume')}, {human(self.size)}, {self.leased} in use by "
                "running jobs")


@dataclass(frozen=True)
class Uploaded:
    """A local file's volume on a host."""

    path: str
    """The volume's path on the host."""
    bytes_sent: int
    """Bytes this call sent (0 when the volume was already there)."""


class _Hashes:
    """Content hashes of local files, remembered by (path, size, mtime) so a
    bisection hashes each kernel once, not once per VM."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int, int], str] = {}

    def of(self, path: Path) -> str:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            got = self._known.get(key)
        if got is None:
            got = file_sha256(path)
            with self._lock:
                self._known[key] = got
        return got


class HostStorage:
    """The ``kvmlab`` pool on one host, and the volumes this process made in it.

    ``conn`` gives the host's current libvirt connection (it may change when
    a dropped connection is replaced). ``images_dir`` gives the directory
    the pool is created in when it does not exist yet.
    """

    def __init__(self, conn: Callable[[], Any], *, images_dir: Callable[[], str], owner: Owner,
                 job: int, label: str) -> None:
        self._conn = conn
        self._images_dir = images_dir
        self.owner, self.job, self.label = owner, job, label
        self._lock = threading.Lock()
        self._upload_locks: dict[str, threading.Lock] = {}
        self._uploaded: dict[str, str] = {}
        self._mine: set[str] = set()
        self._hashes = _Hashes()
        self.bytes_uploaded = 0
        """Bytes sent to this host by this process, all uploads together."""

    # -- the pool ---------------------------------------------------------

    def pool(self) -> Any:
        """The ``kvmlab`` pool, defined, built and started on first use."""
        conn = self._conn()
        try:
            pool = conn.storagePoolLookupByName(POOL_NAME)
        except libvirt.libvirtError:
            pool = self._define(conn)
        try:
            if not pool.isActive():
                pool.create(0)
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self.label}: cannot start storage pool {POOL_NAME}: "
                               f"{e.get_error_message()}") from e
        return pool

    def _define(self, conn: Any) -> Any:
        path = os.path.join(self._images_dir(), POOL_NAME)
        try:
            pool = conn.storagePoolDefineXML(pool_xml(path), 0)
        except libvirt.libvirtError as e:
            # Another kvmlab may have defined it a moment ago.
            with contextlib.suppress(libvirt.libvirtError):
                return conn.storagePoolLookupByName(POOL_NAME)
            raise LibvirtError(f"{self.label}: cannot define storage pool {POOL_NAME} at {path}: "
                               f"{e.get_error_message()}") from e
        try:
            pool.build(0)
            pool.setAutostart(1)
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self.label}: cannot create the storage pool directory {path}: "
                               f"{e.get_error_message()}") from e
        log.info("%s: created storage pool %s at %s", self.label, POOL_NAME, path)
        return pool

    def pool_path(self) -> str:
        root = ET.fromstring(self.pool().XMLDesc(0))
        return root.findtext("target/path") or ""

    def name(self, what: str) -> str:
        """The volume name of ``what`` for this process and job (two jobs of
        one process never share or delete each other's volumes)."""
        return owned_name(self.owner, f"{self.job}.{what}")

    # -- volumes ----------------------------------------------------------

    def upload(self, local: Path, kind: str, *, shared: bool = True) -> Uploaded:
        """The volume holding ``local``'s content on this host. ``kind`` ends
        the name (``kernel``, ``initrd``, ``disk``). ``shared``: from the
        host's cache (uploaded unless a kvmlab process anywhere already did;
        leased for this job); else a volume of this job only, removed with it."""
        if not local.is_file():
            raise UserError(f"{local}: no such file")
        digest = self._hashes.of(local)
        if shared:
            return self._cached(local, digest, kind)
        name = self.name(f"{digest[:24]}.{kind}")
        with self._lock:
            lock = self._upload_locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                done = self._uploaded.get(name)
            if done is not None:
                return Uploaded(done, 0)
            pool = self.pool()
            with contextlib.suppress(libvirt.libvirtError):
                # Left by this pid before (a reused name) or by an earlier
                # call whose bookkeeping we lost: sizes equal means same content.
                vol = pool.storageVolLookupByName(name)
                if file_bytes(vol) == local.stat().st_size:
                    path = str(vol.path())
                    with self._lock:
                        self._uploaded[name] = path
                        self._mine.add(name)
                    return Uploaded(path, 0)
                vol.delete(0)
            path, sent = self._send(pool, name, local)
            with self._lock:
                self._uploaded[name] = path
                self.bytes_uploaded += sent
            return Uploaded(path, sent)

    # -- the shared cache -----------------------------------------------

    def _cached(self, local: Path, digest: str, kind: str) -> Uploaded:
        name = vc.content_name(digest, kind)
        with self._lock:
            lock = self._upload_locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                done = self._uploaded.get(name)
            if done is not None:
                return Uploaded(done, 0)
            pool = self.pool()
            # The lease first: a collection that looks from now on keeps the
            # volume; one that marked it doomed before is waited for.
            self._lease(pool, vc.lease_what(digest, kind))
            self._wait_doomed(pool, name)
            path, sent = self._fetch_or_send(pool, name, local)
            with self._lock:
                self._uploaded[name] = path
                self.bytes_uploaded += sent
            return Uploaded(path, sent)

    def _wait_doomed(self, pool: Any, name: str) -> None:
        """Wait while a collection removes ``name`` (its doomed mark is there);
        a mark older than :data:`~kvmlab.vmm.volume_cache.DOOMED_MAX_AGE` was left by
        a killed collection and is removed."""
        mark = vc.doomed_name(name)
        waited = False
        while (vol := self._lookup(pool, mark)) is not None:
            try:
                age = time.time() - volume_times(vol.XMLDesc(0))[1]
            except libvirt.libvirtError:
                time.sleep(_POLL)  # gone meanwhile: look again
                continue
            if age > vc.DOOMED_MAX_AGE:
                log.warning("%s: removing %s, left by a collection that did not finish", self.label, mark)
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
                continue
            if not waited:
                log.info("%s: waiting for a collection that is removing %s", self.label, name)
                waited = True
            time.sleep(_POLL)

    def _lease(self, pool: Any, what: str) -> None:
        name = self.name(what)
        with self._lock:
            if name in self._mine:
                return
        try:
            pool.createXML(raw_volume_xml(name, 0), 0)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                msg = e.get_error_message()
                raise LibvirtError(f"{self.label}: cannot create lease {name}: {msg}") from e
        with self._lock:
            self._mine.add(name)

    def _lookup(self, pool: Any, name: str) -> Any | None:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None

    def _fetch_or_send(self, pool: Any, name: str, local: Path) -> tuple[str, int]:
        """The complete volume ``name``: there already, or finished by the
        client uploading it now, or uploaded here. Whoever creates the volume
        uploads it; a volume whose upload stalls for :data:`UPLOAD_STALL`
        (its uploader died) is removed and uploaded again."""
        size = local.stat().st_size
        seen: tuple[int, float] | None = None
        while True:
            vol = self._lookup(pool, name)
            if vol is not None:
                if self._lookup(pool, vc.done_name(name)) is not None:
                    if file_bytes(vol) == size:
                        log.debug("%s: %s is in the host's cache", self.label, name)
                        return str(vol.path()), 0
                    log.warning("%s: cached volume %s has the wrong size: uploading it again",
                                self.label, name)
                    self._drop_content(pool, name)
                    continue
                # Someone is uploading it: wait while it grows.
                try:
                    alloc = int(vol.info()[2])
                except libvirt.libvirtError:  # gone meanwhile (its upload failed): look again
                    time.sleep(_POLL)
                    continue
                now = time.monotonic()
                if seen is None or alloc != seen[0]:
                    if seen is None:
                        log.info("%s: waiting for another kvmlab's upload of %s", self.label, local.name)
                    seen = (alloc, now)
                elif now - seen[1] > UPLOAD_STALL:
                    log.warning("%s: the upload of %s stalled for %.0fs (its kvmlab is gone?): "
                                "uploading it again", self.label, name, UPLOAD_STALL)
                    self._drop_content(pool, name)
                    seen = None
                    continue
                time.sleep(_POLL)
                continue
            try:
                vol = pool.createXML(raw_volume_xml(name, size), 0)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                    continue  # another client won the race: wait for its upload
                msg = e.get_error_message()
                raise LibvirtError(f"{self.label}: cannot create volume {name}: {msg}") from e
            try:
                sent = self._stream(vol, name, local)
                pool.createXML(raw_volume_xml(vc.done_name(name), 0), 0)
            except BaseException:
                self._drop_content(pool, name)
                raise
            return str(vol.path()), sent

    def _drop_content(self, pool: Any, name: str) -> None:
        for n in (vc.done_name(name), name):
            vol = self._lookup(pool, n)
            if vol is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)

    def cache(self, *, gc: bool = False, max_bytes: int = vc.DEFAULT_MAX_BYTES,
              max_age: float = vc.DEFAULT_MAX_AGE, dry_run: bool = False,
              now: float | None = None) -> CacheReport:
        """The host's volume cache; with ``gc``, collect it (see
        :func:`kvmlab.vmm.volume_cache.plan_gc`; ``dry_run``: remove nothing).
        Leases of this client's dead jobs are dropped first; another client's
        older than :data:`~kvmlab.vmm.volume_cache.LEASE_MAX_AGE` too."""
        now = time.time() if now is None else now
        pool = self.pool()
        try:
            pool.refresh(0)
            vols = {v.name(): v for v in pool.listAllVolumes(0)}
        except libvirt.libvirtError as e:
            msg = e.get_error_message()
            raise LibvirtError(f"{self.label}: cannot list the {POOL_NAME} pool: {msg}") from e
        leased, stale = self._leases(vols, now)
        cached: list[vc.CachedVolume] = []
        for name, vol in vols.items():
            if not vc.is_content(name):
                continue
            try:
                atime, mtime = volume_times(vol.XMLDesc(0))
                size = int(vol.info()[2])
            except libvirt.libvirtError:
                continue
            cached.append(vc.CachedVolume(name, size, max(atime, mtime), vc.done_name(name) in vols,
                                          name in leased))
        report = CacheReport(cached, [], stale)
        if not gc:
            return report
        removed = vc.plan_gc(cached, now=now, max_bytes=max_bytes, max_age=max_age)
        if dry_run:
            return CacheReport(cached, removed, stale)
        for name in stale:
            with contextlib.suppress(libvirt.libvirtError):
                vols[name].delete(0)
        removed = [v for v in removed if self._collect(pool, v.name, now)]
        # Markers whose volume is gone mean nothing.
        for name in vols:
            for suffix in (vc.DONE_SUFFIX, vc.DOOMED_SUFFIX):
                if name.endswith(suffix) and name[:-len(suffix)] not in vols:
                    with contextlib.suppress(libvirt.libvirtError):
                        vols[name].delete(0)
        return CacheReport(cached, removed, stale)

    def _leases(self, vols: dict[str, Any], now: float) -> tuple[set[str], list[str]]:
        """(content volumes live leases hold, names of stale leases) among ``vols``."""
        leased: set[str] = set()
        stale: list[str] = []
        for name, vol in vols.items():
            parsed = parse_owned_name(name)
            target = vc.leased_content(parsed[1]) if parsed else None
            if parsed is None or target is None:
                continue
            who = parsed[0]
            if is_ours(who, self.owner.client):
                dead = who != self.owner and not alive(who)
            else:
                try:
                    dead = now - volume_times(vol.XMLDesc(0))[1] > vc.LEASE_MAX_AGE
                except libvirt.libvirtError:
                    dead = False
            if dead:
                stale.append(name)
            else:
                leased.add(target)
        return leased, stale

    def _collect(self, pool: Any, name: str, now: float) -> bool:
        """Remove the content volume ``name`` unless a job leased it since the
        listing (see :mod:`kvmlab.vmm.volume_cache`); whether it was removed."""
        mark = vc.doomed_name(name)
        try:
            pool.createXML(raw_volume_xml(mark, 0), 0)
        except libvirt.libvirtError:
            return False  # another collection is at it (or the pool failed): leave it to that one
        try:
            pool.refresh(0)
            leased, _ = self._leases({v.name(): v for v in pool.listAllVolumes(0)}, now)
            if name in leased:
                log.info("%s: %s was leased meanwhile: kept", self.label, name)
                return False
            self._drop_content(pool, name)
            return True
        except libvirt.libvirtError as e:
            log.warning("%s: %s not collected: %s", self.label, name, e.get_error_message())
            return False
        finally:
            vol = self._lookup(pool, mark)
            if vol is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)

    # -- a job's own volumes ---------------------------------------------

    def _send(self, pool: Any, name: str, local: Path) -> tuple[str, int]:
        size = local.stat().st_size
        try:
            vol = pool.createXML(raw_volume_xml(name, size), 0)
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self.label}: cannot create volume {name}: {e.get_error_message()}") from e
        with self._lock:
            self._mine.add(name)
        try:
            sent = self._stream(vol, name, local)
        except LibvirtError:
            self._delete(name)
            raise
        return str(vol.path()), sent

    def _stream(self, vol: Any, name: str, local: Path) -> int:
        """Send ``local`` into ``vol``; the bytes sent."""
        size = local.stat().st_size
        conn = self._conn()
        stream = conn.newStream(0)
        sent = 0
        try:
            vol.upload(stream, 0, size, 0)
            with local.open("rb") as f:
                sent = _send_all(stream, f)
            stream.finish()
        except (libvirt.libvirtError, OSError) as e:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            msg = e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e)
            raise LibvirtError(f"{self.label}: upload of {local} failed: {msg}") from e
        log.debug("%s: uploaded %s to %s (%d bytes)", self.label, local, name, sent)
        return sent

    def overlay(self, what: str, *, base: Path) -> str:
        """A new qcow2 volume backed by ``base``'s volume (uploaded if needed);
        returns its path on the host."""
        with base.open("rb") as f:
            try:
                vsize = qcow2_virtual_size(f.read(32))
            except ValueError:
                raise UserError(f"disk image {base}: not a qcow2 image") from None
        backing = self.upload(base, "disk").path
        return self._new_overlay(self.pool(), what, backing, vsize)

    def overlay_on(self, what: str, *, backing: str) -> str:
        """A new qcow2 volume backed by ``backing``, a qcow2 file already on
        the host (a saved VM's disk); returns its path on the host."""
        pool = self.pool()
        try:
            pool.refresh(0)
            vsize = int(self._conn().storageVolLookupByPath(backing).info()[1])
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self.label}: {backing}: {e.get_error_message()}") from e
        return self._new_overlay(pool, what, backing, vsize)

    def _new_overlay(self, pool: Any, what: str, backing: str, vsize: int) -> str:
        """This job's qcow2 volume for ``what`` over ``backing``, made anew."""
        name = self.name(f"{what}.qcow2")
        with contextlib.suppress(libvirt.libvirtError):
            pool.storageVolLookupByName(name).delete(0)
        try:
            vol = pool.createXML(overlay_volume_xml(name, backing=backing, virtual_size=vsize), 0)
        except libvirt.libvirtError as e:
            raise LibvirtError(f"{self.label}: cannot create overlay {name}: {e.get_error_message()}") from e
        with self._lock:
            self._mine.add(name)
        return str(vol.path())

    def file_path(self, what: str) -> str:
        """A path in the pool for a file the host itself writes (a console
        log); call :meth:`adopt` once it exists so it is cleaned up."""
        name = self.name(what)
        with self._lock:
            self._mine.add(name)
        return os.path.join(self.pool_path(), name)

    def volume(self, what: str) -> Any | None:
        """The volume of a file the host wrote (after a pool refresh), or None."""
        pool = self.pool()
        name = self.name(what)
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
                return pool.storageVolLookupByName(name)
        return None

    def delete(self, what: str) -> None:
        self._delete(self.name(what))

    def delete_path(self, path: str) -> None:
        """Delete the volume at ``path`` in the pool (a file the host wrote)."""
        if os.path.dirname(path) != self.pool_path():
            raise LibvirtError(f"{self.label}: {path}: not in the {POOL_NAME} pool")
        with contextlib.suppress(libvirt.libvirtError):
            self.pool().refresh(0)
        self._delete(os.path.basename(path))

    def _delete(self, name: str) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.pool().storageVolLookupByName(name).delete(0)
        with self._lock:
            self._mine.discard(name)
            self._uploaded.pop(name, None)

    def remove_all(self) -> None:
        """Remove every volume this job made on the host (also those whose
        bookkeeping was lost: their names say whose they are)."""
        pool = self.pool()
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
        names = set()
        with contextlib.suppress(libvirt.libvirtError):
            for vol in pool.listAllVolumes(0):
                parsed = parse_owned_name(vol.name())
                if parsed and parsed[0] == self.owner and parsed[1].startswith(f"{self.job}."):
                    names.add(vol.name())
        with self._lock:
            names |= self._mine
        for name in sorted(names):
            self._delete(name)

    def reap(self, alive: Callable[[Owner], bool]) -> list[str]:
        """Remove volumes made on this client by kvmlab processes that are
        gone (``alive``: :func:`kvmlab.owner.alive`); returns their names."""
        try:
            pool = self.pool()
            pool.refresh(0)
            vols = pool.listAllVolumes(0)
        except (libvirt.libvirtError, LibvirtError):
            return []
        reaped = []
        for vol in vols:
            parsed = parse_owned_name(vol.name())
            if parsed is None or not is_ours(parsed[0], self.owner.client) or parsed[0] == self.owner \
                    or alive(parsed[0]):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
                reaped.append(vol.name())
        return reaped


def _send_all(stream: Any, f: BinaryIO) -> int:
    sent = 0
    while chunk := f.read(_CHUNK):
        view = memoryview(chunk)
        while view:
            n = stream.send(bytes(view))
            if n < 0:
                raise OSError("stream send failed")
            view = view[n:]
            sent += n
    return sent


def download(conn: Any, vol: Any, offset: int) -> bytes:
    """The bytes of a volume from ``offset`` to its current end."""
    stream = conn.newStream(0)
    out = bytearray()
    try:
        vol.download(stream, offset, 0, 0)
        while True:
            chunk = stream.recv(_CHUNK)
            if isinstance(chunk, int):
                if chunk == -2:
                    continue
                raise OSError(f"stream recv returned {chunk}")
            if not chunk:
                break
            out += chunk
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return bytes(out)
