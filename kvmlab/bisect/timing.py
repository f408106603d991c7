"""Where a bisection's wall time went: build, test, VM idle, waiting.

The closing block's ``total time`` is the job's wall time, as in syzbot's log,
and its parts add up to it exactly. A :class:`Stopwatch` started with the job
is told when the job waits on a build (:meth:`Stopwatch.building`) and when
it waits on VM runs (:meth:`Stopwatch.testing`); everything else is
*waiting* (git, planning, setting up, writing). A stretch of VM runs of wall
time ``T`` on a pool of ``N`` VMs that kept them busy ``B`` VM-seconds
(boot or restore included) splits into *test* ``B/N`` (the wall time a full
pool would have needed) and *VM idle* ``T - B/N`` (pool slots left unused: a
batch smaller than the pool, VMs that finished early and waited for the
slowest). Builds in the background while VMs run are not counted apart: they
cost no wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: A monotonic clock in seconds (tests pass a fake one).
Clock = Callable[[], float]


@runtime_checkable
class PoolSized(Protocol):
    """Optional ability of a tester: how many VMs a test call may run at once."""

    def vm_slots(self) -> int:
        """VMs at once; 0 when unknown (then every run of a call counts as
        running at once)."""
        ...


@dataclass(frozen=True)
class TimeSplit:
    """A job's wall time in seconds and its parts; ``build + test + vm_idle +
    waiting == total``."""

    total: float
    build: float
    test: float
    vm_idle: float
    waiting: float

    def to_json(self) -> dict[str, float]:
        return {"total_seconds": round(self.total, 3), "build_seconds": round(self.build, 3),
                "test_seconds": round(self.test, 3), "vm_idle_seconds": round(self.vm_idle, 3),
                "waiting_seconds": round(self.waiting, 3)}


class TestSpan:
    """One stretch of VM runs being timed; add each run's VM-seconds to ``busy``."""

    __test__ = False  # not a pytest test class

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = 0.0


class Stopwatch:
    """A job's wall time from ``started`` (default: now on ``clock``).

    Building and testing stretches must not nest (the bisection waits on one
    thing at a time); :meth:`split` may be called at any moment.
    """

    def __init__(self, clock: Clock = time.monotonic, *, started: float | None = None) -> None:
        self.clock = clock
        self.started = clock() if started is None else started
        self._build = 0.0
        self._test = 0.0
        self._idle = 0.0
        self._active = False

    @contextmanager
    def building(self) -> Iterator[None]:
        """Time a wait on a build."""
        t0 = self._enter()
        try:
            yield
        finally:
            self._build += self._leave(t0)

    @contextmanager
    def testing(self, slots: int) -> Iterator[TestSpan]:
        """Time a wait on VM runs on a pool of ``slots`` VMs."""
        span = TestSpan(slots)
        t0 = self._enter()
        try:
            yield span
        finally:
            wall = self._leave(t0)
            test = min(wall, span.busy / span.slots)
            self._test += test
            self._idle += wall - test

    def _enter(self) -> float:
        if self._active:
            raise RuntimeError("a build or test stretch is already being timed")
        self._active = True
        return self.clock()

    def _leave(self, t0: float) -> float:
        self._active = False
        return max(0.0, self.clock() - t0)

    def split(self) -> TimeSplit:
        """The wall time so far and its parts (the part being timed now, if
        any, counts as waiting until it ends)."""
        total = max(0.0, self.clock() - self.started)
        accounted = self._build + self._test + self._idle
        # Only a clock that went backwards could make the parts exceed the
        # whole; the total then stretches so the parts still add up.
        total = max(total, accounted)
        return TimeSplit(total, self._build, self._test, self._idle, total - accounted)
