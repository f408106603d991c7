"""Overlapping builds with tests: build what the engine would test next while
the current commit's VMs run.

What to build is the adaptive policy's own answer
(:meth:`kvmlab.bisect.adaptive.AdaptiveBisection.likely_next`: what it would
test next under each likely outcome of the test about to run, most likely
first). This module holds the pure part that acts on it, used by the real
tester and by the simulations:

* :class:`OverlapScheduler` keeps the background builds in line with that
  list: it starts the wanted ones while there is capacity (the cores the VMs
  leave free; none means no background builds at all, so a small machine is
  never slowed), cancels the ones no longer wanted, and tells the foreground
  what to do when it needs a build (take a finished one, wait for a running
  one, or build it itself).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


def background_capacity(free_cores: int) -> int:
    """How many background builds may run on the ``free_cores`` cores the VMs
    leave free: none below 2, so a small machine is never slowed; else one,
    with all of them (a kernel build uses every core it gets, so one build at
    full speed is ready sooner than two at half)."""
    return 1 if free_cores >= 2 else 0


class Claim(enum.Enum):
    """What the foreground should do about a build it needs."""

    READY = "ready"
    """Built in the background: take it."""
    RUNNING = "running"
    """Being built in the background: wait for it."""
    ABSENT = "absent"
    """Not built or building: build it in the foreground (it was dropped from the queue)."""


@dataclass
class OverlapScheduler:
    """Which background builds run. ``capacity``: how many at once (0: none)."""

    capacity: int
    wanted: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)
    """Every cancellation so far, in order (for logs and tests)."""

    def want(self, commits: Sequence[str]) -> tuple[list[str], list[str]]:
        """Replace the wanted list; returns (builds to start, running builds to cancel)."""
        if self.capacity <= 0:
            return [], []
        self.wanted = [c for c in commits if c not in self.ready and c not in self.failed]
        cancel = sorted(self.running - set(self.wanted))
        for c in cancel:
            self.running.discard(c)
            self.cancelled.append(c)
        return self._fill(), cancel

    def _fill(self) -> list[str]:
        start = []
        for c in self.wanted:
            if len(self.running) >= self.capacity:
                break
            if c not in self.running:
                self.running.add(c)
                start.append(c)
        return start

    def finished(self, commit: str, ok: bool) -> list[str]:
        """A background build ended; returns the builds to start next."""
        self.running.discard(commit)
        if commit in self.wanted:
            self.wanted.remove(commit)
        (self.ready if ok else self.failed).add(commit)
        return self._fill()

    def claim(self, commit: str) -> Claim:
        """The foreground needs ``commit`` now."""
        if commit in self.ready or commit in self.failed:
            return Claim.READY
        if commit in self.running:
            return Claim.RUNNING
        if commit in self.wanted:
            self.wanted.remove(commit)
        return Claim.ABSENT
