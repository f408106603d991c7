"""Who made a leftover, and whether it is still alive: a process identity of
pid *and* start time (psutil), so that a reused pid never passes for the
process that made the thing, plus the machine's boot id and a client id
(host name and a random id kept in kvmlab's state dir), so that two clients
with the same host name never take each other's things for their own.

kvmlab names the temp directories and files it makes outside its cache with
their owner (:func:`mkdtemp`, :func:`tempdir`: ``kvmlab-KIND-PID-START-xxxx``
in the system temp dir). A run killed with ``kill -9`` cannot remove them;
the next kvmlab does (:func:`reap_tempdirs`), removing only those whose owner
is gone.

libvirt domains and volumes carry the same identity (:class:`Owner`, in a
domain's metadata and in a volume's name, see :mod:`kvmlab.host_uri`): a run
reaps what its own client left there when :func:`alive` says the owner is
gone; another client's things are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

#: What kvmlab makes in the temp dir (the ``kind`` of :func:`mkdtemp`).
KINDS = ("pool", "boot", "qmp", "ko", "syzcheck", "change", "patch", "culprit")

#: ``kvmlab-<kind>-<pid>-<start in 1/100 s>-<random>``.
_OWNED_RE = re.compile(rf"kvmlab-({'|'.join(KINDS)})-(\d+)-(\d+)-[^/]*$")

#: An older kvmlab's: ``kvmlab-<kind>-<mkdtemp's 8 random characters>[.patch]``.
_LEGACY_RE = re.compile(rf"kvmlab-(?:{'|'.join(KINDS)})-[A-Za-z0-9_]{{8}}(?:\.patch)?$")

#: Temp dirs of an older kvmlab (no owner in the name): reaped when untouched
#: for this long, seconds (no run keeps a pool that long without writing to it).
LEGACY_AGE = 24 * 3600.0


#: The file in kvmlab's state dir holding this machine's random client id.
CLIENT_ID_FILE = "client-id"


@dataclass(frozen=True)
class Owner:
    """A kvmlab process, told from any other process past or future, on any
    client."""

    pid: int
    started: int
    """The process's start time, in hundredths of a second since the epoch
    (the kernel counts it in clock ticks: finer would not compare); 0: not
    known (a name an older kvmlab made)."""
    boot: str = ""
    """The first 8 hex digits of the client's boot id ("": not known)."""
    client: str = ""
    """:func:`client_id` of the machine the process ran on ("": not known)."""

    @property
    def token(self) -> str:
        return f"{self.pid}-{self.started}"


def state_dir() -> Path:
    """kvmlab's state dir (``$XDG_STATE_HOME/kvmlab``, default ``~/.local/state/kvmlab``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kvmlab"


def boot_id() -> str:
    """This boot of this machine: the first 8 hex digits of the kernel's boot id."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return ""


_HOSTNAME_BAD = re.compile(r"[^A-Za-z0-9.-]")


def client_id(state: Path | None = None) -> str:
    """This client: ``<host name>~<8 random hex digits>``. The random part is
    made once and kept in the state dir, so two machines with the same host
    name are two clients (an unwritable state dir: a random id for this
    process only, with a warning: nothing it leaves is then reaped by others)."""
    host = _HOSTNAME_BAD.sub("-", socket.gethostname()) or "localhost"
    path = (state or state_dir()) / CLIENT_ID_FILE
    try:
        rand = path.read_text().strip()
    except OSError:
        rand = ""
    if not re.fullmatch(r"[0-9a-f]{8}", rand):
        rand = secrets.token_hex(4)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{CLIENT_ID_FILE}.{os.getpid()}")
            tmp.write_text(rand + "\n")
            try:
                os.link(tmp, path)  # the first writer wins; others read its id
            except FileExistsError:
                rand = path.read_text().strip()
            finally:
                tmp.unlink()
        except OSError as e:
            log.warning("cannot keep a client id in %s (%s): this process uses its own", path, e)
    return f"{host}~{rand}"


def _start_time(pid: int) -> int | None:
    try:
        return round(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # someone else's live process
        return -1


def me(pid: int | None = None) -> Owner:
    """This process (or the process ``pid`` of this machine, None when it is gone)."""
    pid = os.getpid() if pid is None else pid
    started = _start_time(pid)
    return Owner(pid, started if started is not None and started >= 0 else 0, boot_id(), client_id())


def _my_token() -> str:
    started = _start_time(os.getpid())
    return Owner(os.getpid(), started if started is not None and started >= 0 else 0).token


def of_pid(pid: int) -> Owner | None:
    """The live process ``pid`` of this machine as an owner (None: no such process)."""
    started = _start_time(pid)
    if started is None:
        return None
    return Owner(pid, max(started, 0), boot_id(), client_id())


def is_ours(owner: Owner, client: str | None = None) -> bool:
    """Whether ``owner`` ran on this client (``client``: default
    :func:`client_id`), so that :func:`alive` can judge it. An owner an older
    kvmlab recorded (no client id) is ours when it names this host."""
    client = client or client_id()
    if owner.client == client:
        return True
    return owner.started == 0 and owner.client == client.split("~", 1)[0]


def alive(owner: Owner) -> bool:
    """Whether ``owner``, a process of this machine, still runs: this boot,
    its pid runs and started when it did (an owner with no start time
    recorded: its pid runs)."""
    if owner.boot and owner.boot != boot_id():
        return False
    started = _start_time(owner.pid)
    if started is None:
        return False
    if owner.started == 0:
        return True
    # The same process, give or take the rounding of two readings.
    return started == -1 or abs(started - owner.started) <= 1


def mkdtemp(kind: str, parent: Path | None = None) -> Path:
    """A new temp directory named with this process as its owner (``kind``:
    one of :data:`KINDS`)."""
    assert kind in KINDS, kind
    return Path(tempfile.mkdtemp(prefix=f"kvmlab-{kind}-{_my_token()}-", dir=parent))


def prefix(kind: str) -> str:
    """The name prefix of an owned temp file (for ``tempfile`` functions)."""
    assert kind in KINDS, kind
    return f"kvmlab-{kind}-{_my_token()}-"


@contextlib.contextmanager
def tempdir(kind: str) -> Iterator[Path]:
    """:func:`mkdtemp`, removed on the way out (a kill -9 leaves it to
    :func:`reap_tempdirs`)."""
    path = mkdtemp(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def owner_of(name: str) -> Owner | None:
    """The owner a name made by :func:`mkdtemp` carries (None: not one)."""
    m = _OWNED_RE.match(name)
    return Owner(int(m.group(2)), int(m.group(3))) if m else None


def reap_tempdirs(parent: Path | None = None, *, now: float | None = None) -> list[Path]:
    """Remove kvmlab's temp directories and files in ``parent`` (default: the
    system temp dir) whose owner is gone, and an older kvmlab's unnamed ones
    (``kvmlab-pool-xxxx``) untouched for :data:`LEGACY_AGE`; returns what was
    removed."""
    parent = parent or Path(tempfile.gettempdir())
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        owner = owner_of(p.name)
        if owner is not None:
            if alive(owner):
                continue
        elif _LEGACY_RE.match(p.name):
            try:
                if now - p.lstat().st_mtime < LEGACY_AGE:
                    continue
            except OSError:
                continue
        else:
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError as e:
            log.debug("could not remove %s: %s", p, e)
            continue
        removed.append(p)
    if removed:  # housekeeping: not a line the user needs
        log.debug("removed %d temp file(s) of kvmlab runs that were killed: %s", len(removed),
                 ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed
