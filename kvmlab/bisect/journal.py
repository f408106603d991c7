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

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from kvmlab.errors import UserError
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome


class JournalMismatchError(UserError):
    """The journal belongs to another bisection."""


def build_to_json(b: BuildOutcome) -> dict[str, Any]:
    return {
        "commit": b.commit, "status": b.status.value, "compiler": b.compiler,
        "artifacts": dict(b.artifacts), "error": b.error, "log_tail": b.log_tail,
        "duration": b.duration, "cached": b.cached,
    }


def build_from_json(d: dict[str, Any]) -> BuildOutcome:
    return BuildOutcome(
        commit=d["commit"], status=BuildStatus(d["status"]), compiler=d.get("compiler", ""),
        artifacts=dict(d.get("artifacts", {})), error=d.get("error", ""),
        log_tail=d.get("log_tail", ""), duration=float(d.get("duration", 0.0)),
        cached=bool(d.get("cached", False)),
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
            for d in lines[1:]:
                if d.get("kind") == "build":
                    self.builds[d["commit"]] = build_from_json(d["build"])
                elif d.get("kind") == "run":
                    self.runs.setdefault(d["commit"], deque()).append(RunOutcome.from_json(d["run"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = path.open("a", encoding="utf-8")
        if not lines:
            self._write({"kind": "start", "header": header})

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        # A kill in the middle of a write leaves a partial last line: drop it.
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(end)
        return [json.loads(line) for line in data[:end].decode().splitlines() if line.strip()]

    def _write(self, obj: dict[str, Any]) -> None:
        obj.setdefault("t", round(time.time(), 3))
        self._f.write(json.dumps(obj, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

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
        self._f.close()
