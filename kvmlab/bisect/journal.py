"""The bisection journal: every build and run outcome, one JSON object a line,
flushed and fsynced as it happens, so that a bisection killed at any point can
be started again and re-use every answer it already has.

Lines (each has ``kind`` and ``t``, the Unix time it was written):

* ``{"kind": "start", "header": {bad, good, fix, policy}}`` -- the first line;
* ``{"kind": "build", "commit": H, "build": {...}}`` -- a build outcome;
* ``{"kind": "run", "commit": H, "run": {...}}`` -- one VM run outcome;
* ``{"kind": "step", "step": {...}}`` -- the engine's belief after a tested
  commit (see :class:`kvmlab.bisect.result.StepRecord`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from kvmlab.errors import DiskFullError, InfraError, UserError
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome

log = logging.getLogger(__name__)


class JournalMismatchError(UserError):
    """The journal belongs to another bisection."""


class JournalCorruptError(UserError):
    """A line of the journal is not a record kvmlab wrote (edited, or another file)."""


def build_to_json(b: BuildOutcome) -> dict[str, Any]:
    return {
        "commit": b.commit, "status": b.status.value, "compiler": b.compiler,
        "artifacts": dict(b.artifacts), "error": b.error, "log_tail": b.log_tail,
        "duration": b.duration, "cached": b.cached, "fixes": list(b.fixes),
    }


def build_from_json(d: dict[str, Any]) -> BuildOutcome:
    return BuildOutcome(
        commit=d["commit"], status=BuildStatus(d["status"]), compiler=d.get("compiler", ""),
        artifacts=dict(d.get("artifacts", {})), error=d.get("error", ""),
        log_tail=d.get("log_tail", ""), duration=float(d.get("duration", 0.0)),
        cached=bool(d.get("cached", False)), fixes=tuple(str(f) for f in d.get("fixes", ())),
    )


class Journal:
    """Append-only record of one bisection; replays what an earlier attempt recorded."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.builds: dict[str, BuildOutcome] = {}
        self.runs: dict[str, deque[RunOutcome]] = {}
        lines = self._load()
        if lines:
            if lines[0].get("kind") != "start" or lines[0].get("header") != header:
                raise JournalMismatchError(
                    f"{path}: journal of another bisection ({lines[0].get('header')}), not {header}"
                )
            for n, d in enumerate(lines[1:], 2):
                try:
                    if d.get("kind") == "build":
                        self.builds[d["commit"]] = build_from_json(d["build"])
                    elif d.get("kind") == "run":
                        self.runs.setdefault(d["commit"], deque()).append(RunOutcome.from_json(d["run"]))
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    raise JournalCorruptError(f"journal {path} line {n}: not a {d.get('kind')} record "
                                              f"kvmlab wrote ({type(e).__name__}: {e})") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f: IO[str] = path.open("a", encoding="utf-8")
        except OSError as e:
            raise _host_error(path, e) from None
        if not lines:
            self._write({"kind": "start", "header": header})

    @classmethod
    def check(cls, path: Path) -> None:
        """Read ``path`` as :meth:`__init__` would (a garbage line is a
        :class:`JournalCorruptError`, a partial last line is moved aside),
        before a bisection starts any work."""
        probe = cls.__new__(cls)
        probe.path = path
        probe._load()

    def _load(self) -> list[dict[str, Any]]:
        """The records, each checked; a partial last line (a kill or a full disk
        in the middle of a write) is moved aside to ``JOURNAL.partial``, never
        just dropped; any other line that is not a record is an error naming
        the file and the line."""
        if not self.path.exists():
            return []
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise _host_error(self.path, e) from None
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self._set_aside(data[end:])
        out: list[dict[str, Any]] = []
        for n, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                shown = raw[:40].decode("utf-8", errors="replace")
                raise JournalCorruptError(f"journal {self.path} line {n}: not a journal record ({shown!r}); "
                                          "move the file away to start over") from None
            if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
                raise JournalCorruptError(f"journal {self.path} line {n}: not a journal record (no 'kind'); "
                                          "move the file away to start over")
            out.append(d)
        return out

    def _set_aside(self, partial: bytes) -> None:
        """Keep a partial last line in ``JOURNAL.partial`` and cut it from the journal."""
        aside = self.path.with_name(self.path.name + ".partial")
        try:
            with aside.open("ab") as f:
                f.write(partial + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with self.path.open("r+b") as f:
                f.truncate(self.path.stat().st_size - len(partial))
        except OSError as e:
            raise _host_error(self.path, e) from None
        log.warning("journal %s: its last line was cut short (a kill or a full disk while it was written); "
                    "kept in %s, the bisection goes on without it", self.path, aside)

    def _write(self, obj: dict[str, Any]) -> None:
        obj.setdefault("t", round(time.time(), 3))
        try:
            self._f.write(json.dumps(obj, sort_keys=True) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise _host_error(self.path, e) from None

    def replay_build(self, commit: str) -> BuildOutcome | None:
        return self.builds.pop(commit, None)

    def replay_run(self, commit: str) -> RunOutcome | None:
        q = self.runs.get(commit)
        return q.popleft() if q else None

    def record_build(self, build: BuildOutcome) -> None:
        self._write({"kind": "build", "commit": build.commit, "build": build_to_json(build)})

    def record_run(self, commit: str, run: RunOutcome) -> None:
        self._write({"kind": "run", "commit": commit, "run": run.to_json()})

    def record_step(self, step: dict[str, Any]) -> None:
        """What the engine believed after testing one commit (for reports and
        live views; never replayed: the engine recomputes it)."""
        self._write({"kind": "step", "step": step})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()


def _host_error(path: Path, e: OSError) -> InfraError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"journal {path}: disk full ({e.strerror})")
    return InfraError(f"journal {path}: {e.strerror}")
