"""Evidence gathering for a bisection: builds and runs through the journal.

A :class:`Session` is what both policies test commits through. It builds a
commit once, runs the reproducer until it has the answered runs it was asked
for, and keeps every outcome as :class:`~kvmlab.bisect.result.CommitEvidence`.
Transient failures are not verdicts: an infrastructure error is retried, and
so is a boot failure unless the commit's boots fail consistently (then it is
untestable). A boot crash with the target's title is the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvmlab.bisect import log as fmt
from kvmlab.bisect.journal import Journal
from kvmlab.bisect.result import CommitEvidence, StepRecord, Verdict
from kvmlab.bisect.seams import IsTarget, Tester
from kvmlab.bisect.timing import PoolSized, Stopwatch
from kvmlab.errors import InfraError, UserError
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus
from kvmlab.text import counted

#: Infrastructure failures in a row on one commit before the bisection gives up.
MAX_INFRA_IN_A_ROW = 5

#: Runs in a row on one commit whose guest shut itself down (no crash) before
#: the bisection stops: the reproducer powers the guest off or reboots it.
MAX_STOPPED_IN_A_ROW = 3


class BisectUsageError(UserError):
    """The bisection was asked something it cannot do (bad range, missing good commit)."""


class BisectInfraError(InfraError):
    """The tester kept failing on kvmlab's side."""


class ReproFailedError(UserError):
    """The reproducer itself could not run on a commit (a run came back
    ``repro-failed``): no verdict can be drawn from it, so the bisection stops."""


@dataclass
class Session:
    """Builds and runs through the journal, with the evidence they give."""

    tester: Tester
    journal: Journal | None
    out: fmt.LogWriter
    fix: bool
    is_target: IsTarget | None
    evidence: dict[str, CommitEvidence] = field(default_factory=dict)
    target_title: str | None = None
    target_report: str = ""
    builds: int = 0
    runs: int = 0
    """VM runs spent (answered runs and boot failures; infrastructure errors and
    guests that stopped themselves are not counted)."""
    observer: Callable[[StepRecord], None] | None = None
    steps: list[StepRecord] = field(default_factory=list)
    made: set[str] = field(default_factory=set)
    """Commits kvmlab made on top of others (a culprit reverted, a fix
    applied): tested like the range's, never part of it."""
    stopwatch: Stopwatch = field(default_factory=Stopwatch)
    """The job's wall time and where it went (the closing block's totals)."""
    same_kernel: bool = False
    """Two commits whose builds are the same kernel binary (the build's
    ``kernel_sha256``; kvmlab's builds are reproducible) are one test: a commit
    whose twin tested before crashed with the target takes the twin's runs
    instead of running its own. A twin with clean runs only is not reused: the
    adaptive model would count those clean runs twice, and a flaky bug's clean
    runs are the weak evidence its confidence must not overstate."""

    def ev(self, commit: str) -> CommitEvidence:
        if commit not in self.evidence:
            self.evidence[commit] = CommitEvidence(commit)
        return self.evidence[commit]

    def step(self, commit: str, verdict: Verdict | str, remaining: int, *,
             top: tuple[tuple[str, float], ...] = (), confidence: float | None = None,
             p_crash: float | None = None, rate: float | None = None, note: str = "") -> None:
        """Record what the engine believes after finishing with ``commit``."""
        rec = StepRecord(index=len(self.steps), commit=commit,
                         verdict=verdict.value if isinstance(verdict, Verdict) else verdict,
                         remaining=remaining, top=top, confidence=confidence, vm_runs=self.runs,
                         builds=self.builds, p_crash=p_crash, rate=rate, note=note)
        self.steps.append(rec)
        if self.journal:
            self.journal.record_step(rec.to_json())
        if self.observer is not None:
            self.observer(rec)

    def build(self, commit: str) -> BuildOutcome:
        """Build once per commit; logs ``testing commit`` (and a build failure)."""
        e = self.ev(commit)
        if e.build is None:
            b = self.journal.replay_build(commit) if self.journal else None
            if b is None:
                with self.stopwatch.building():
                    b = self.tester.build(commit)
                if self.journal:
                    self.journal.record_build(b)
            e.build = b
            self.builds += 1
        self.out(fmt.testing_line(commit, e.build.compiler))
        for fix in e.build.fixes:
            self.out(f"kvmlab: built with the known build fix {fix} applied (it does not build with this "
                     "tool-chain as it is)")
        if e.build.status is BuildStatus.FAILED:
            self.out(fmt.build_failed_line(e.build.error))
        return e.build

    def matches(self, run: RunOutcome, *, on_bad: bool) -> bool:
        """Is this run's crash (or boot crash) the target bug?"""
        if not run.crashed and not (run.status is RunStatus.BOOT_FAILED and run.title):
            return False
        if self.is_target is not None:
            hit = self.is_target(run)
        elif self.target_title is None:
            hit = on_bad and run.crashed  # the first crash on the bad commit names the target
        else:
            hit = run.title == self.target_title
        if hit and self.target_title is None:
            self.target_title, self.target_report = run.title, run.report
        return hit

    def run(self, commit: str, n: int, *, on_bad: bool = False, retry_boot_failures: bool = True
            ) -> list[RunOutcome]:
        """Up to ``n`` answered runs (a target crash or any booted run).

        Infrastructure errors are retried and not counted, and so are runs
        whose guest shut itself down with no crash (never the target: the
        reproducer powered it off or rebooted it; when every run does, the
        bisection stops with :class:`ReproFailedError`). Boot failures are
        retried too (``retry_boot_failures``) until the commit's boots fail
        consistently (:attr:`CommitEvidence.boots_fail`); then fewer runs come
        back. Without ``retry_boot_failures`` a boot failure is an answer (the
        syzbot policy's rule).
        """
        e = self.ev(commit)
        assert e.build is not None and e.build.status is BuildStatus.OK
        got: list[RunOutcome] = self._reuse(commit)[:n] if self.same_kernel and not e.runs else []
        infra = stopped = 0
        while len(got) < n and not e.boots_fail:
            replayed = self.journal.replay_run(commit) if self.journal else None
            if replayed is not None:
                batch = [replayed]
            else:
                want = n - len(got)
                slots = self.tester.vm_slots() if isinstance(self.tester, PoolSized) else 0
                slots = slots if slots > 0 else want  # unknown: every run at once
                with self.stopwatch.testing(slots) as span:
                    batch = list(self.tester.test(e.build, want))
                    span.busy += sum(r.duration for r in batch)
                if not batch:
                    raise BisectInfraError(f"commit {commit}: the tester returned no runs")
            for r in batch:
                if replayed is None and self.journal:
                    self.journal.record_run(commit, r)
                r = _renumber(r, len(e.runs))
                e.runs.append(r)
                target = self.matches(r, on_bad=on_bad)
                e.target.append(target)
                if r.status is RunStatus.REPRO_FAILED:
                    raise ReproFailedError(
                        f"commit {commit}: the reproducer could not run (run #{r.index}): {r.detail}"
                    )
                if r.status is RunStatus.GUEST_STOPPED:
                    stopped += 1
                    if stopped >= MAX_STOPPED_IN_A_ROW:
                        raise ReproFailedError(
                            f"commit {commit}: the guest stopped itself in {stopped} runs in a row with no "
                            f"crash ({r.detail}): the reproducer powers it off or reboots it, so no run can "
                            "tell whether the bug is there"
                        )
                    continue
                stopped = 0
                if r.status is RunStatus.INFRA:
                    infra += 1
                    if infra >= MAX_INFRA_IN_A_ROW:
                        raise BisectInfraError(
                            f"commit {commit}: {infra} runs in a row failed on kvmlab's side: {r.detail}"
                        )
                    continue
                infra = 0
                self.runs += 1
                if r.status is RunStatus.BOOT_FAILED and not target and retry_boot_failures:
                    continue
                got.append(r)
        return got

    def twin(self, commit: str) -> str | None:
        """A commit tested before ``commit`` whose build is the same kernel
        binary and which crashed with the target."""
        b = self.ev(commit).build
        digest = b.artifacts.get("kernel_sha256") if b is not None else None
        if not digest:
            return None
        for c, e in self.evidence.items():
            if c != commit and e.target_crashes and e.same_as is None and e.build is not None \
                    and e.build.artifacts.get("kernel_sha256") == digest:
                return c
        return None

    def _reuse(self, commit: str) -> list[RunOutcome]:
        """Take the runs of an earlier commit with the same kernel binary as
        ``commit``'s that crashed with the target (not journaled: a resumed
        bisection takes them again); the answered ones."""
        twin = self.twin(commit)
        if twin is None:
            return []
        e, te = self.ev(commit), self.ev(twin)
        e.same_as, e.reused = twin, len(te.runs)
        for r, t in zip(te.runs, te.target, strict=True):
            e.runs.append(r)
            e.target.append(t)
        self.out(f"kvmlab: {commit[:12]} builds the same kernel binary as {twin[:12]}: its "
                 f"{counted(len(te.runs), 'run counts', 'runs count')} for both (one test)")
        return [r for r, t in zip(te.runs, te.target, strict=True)
                if r.status in (RunStatus.OK, RunStatus.CRASHED) or t]

    def run_until_crash(self, commit: str, runs: int, chunk: int, *, on_bad: bool = False) -> None:
        """Up to ``runs`` answered runs, in calls of ``chunk``, stopping after the
        first target crash or when the commit turns out untestable."""
        e = self.ev(commit)
        before = e.target_crashes
        done = 0
        while done < runs and e.target_crashes == before and not e.untestable:
            done += len(self.run(commit, min(chunk, runs - done), on_bad=on_bad))

    def show_runs(self, commit: str, since: int, *, counted_all: bool) -> None:
        e = self.ev(commit)
        self.out.many(fmt.run_lines(e.runs[since:], e.target[since:], counted_all=counted_all))

    def untestable_line(self, commit: str) -> str:
        e = self.ev(commit)
        if e.build_failed:
            return f"kvmlab: {commit[:12]} is untestable: the kernel does not build"
        attempts = e.boot_failures + e.booted
        return (f"kvmlab: {commit[:12]} is untestable: {e.boot_failures} of {attempts} boots failed "
                f"({e.boot_failure_title})")


def _renumber(r: RunOutcome, index: int) -> RunOutcome:
    if r.index == index:
        return r
    d = r.to_json()
    d["index"] = index
    d["duration"] = r.duration
    return RunOutcome.from_json(d)
