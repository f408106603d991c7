"""Testing a patch the way syzbot's ``#syz test`` does, with a number of runs
that makes "gone" mean something: pure decisions, and the record of a bug's
crash rate on its unpatched commit.

A reproducer that crashed ``k`` of ``n`` runs unpatched has a crash rate whose
posterior (uniform prior) is Beta(k+1, n-k+1). ``m`` runs of an unfixed kernel
all pass with probability E[(1-p)^m] under it (:func:`p_no_crash`); a patch
is "gone" at confidence c after 0/m crashes when that probability is at most
1-c (:func:`runs_needed`). A deterministic reproducer seen crashing 2/2 needs
3 runs for 95%; one that crashed 1 run in 3 needs 12.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from kvmlab.outcome import RunStatus
from kvmlab.repro.runner import ReproResult

#: The confidence a patch test aims for.
CONFIDENCE = 0.95
#: Runs a patch test makes at most (a rate too low for any reasonable number).
MAX_RUNS = 32


def p_no_crash(crashed: int, runs: int, m: int) -> float:
    """The probability that ``m`` runs of an unfixed kernel all pass, given
    ``crashed`` of ``runs`` crashed unpatched (see the module docstring)."""
    a, b = crashed + 1, runs - crashed + 1
    p = 1.0
    for i in range(m):
        p *= (b + i) / (a + b + i)
    return p


def runs_needed(crashed: int, runs: int, confidence: float = CONFIDENCE, limit: int = MAX_RUNS) -> int | None:
    """The fewest runs whose all passing says "gone" with ``confidence``;
    None when even ``limit`` runs would not."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence}: must be between 0 and 1")
    for m in range(1, limit + 1):
        if p_no_crash(crashed, runs, m) <= 1 - confidence:
            return m
    return None


def confidence_of(crashed: int, runs: int, m: int) -> float:
    """How sure 0/``m`` crashes make "gone" (1 - :func:`p_no_crash`)."""
    return 1 - p_no_crash(crashed, runs, m)


class PatchStatus(enum.Enum):
    GONE = "gone"
    STILL_CRASHES = "still crashes"
    NOT_APPLIED = "patch does not apply"
    BUILD_FAILED = "the patched kernel does not build"
    UNPATCHED_OK = "does not reproduce unpatched"
    UNDECIDED = "undecided"
    """Too few runs answered (boot or infra failures)."""


@dataclass(frozen=True)
class PatchVerdict:
    status: PatchStatus
    line: str
    """The result, one line, as syzbot would say it."""
    crashed: int = 0
    runs: int = 0

    def to_json(self) -> dict[str, object]:
        return {"status": self.status.value, "line": self.line, "crashed": self.crashed, "runs": self.runs}


def expected_crashes(result: ReproResult) -> int:
    return sum(1 for e in result.expected if e)


def answered_runs(result: ReproResult) -> int:
    """Runs that said something about the bug: a crash, or a whole run without one."""
    return sum(1 for o in result.outcomes if o.status in (RunStatus.CRASHED, RunStatus.OK))


def verdict(result: ReproResult, *, base_crashed: int, base_runs: int) -> PatchVerdict:
    """What the patched kernel's runs say, given the unpatched rate."""
    k = expected_crashes(result)
    if k:
        title = next(o.title for o, e in zip(result.outcomes, result.expected, strict=True) if e)
        n = len(result.outcomes)
        return PatchVerdict(PatchStatus.STILL_CRASHES, f"still crashes: {k}/{n} runs: {title}", k, n)
    ok = sum(1 for o in result.outcomes if o.status is RunStatus.OK)
    others = [o.title for o, e in zip(result.outcomes, result.expected, strict=True) if e is False]
    conf = confidence_of(base_crashed, base_runs, ok)
    pct = math.floor(conf * 1000) / 10
    why = (f"confidence {pct:g}%: unpatched it crashed {base_crashed}/{base_runs} runs here, and at that "
           f"rate {ok} runs of an unfixed kernel all pass with probability {100 - pct:.1f}%")
    other = f"; other crashes: {', '.join(sorted(set(t or '?' for t in others)))}" if others else ""
    if ok == 0:
        return PatchVerdict(PatchStatus.UNDECIDED, f"undecided: no run of the patched kernel answered{other}",
                            0, len(result.outcomes))
    if conf < CONFIDENCE - 1e-9:
        return PatchVerdict(PatchStatus.UNDECIDED, f"no crash in {ok} runs, too few to say it is gone "
                            f"({why}){other}", 0, ok)
    return PatchVerdict(PatchStatus.GONE, f"the crash is gone: 0/{ok} runs ({why}){other}", 0, ok)


# -- the unpatched rate, kept between commands ---------------------------------------------------


def rate_key(tree_hash: str, reproducer: str, config: str, compiler: str, run_time: float) -> str:
    """What a measured crash rate belongs to (hex)."""
    text = json.dumps([tree_hash, reproducer, config, compiler, run_time])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Rate:
    crashed: int
    runs: int


class RateStore:
    """Crash rates of unpatched commits (``DIR/KEY.json``), added to by every
    repro run that knows the bug's title."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> Rate | None:
        try:
            data = json.loads((self.root / f"{key}.json").read_text())
            return Rate(int(data["crashed"]), int(data["runs"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def add(self, key: str, crashed: int, runs: int) -> Rate:
        old = self.get(key) or Rate(0, 0)
        new = Rate(old.crashed + crashed, old.runs + runs)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}"
        tmp.write_text(json.dumps({"crashed": new.crashed, "runs": new.runs}) + "\n")
        tmp.rename(self.root / f"{key}.json")
        return new
