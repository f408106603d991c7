"""Simulated repositories and testers, for benchmarks and tests of the engine.

* :class:`MemoryRepo` -- a :class:`~kvmlab.bisect.seams.Repository` over a
  :class:`~kvmlab.bisect.graph.CommitGraph` held in memory (no git).
* :class:`ClockedTester` -- wraps a tester whose outcomes are simulated and
  charges simulated time: a build takes ``build_seconds`` on the whole machine,
  a batch of up to ``vms`` runs takes ``run_seconds``. With ``overlap`` it also
  implements :class:`~kvmlab.bisect.seams.Prebuilds`: background builds run on
  the cores the VMs leave free while runs go on (and on the whole machine while
  the foreground waits for them), driven by the same
  :class:`~kvmlab.bisect.overlap.OverlapScheduler` the real tester uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.overlap import Claim, OverlapScheduler, background_capacity
from kvmlab.bisect.seams import CommitInfo, Tag, Tester
from kvmlab.errors import UnknownCommitError
from kvmlab.outcome import BuildOutcome, RunOutcome


class MemoryRepo:
    """A repository over an in-memory graph whose boundary is one good commit."""

    def __init__(self, graph: CommitGraph, good: str) -> None:
        self.g = graph
        self.good = good

    def resolve(self, rev: str) -> str:
        if rev in self.g.index or rev == self.good:
            return rev
        raise UnknownCommitError(f"{rev}: unknown revision")

    def graph(self, bad: str, good: Sequence[str]) -> CommitGraph:
        return self.g

    def is_ancestor(self, a: str, b: str) -> bool:
        return a == self.good or bool(self.g.closure_of(b) >> self.g.index[a] & 1)

    def release_tags(self, tip: str, floor: str | None = None) -> list[Tag]:
        return []

    def commit_info(self, commit: str) -> CommitInfo:
        c = self.g.commits[self.g.index[commit]]
        return CommitInfo(commit, c.parents, c.subject, "A U Thor", "author@example.org",
                          "Thu Jan 1 00:00:00 1970 +0000", c.subject)


@dataclass
class Event:
    """Something that happened at a simulated time (for checks and figures)."""

    time: float
    kind: str
    """``build`` (foreground), ``wait`` (for a background build), ``test``,
    ``bg-start``, ``bg-done``, ``bg-cancel``."""
    commit: str
    seconds: float = 0.0
    runs: int = 0
    """VM runs of a ``test`` event."""


@dataclass
class ClockedTester:
    """Simulated time around ``inner`` (see the module docstring)."""

    inner: Tester
    build_seconds: float
    run_seconds: float
    cores: int
    vms: int
    vm_cores: int = 1
    overlap: bool = False
    now: float = 0.0
    events: list[Event] = field(default_factory=list)
    sched: OverlapScheduler = field(init=False)
    _work: dict[str, float] = field(default_factory=dict)
    """Background build -> seconds of whole-machine work left."""
    _done: dict[str, BuildOutcome] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = max(0, self.cores - self.vms * self.vm_cores)
        self.sched = OverlapScheduler(background_capacity(self.free) if self.overlap else 0)

    # -- time --------------------------------------------------------------

    def _advance(self, seconds: float, share: float) -> None:
        """Let ``seconds`` pass with background builds getting ``share`` of the machine."""
        end = self.now + seconds
        while self.sched.running and share > 0:
            commit = min(self.sched.running, key=lambda c: self._work[c])
            need = self._work[commit] / (share / len(self.sched.running))
            if self.now + need > end:
                break
            self._tick(need, share)
            self.events.append(Event(self.now, "bg-done", commit))
            self._done[commit] = self.inner.build(commit)
            self._work.pop(commit)
            self._begin(self.sched.finished(commit, ok=True))
        self._tick(end - self.now, share)

    def _tick(self, seconds: float, share: float) -> None:
        """Background builds split ``share`` of the machine between them."""
        for c in self.sched.running:
            self._work[c] -= seconds * share / len(self.sched.running)
        self.now += seconds

    def _begin(self, commits: Sequence[str]) -> None:
        for c in commits:
            self._work[c] = self.build_seconds
            self.events.append(Event(self.now, "bg-start", c))

    # -- Tester ------------------------------------------------------------

    def build(self, commit: str) -> BuildOutcome:
        claim = self.sched.claim(commit)
        if claim is Claim.RUNNING:
            started = self.now
            while commit in self.sched.running:  # the whole machine is free while we wait
                self._advance(self._work[commit], 1.0)
            self.events.append(Event(started, "wait", commit, self.now - started))
        if commit in self._done:
            return self._done[commit]
        self.events.append(Event(self.now, "build", commit, self.build_seconds))
        self._advance(self.build_seconds, 0.0)
        return self.inner.build(commit)

    def idle_vm_seconds(self) -> float:
        """VM-seconds the pool's VMs waited while others ran (batches with
        fewer runs than VMs)."""
        return sum((-(-e.runs // self.vms) * self.vms - e.runs) * self.run_seconds
                   for e in self.events if e.kind == "test")

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        seconds = self.run_seconds * -(-runs // self.vms)
        self.events.append(Event(self.now, "test", build.commit, seconds, runs))
        self._advance(seconds, self.free / self.cores)
        return self.inner.test(build, runs)

    # -- Prebuilds -----------------------------------------------------------

    def prebuild(self, commits: Sequence[str]) -> None:
        start, cancel = self.sched.want(commits)
        for c in cancel:
            self._work.pop(c, None)
            self.events.append(Event(self.now, "bg-cancel", c))
        self._begin(start)

    def prebuilt(self) -> frozenset[str]:
        return frozenset(self._done)
