"""Session directories: one per ``kvmlab boot``, named, listable.

Layout (``$XDG_STATE_HOME/kvmlab/sessions``, default ``~/.local/state``)::

    NAME/session.json   the record: what was booted, where its SSH is, its state
    NAME/owner.lock     held (flock) by the kvmlab process that owns the VM
    NAME/record.lock    held (flock) while the record is read, changed and written
    NAME/console.log    the serial console from power-on
    NAME/report-N.txt   each crash seen, titled and symbolized
    NAME/disk.qcow2     with --keep: the VM's own disk, kept for boot --resume
    NAME/qemu.argv, qemu.log or domain.xml: how the VM was started

A session is running exactly while its owner holds ``owner.lock``: the kernel
drops the lock when the owner dies, however it dies, so a dead kvmlab never
looks alive (and a reused pid never fools the check). Ended sessions keep
their directory (logs, reports, a kept disk) until ``kvmlab kill --rm``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kvmlab.errors import ConfigError, UserError

RECORD = "session.json"
OWNER_LOCK = "owner.lock"
RECORD_LOCK = "record.lock"
KEPT_DISK = "disk.qcow2"

#: Session names: safe in a path, a libvirt domain name and QEMU's -name.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


def sessions_dir() -> Path:
    """Where session directories live."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kvmlab" / "sessions"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"session name {name!r}: use letters, digits, '.', '_' and '-' (at most 48)")
    return name


def default_name(commit: str | None, release: str | None, kernel: Path) -> str:
    """A session's name when none is given: the commit's short hash, else the
    kernel's release, else the kernel file's name."""
    if commit:
        return commit[:12]
    base = release or kernel.name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-.") or "kernel"
    return cleaned[:40]


@dataclass(frozen=True)
class SessionRecord:
    """What ``session.json`` holds. Times are seconds since the epoch."""

    name: str
    pid: int
    """The kvmlab process that owns the VM."""
    started: float
    backend: str
    kernel: str
    """The bzImage booted."""
    release: str = ""
    """``uname -r`` of that kernel, from its header."""
    commit: str = ""
    """The commit built, '' for ``--kernel``."""
    tree: str = ""
    config: str = ""
    """The config fragments built with."""
    vmlinux: str = ""
    root: str = "initramfs"
    """``initramfs`` or the image recipe."""
    state: str = "starting"
    """``starting`` (VM booting), ``running`` (SSH answers), ``ended``."""
    ssh_host: str = "127.0.0.1"
    ssh_port: int = 0
    ssh_user: str = "root"
    ssh_key: str = ""
    gdb_port: int = 0
    """The gdbstub's port on 127.0.0.1 (0: no gdb)."""
    qemu_pid: int = 0
    domain: str = ""
    """libvirt domain name ('' for the qemu backend)."""
    uri: str = ""
    keep: bool = False
    """The VM's disk is kept (``disk.qcow2``) for ``boot --resume``."""
    crashes: tuple[str, ...] = ()
    """Titles of the crashes seen, in order."""
    ended: float = 0.0
    result: str = ""
    """How it ended: ``quit``, ``crash: TITLE``, ``boot failed: ...``..."""
    vm: dict[str, Any] = field(default_factory=dict)
    """The VM's settings, for ``boot --resume`` (cpus, memory_mb, cmdline...)."""

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crashes"] = list(self.crashes)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> SessionRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        data = dict(data)
        data["crashes"] = tuple(data.get("crashes", ()))
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None


class SessionDir:
    """One session's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self._lock: IO[str] | None = None
        self.kept_as: str | None = None
        """When this session took the name of an ended one: the name that one's
        files are kept under now."""

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def kept_disk(self) -> Path:
        return self.path / KEPT_DISK

    def read(self) -> SessionRecord:
        f = self.path / RECORD
        try:
            data = json.loads(f.read_text())
        except FileNotFoundError:
            raise UserError(f"session {self.name}: no record in {self.path}") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"session {self.name}: unreadable record {f}: {e}") from None
        return SessionRecord.from_json(data, str(f))

    def write(self, record: SessionRecord) -> None:
        """Replace the record atomically (readers never see half a file)."""
        # One temporary file per thread: two threads of one process must not
        # write (and rename) the same one.
        tmp = self.path / f".{RECORD}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(json.dumps(record.to_json(), indent=1) + "\n")
        tmp.rename(self.path / RECORD)

    def update(self, **changes: Any) -> SessionRecord:
        """Change some fields of the record. Read, change and write hold the
        record's lock, so concurrent updates (the crash flagger's thread and
        the owner's, or another process) never undo each other's fields."""
        with (self.path / RECORD_LOCK).open("a") as f:
            # flock locks an open file description: threads that open the
            # file themselves exclude each other as processes do.
            fcntl.flock(f, fcntl.LOCK_EX)
            rec = dataclasses.replace(self.read(), **changes)
            self.write(rec)
            return rec

    def running(self) -> bool:
        """Whether an owner holds the session (see the module docstring)."""
        if self._lock is not None:
            return True
        try:
            f = (self.path / OWNER_LOCK).open("a")
        except OSError:
            return False
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def take(self) -> None:
        """Become the owner (non-blocking); UserError when someone else is."""
        f = (self.path / OWNER_LOCK).open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise UserError(f"session {self.name} is running (kvmlab ps)") from None
        self._lock = f

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class SessionStore:
    """All session directories under ``root`` (default :func:`sessions_dir`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or sessions_dir()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def all(self) -> list[SessionDir]:
        if not self.root.is_dir():
            return []
        return [SessionDir(p) for p in sorted(self.root.iterdir())
                if p.is_dir() and (p / RECORD).is_file()]

    def get(self, name: str) -> SessionDir:
        d = SessionDir(self.root / check_name(name))
        if not (d.path / RECORD).is_file():
            running = [s.name for s in self.all() if s.running()]
            hint = f" (running: {', '.join(running)})" if running else " (none is running)"
            raise UserError(f"no session named {name!r}{hint}")
        return d

    def only_running(self) -> SessionDir:
        """The one running session, for commands whose NAME may be left out."""
        running = [s for s in self.all() if s.running()]
        if len(running) != 1:
            names = ", ".join(s.name for s in running)
            raise UserError("give a session name: " + (f"{len(running)} are running ({names})"
                                                        if running else "none is running"))
        return running[0]

    def create(self, name: str, *, explicit: bool) -> SessionDir:
        """A fresh directory for a new session, owned by this process.

        ``explicit`` (the user's ``--name``): an ended session of that name
        gives the name up, its files (console log, reports) kept under the
        first free ``name-N`` (:attr:`SessionDir.kept_as`; ``kvmlab kill --rm``
        removes them); a running one or one with a kept disk is an error.
        Otherwise the first free name of ``name``, ``name-2``, ``name-3``... is
        taken.
        """
        check_name(name)
        with self._locked():
            candidates = [name] if explicit else [name] + [f"{name}-{i}" for i in range(2, 1000)]
            for cand in candidates:
                d = SessionDir(self.root / cand)
                if d.path.exists():
                    if not explicit:
                        continue
                    if d.running():
                        raise UserError(f"session {cand} is running: pick another --name, "
                                        f"or end it with kvmlab kill {cand}")
                    if d.kept_disk.exists():
                        raise UserError(f"session {cand} has a kept disk: kvmlab boot --resume {cand}, "
                                        f"or drop it with kvmlab kill --rm {cand}")
                    kept_as = self._keep_aside(d)
                else:
                    kept_as = None
                d.path.mkdir(parents=True)
                d.take()
                d.kept_as = kept_as
                return d
        raise UserError(f"no free session name like {name!r}")

    def _keep_aside(self, d: SessionDir) -> str:
        """Move an ended session's directory to the first free ``NAME-N`` (the
        store's lock is held) and say so in its record; returns the new name."""
        base = d.name[:44]
        for i in range(2, 10000):
            cand = f"{base}-{i}"
            if not (self.root / cand).exists():
                break
        else:
            raise UserError(f"no free name to keep the ended session {d.name}'s files under")
        new = self.root / cand
        d.path.rename(new)
        moved = SessionDir(new)
        with contextlib.suppress(UserError, OSError):  # a record we cannot read stays as it is
            moved.update(name=cand)
        return cand

    def reopen(self, name: str) -> SessionDir:
        """Take over an ended session's directory (``boot --resume``)."""
        with self._locked():
            d = self.get(name)
            d.take()
            return d


# -- ps ----------------------------------------------------------------------


def uptime(seconds: float) -> str:
    """``42s``, ``5m03s``, ``2h07m``, ``3d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


PS_COLUMNS = ("NAME", "STATE", "COMMIT", "KERNEL", "BACKEND", "SSH", "GDB", "UPTIME", "PID", "DIR")


def ps_rows(records: Sequence[tuple[SessionRecord, bool, Path]], now: float) -> list[tuple[str, ...]]:
    """Table rows for ``kvmlab ps``: (record, running?, directory) each."""
    rows: list[tuple[str, ...]] = []
    for rec, running, path in records:
        state = rec.state if running else ("kept" if rec.keep and (path / KEPT_DISK).exists() else "ended")
        if rec.crashes:
            state += "+crash"
        ssh = f"{rec.ssh_host}:{rec.ssh_port}" if running and rec.ssh_port else "-"
        gdb = f":{rec.gdb_port}" if running and rec.gdb_port else "-"
        up = uptime(now - rec.started) if running else "-"
        rows.append((rec.name, state, rec.commit[:12] or "-", rec.release or Path(rec.kernel).name,
                     rec.backend, ssh, gdb, up, str(rec.pid) if running else "-", str(path)))
    return rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart; the last column unpadded."""
    table = [tuple(header), *[tuple(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = []
    for r in table:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def now() -> float:
    return time.time()
