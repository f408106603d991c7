"""What a running job tells whoever watches it (the command line's progress
view, a test, a future job queue): log lines, builds and their progress, VM
states, bisection steps. Every call comes in as it happens, possibly from a
VM's thread; an observer must not raise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kvmlab.bisect.result import StepRecord
from kvmlab.bisect.seams import BuildInputs, Prebuilds, Tester
from kvmlab.bisect.timing import PoolSized
from kvmlab.kernel.builder import Progress
from kvmlab.outcome import BuildOutcome, RunOutcome
from kvmlab.repro.runner import VMEvent


class Observer(Protocol):
    """What a job reports while it runs."""

    def say(self, line: str) -> None:
        """One line of the job's log (the command prints it on stdout)."""

    def note(self, line: str) -> None:
        """A status line for the person watching, not part of the log (stderr)."""

    def build_progress(self, p: Progress) -> None: ...
    def building(self, commit: str) -> None: ...
    def testing(self, commit: str, runs: int) -> None: ...
    def vm(self, commit: str, ev: VMEvent) -> None: ...
    def step(self, rec: StepRecord) -> None: ...


class Quiet:
    """An observer that keeps the log and status lines and ignores the rest."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.notes: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def note(self, line: str) -> None:
        self.notes.append(line)

    def build_progress(self, p: Progress) -> None:
        pass

    def building(self, commit: str) -> None:
        pass

    def testing(self, commit: str, runs: int) -> None:
        pass

    def vm(self, commit: str, ev: VMEvent) -> None:
        pass

    def step(self, rec: StepRecord) -> None:
        pass


class ObservedTester:
    """A :class:`~kvmlab.bisect.Tester` that tells an observer what it does;
    it keeps the inner tester's background builds (:class:`Prebuilds`)."""

    def __init__(self, inner: Tester, observer: Observer) -> None:
        self.inner = inner
        self.observer = observer

    def build(self, commit: str) -> BuildOutcome:
        self.observer.building(commit)
        return self.inner.build(commit)

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        self.observer.testing(build.commit, runs)
        return self.inner.test(build, runs)

    def prebuild(self, commits: Sequence[str]) -> None:
        if isinstance(self.inner, Prebuilds):
            self.inner.prebuild(commits)

    def prebuilt(self) -> frozenset[str]:
        return self.inner.prebuilt() if isinstance(self.inner, Prebuilds) else frozenset()

    def vm_slots(self) -> int:
        return self.inner.vm_slots() if isinstance(self.inner, PoolSized) else 0

    def build_inputs(self, build: BuildOutcome) -> frozenset[str] | None:
        return self.inner.build_inputs(build) if isinstance(self.inner, BuildInputs) else None
