"""kvmlab's cache, measured and kept under a size limit.

Everything kvmlab may reuse or that a run leaves lives under
``$XDG_CACHE_HOME/kvmlab`` (:func:`kvmlab.config.cache_dir`). Its entries, by
category (:data:`CATEGORIES`): kernel builds and the build slots that make
them incremental, initramfs images (one per reproducer's files: a syz
program's is 8-78 MiB), disk images, repro runs, bisection workdirs, demo
trees.

The limit (``cache.max_size_gb`` in the config file, default
:data:`DEFAULT_MAX_GB`) is kept by removing the entries used longest ago
first: ``kvmlab cache prune``, or after a command that fills the cache (at
most every :data:`AUTO_EVERY` seconds). Nothing in use is removed: every
kvmlab command holds a shared lock on the cache while it runs
(:func:`in_use`), and pruning needs it exclusively, so it waits for a moment
when no other kvmlab runs (the automatic one just skips). A build slot a
build holds is skipped too. Symbolic links (a test's shared caches) are not
followed: what they point to is not this cache's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kvmlab.errors import UserError
from kvmlab.text import counted

log = logging.getLogger(__name__)

#: Default size limit, GiB.
DEFAULT_MAX_GB = 50.0

#: Seconds between automatic prunes.
AUTO_EVERY = 600.0

LOCK_NAME = ".lock"
STAMP_NAME = ".last-prune"


@dataclass(frozen=True)
class Category:
    name: str
    where: str
    """Directory under the cache root whose entries this category holds."""
    what: str
    pattern: str = "*"
    """Entries are the children matching this (files or directories)."""


CATEGORIES: tuple[Category, ...] = (
    Category("builds", "kernel/builds", "kernel builds (bzImage, vmlinux, config)"),
    Category("build-slots", "kernel/slots", "worktrees and object dirs that make builds incremental"),
    Category("initramfs", "initramfs", "initramfs images, and those with a reproducer's files", "*.cpio*"),
    Category("initrd", "initrd", "virtio initrds for disk images"),
    Category("images", "images", "Debian disk images"),
    Category("runs", "runs", "repro runs: console logs, reports, result.json"),
    Category("bisections", "bisect", "bisection workdirs: journal, logs, runs, report"),
    Category("demo", "demo", "demo kernel trees"),
    Category("minimized", "minimized", "full configs minimized with a bug's reproducer", "*.json"),
)


@dataclass(frozen=True)
class Entry:
    category: str
    path: Path
    size: int
    """Bytes on disk."""
    used: float
    """When it was last written or used (Unix time)."""


def _disk_size(path: Path) -> int:
    """Bytes ``path`` takes on disk, links not followed."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    total = st.st_blocks * 512
    if not path.is_dir() or path.is_symlink():
        return total
    for root, dirs, files in os.walk(path, onerror=lambda e: None):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def _last_used(path: Path) -> float:
    """The newest mtime of ``path`` and its direct children (writes inside a
    run's or a build's directory show there)."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError), os.scandir(path) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
    return newest


def entries(root: Path) -> list[Entry]:
    """Every entry of the cache at ``root`` (links and dot-files left out)."""
    out: list[Entry] = []
    for cat in CATEGORIES:
        d = root / cat.where
        if d.is_symlink() or not d.is_dir():
            continue
        for p in sorted(d.glob(cat.pattern)):
            if p.name.startswith(".") or p.is_symlink():
                continue
            if cat.name == "build-slots" and not p.is_dir():
                continue  # the slots' .lock and .last files
            out.append(Entry(cat.name, p, _disk_size(p), _last_used(p)))
    return out


def touch(path: Path) -> None:
    """Mark a cache entry as used now (its age is what pruning goes by)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _slot_busy(path: Path) -> bool:
    """A build slot whose lock a build holds."""
    lock = path.with_name(path.name + ".lock")
    try:
        f = lock.open("a")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def plan(found: Sequence[Entry], limit: int) -> list[Entry]:
    """The entries to remove, oldest use first, for the total to fit ``limit``
    bytes (pure)."""
    total = sum(e.size for e in found)
    out: list[Entry] = []
    for e in sorted(found, key=lambda e: e.used):
        if total <= limit:
            break
        out.append(e)
        total -= e.size
    return out


def remove(entry: Entry) -> bool:
    """Remove one entry; False when it is in use or could not go."""
    if entry.category == "build-slots" and _slot_busy(entry.path):
        return False
    try:
        if entry.path.is_dir() and not entry.path.is_symlink():
            shutil.rmtree(entry.path)
        else:
            entry.path.unlink()
    except OSError as e:
        log.warning("cache: could not remove %s: %s", entry.path, e)
        return False
    return True


@contextlib.contextmanager
def in_use(root: Path) -> Iterator[None]:
    """Hold the cache's shared lock for a command's run (a cache that cannot
    be locked, e.g. not writable, is simply not locked)."""
    f: IO[str] | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        f = (root / LOCK_NAME).open("a")
        fcntl.flock(f, fcntl.LOCK_SH)
    except OSError:
        if f is not None:
            f.close()
        f = None
    try:
        yield
    finally:
        if f is not None:
            f.close()


@contextlib.contextmanager
def exclusive(root: Path, *, wait: bool) -> Iterator[bool]:
    """The cache's lock, exclusively: yields whether it was had (``wait``
    False: only if no other kvmlab runs now)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        f = (root / LOCK_NAME).open("a")
    except OSError:
        yield False
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


#: Where a killed kvmlab may leave half-written files (``.name.PID``,
#: ``.initramfs-xxxx``): with the cache held exclusively, none is being written.
_TEMP_DIRS = ("initramfs", "initrd", "kernel/requests")


def sweep_temps(root: Path) -> list[Path]:
    """Remove the half-written files of killed runs (the caller holds
    :func:`exclusive`: no other kvmlab writes)."""
    gone = []
    for where in _TEMP_DIRS:
        d = root / where
        if d.is_symlink() or not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(".") and p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()
                    gone.append(p)
    return gone


def prune(root: Path, limit: int, *, dry_run: bool = False) -> tuple[list[Entry], int]:
    """Remove entries, oldest use first, until the cache fits ``limit`` bytes
    (and the half-written files of killed runs); the caller holds
    :func:`exclusive`. Returns (removed, bytes left)."""
    if not dry_run:
        sweep_temps(root)
    found = entries(root)
    removed = []
    for e in plan(found, limit):
        if dry_run or remove(e):
            removed.append(e)
    left = sum(e.size for e in found) - sum(e.size for e in removed)
    with contextlib.suppress(OSError):
        (root / STAMP_NAME).write_text(f"{time.time():.0f}\n")
    return removed, left


def auto_prune(root: Path, limit: int, *, now: float | None = None) -> list[Entry]:
    """After a command: prune when the last prune is :data:`AUTO_EVERY` old and
    no other kvmlab runs (never waits, never fails the command)."""
    now = time.time() if now is None else now
    try:
        if now - (root / STAMP_NAME).stat().st_mtime < AUTO_EVERY:
            return []
    except OSError:
        pass
    if limit <= 0 or not root.is_dir():
        return []
    with exclusive(root, wait=False) as got:
        if not got:
            return []
        removed, left = prune(root, limit)
    if removed:
        log.info("cache: removed %s used longest ago (%s) to stay under %s: %s left",
                 counted(len(removed), "entry", "entries"), human(sum(e.size for e in removed)),
                 human(limit), human(left))
    return removed


def file_sha256(path: Path) -> str:
    """A file's sha256, hex, read a MiB at a time: the content key of what a
    cache keeps (a built kernel, an uploaded volume, a source tarball)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def human_age(seconds: float) -> str:
    """An age as ``42m``, ``5h`` or ``3d``."""
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def human(n: float) -> str:
    """Bytes as ``12.3 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_size(text: str) -> int:
    """``50G``, ``500M``, ``0`` -> bytes (a bare number is GiB)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    unit = t[-1:] if t[-1:] in mult else "G"
    number = t[:-1] if t[-1:] in mult else t
    try:
        value = float(number)
    except ValueError:
        raise UserError(f"size {text!r}: expected e.g. 50G, 500M or a number of GiB") from None
    if value < 0 or value != value:
        raise UserError(f"size {text!r}: must not be negative")
    return int(value * mult[unit])
