"""Who made a leftover, and whether it is still alive: a process identity of
pid *and* start time (psutil), so that a reused pid never passes for the
process that made the thing.

kvmlab names the temp directories and files it makes outside its cache with
their owner (:func:`mkdtemp`, :func:`tempdir`: ``kvmlab-KIND-PID-START-xxxx``
in the system temp dir). A run killed with ``kill -9`` cannot remove them;
the next kvmlab does (:func:`reap_tempdirs`), removing only those whose owner
is gone.

(A minimal helper: the lab-host work of issue 28 brings the same identity for
libvirt domains and volumes; the two are to share one module.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
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


@dataclass(frozen=True)
class Owner:
    pid: int
    started: int
    """The process's start time, in hundredths of a second since the epoch
    (the kernel counts it in clock ticks: finer would not compare)."""

    @property
    def token(self) -> str:
        return f"{self.pid}-{self.started}"


def _start_time(pid: int) -> int | None:
    try:
        return round(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # someone else's live process
        return -1


def me() -> Owner:
    """This process."""
    started = _start_time(os.getpid())
    return Owner(os.getpid(), started if started is not None and started >= 0 else 0)


def alive(owner: Owner) -> bool:
    """Whether ``owner`` still runs (its pid runs and started when it did)."""
    started = _start_time(owner.pid)
    if started is None:
        return False
    # The same process, give or take the rounding of two readings.
    return started == -1 or abs(started - owner.started) <= 1


def mkdtemp(kind: str, parent: Path | None = None) -> Path:
    """A new temp directory named with this process as its owner (``kind``:
    one of :data:`KINDS`)."""
    assert kind in KINDS, kind
    return Path(tempfile.mkdtemp(prefix=f"kvmlab-{kind}-{me().token}-", dir=parent))


def prefix(kind: str) -> str:
    """The name prefix of an owned temp file (for ``tempfile`` functions)."""
    assert kind in KINDS, kind
    return f"kvmlab-{kind}-{me().token}-"


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
