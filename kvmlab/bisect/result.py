"""What a bisection found, and the evidence behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from kvmlab.bisect.timing import TimeSplit
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus

#: Boot failures (not the target's title) that make a commit untestable, when
#: they also outnumber its successful boots.
UNTESTABLE_BOOT_FAILURES = 3


class Verdict(enum.Enum):
    """A commit's state as ``git bisect`` would be told."""

    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"


@dataclass
class CommitEvidence:
    """Every build and run outcome of one commit (runs in the order they came)."""

    commit: str
    build: BuildOutcome | None = None
    runs: list[RunOutcome] = field(default_factory=list)
    target: list[bool] = field(default_factory=list)
    """Per run: True when the run's crash is the target bug."""
    same_as: str | None = None
    """A commit tested earlier whose build is the same kernel binary (bzImage
    sha256): its runs were taken as this commit's (one test, not two)."""
    reused: int = 0
    """How many of :attr:`runs` (the first ones) are ``same_as``'s, not run again."""

    @property
    def build_failed(self) -> bool:
        return self.build is not None and self.build.status is BuildStatus.FAILED

    @property
    def target_crashes(self) -> int:
        return sum(self.target)

    @property
    def oks(self) -> int:
        return sum(1 for r in self.runs if r.status is RunStatus.OK)

    @property
    def boot_failures(self) -> int:
        """Boots that failed without the target's title (a boot crash with the
        target's title is the target, not a boot failure)."""
        return sum(1 for r, t in zip(self.runs, self.target, strict=True)
                   if r.status is RunStatus.BOOT_FAILED and not t)

    @property
    def booted(self) -> int:
        """Runs whose kernel booted (OK or crashed, whatever the title)."""
        return sum(1 for r in self.runs if r.status in (RunStatus.OK, RunStatus.CRASHED))

    @property
    def boot_failure_title(self) -> str:
        """The most frequent boot-failure title (``no output`` when none was given)."""
        titles = [r.title or r.detail or "no output" for r, t in zip(self.runs, self.target, strict=True)
                  if r.status is RunStatus.BOOT_FAILED and not t]
        return max(set(titles), key=titles.count) if titles else ""

    @property
    def vm_runs(self) -> int:
        """Runs that got an answer from the VM (infra errors and runs reused
        from a commit with the same kernel excluded)."""
        return sum(1 for r in self.runs[self.reused:] if r.status is not RunStatus.INFRA)

    @property
    def other_crashes(self) -> list[str]:
        """Titles of crashes that were not the target bug."""
        return [r.title or "?" for r, t in zip(self.runs, self.target, strict=True) if r.crashed and not t]

    @property
    def boots_fail(self) -> bool:
        """Its boots fail consistently: at least :data:`UNTESTABLE_BOOT_FAILURES`
        failures, and more failures than boots. An isolated failure is transient."""
        bf = self.boot_failures
        return bf >= UNTESTABLE_BOOT_FAILURES and bf > self.booted

    @property
    def untestable(self) -> bool:
        return self.build_failed or self.boots_fail

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "build": None if self.build is None else {
                "status": self.build.status.value, "compiler": self.build.compiler,
                "error": self.build.error, "duration": self.build.duration,
            },
            "runs": [r.to_json() for r in self.runs],
            "target": list(self.target),
            "same_kernel_as": self.same_as, "reused_runs": self.reused,
        }


@dataclass(frozen=True)
class StepRecord:
    """What the engine believed after it finished testing one commit.

    Journaled (``{"kind": "step", "step": to_json()}``) and handed to the
    bisection's observer, for reports and live views.
    """

    index: int
    """0-based count of commits visited in the range (the bad commit and
    releases tested before the range are not steps)."""
    commit: str
    verdict: str
    """``good``, ``bad`` or ``skip`` as the log's ``# git bisect`` line says, or
    ``undecided`` when the engine left the commit without a verdict (yet)."""
    remaining: int
    """Candidates still in play (the adaptive policy: its 99% credible set)."""
    top: tuple[tuple[str, float], ...]
    """The most probable culprits, best first, with their probability (the
    syzbot policy: empty, it has no probabilities)."""
    confidence: float | None
    """Probability of the best candidate (None for the syzbot policy)."""
    vm_runs: int
    builds: int
    p_crash: float | None = None
    """Adaptive: P(this commit has the bug) after the step."""
    rate: float | None = None
    """Adaptive: the estimated crash rate of this commit if it has the bug."""
    note: str = ""
    """Why the engine did what it did with this commit (re-test, untestable), or empty."""

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "commit": self.commit, "verdict": self.verdict,
            "remaining": self.remaining, "top": [[c, round(p, 6)] for c, p in self.top],
            "confidence": None if self.confidence is None else round(self.confidence, 6),
            "vm_runs": self.vm_runs, "builds": self.builds,
            "p_crash": None if self.p_crash is None else round(self.p_crash, 6),
            "rate": None if self.rate is None else round(self.rate, 6), "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StepRecord:
        return cls(
            index=int(d["index"]), commit=d["commit"], verdict=d["verdict"],
            remaining=int(d["remaining"]), top=tuple((c, float(p)) for c, p in d.get("top", ())),
            confidence=None if d.get("confidence") is None else float(d["confidence"]),
            vm_runs=int(d.get("vm_runs", 0)), builds=int(d.get("builds", 0)),
            p_crash=None if d.get("p_crash") is None else float(d["p_crash"]),
            rate=None if d.get("rate") is None else float(d["rate"]), note=str(d.get("note", "")),
        )


class ConfirmStatus(enum.Enum):
    CONFIRMED = "confirmed"
    """The change undone (or the fix applied), the crash is gone."""
    NOT_CONFIRMED = "not-confirmed"
    """The crash is still there: the culprit is doubtful."""
    DOES_NOT_APPLY = "does-not-apply"
    """No file of the change applies on the base: nothing to test."""
    UNTESTABLE = "untestable"
    """The synthetic commit does not build or its boots fail."""


@dataclass(frozen=True)
class Confirmation:
    """One check of the culprit on one base (see :mod:`kvmlab.bisect.confirm`)."""

    status: ConfirmStatus
    base: str
    commit: str | None
    runs: int = 0
    crashes: int = 0
    applied: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    message: str = ""
    probed: bool = False
    """The bisection had built and tested the same commit (the culprit
    reverted there while bisecting: a revert probe); ``runs`` are the
    check's own, made after those."""

    @property
    def doubtful(self) -> bool:
        return self.status is ConfirmStatus.NOT_CONFIRMED

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "base": self.base, "commit": self.commit, "runs": self.runs,
                "crashes": self.crashes, "applied": list(self.applied), "failed": list(self.failed),
                "message": self.message, "probed": self.probed}


@dataclass(frozen=True)
class RangeRelevance:
    """How many commits of the range can change the built kernel
    (:mod:`kvmlab.kernel.relevance`); the engine bisected over those."""

    commits: int
    """Commits in the range."""
    relevant: int
    """Of them, those whose diff touches a file the build reads (the tip included)."""
    build_files: int
    """Tree files the builds so far read (their dependency files)."""
    irrelevant: tuple[str, ...] = ()
    """The commits folded into their parents, parents first."""

    def to_json(self) -> dict[str, Any]:
        return {"commits": self.commits, "relevant": self.relevant, "build_files": self.build_files,
                "irrelevant": list(self.irrelevant)}


class Outcome(enum.Enum):
    FOUND = "found"
    """``culprit`` is set; ``confidence`` says how sure (None for the syzbot policy)."""
    INCONCLUSIVE = "inconclusive"
    """``candidates`` holds the commits the culprit may be."""
    NO_REPRO = "no-repro"
    """The bad commit did not reproduce the crash."""
    OLDEST_RELEASE_BAD = "oldest-release-bad"
    """No good commit was given and every tested release had the bug."""


@dataclass
class BisectResult:
    """The answer of :func:`kvmlab.bisect.bisect` and how it was reached."""

    outcome: Outcome
    fix: bool
    policy: str
    bad: str
    good: str | None
    culprit: str | None = None
    confidence: float | None = None
    confidence_goal: float | None = None
    """The confidence the culprit had to reach (adaptive: the policy's, or
    higher once the target's title showed on a commit without the bug)."""
    candidates: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    """Adaptive: posterior of each candidate (of an inconclusive range: the
    credible set; of a found culprit: the culprit and the runners-up)."""
    target_title: str | None = None
    message: str = ""
    """One line for humans: what was found or why not."""
    evidence: dict[str, CommitEvidence] = field(default_factory=dict)
    builds: int = 0
    """Builds done (cached builds included, replayed ones from a journal too)."""
    time: TimeSplit = field(default_factory=lambda: TimeSplit(0.0, 0.0, 0.0, 0.0, 0.0))
    """The job's wall time and its parts, as the closing block says them."""
    warnings: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    """The engine's belief after each tested commit of the range, in order."""
    confirmations: list[Confirmation] = field(default_factory=list)
    """The culprit reverted (a fix applied) and tested, per base; empty when
    not verified."""
    relevance: RangeRelevance | None = None
    """The range's commits that can change the kernel; None when relevance
    was off or unknown (every commit of the range was a candidate)."""
    config_minimized: dict[str, Any] | None = None
    """What config minimization dropped from a full config (see
    :mod:`kvmlab.kernel.minimize`); None: fragments, or --no-minimize."""

    @property
    def doubtful(self) -> bool:
        """A confirmation found the crash still there with the culprit undone."""
        return any(c.doubtful for c in self.confirmations)

    @property
    def build_seconds(self) -> float:
        """Wall time spent waiting on builds (see :attr:`time`)."""
        return self.time.build

    @property
    def test_seconds(self) -> float:
        """Wall time of VM runs at a full pool (see :attr:`time`)."""
        return self.time.test

    @property
    def commits_tested(self) -> int:
        return sum(1 for e in self.evidence.values() if e.build is not None)

    @property
    def vm_runs(self) -> int:
        return sum(e.vm_runs for e in self.evidence.values())

    @property
    def uncounted_crashes(self) -> list[tuple[str, str]]:
        """(commit, title) of every crash that was not the target bug."""
        return [(c, t) for c, e in self.evidence.items() for t in e.other_crashes]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value, "fix": self.fix, "policy": self.policy,
            "bad": self.bad, "good": self.good, "culprit": self.culprit,
            "confidence": self.confidence, "confidence_goal": self.confidence_goal,
            "candidates": self.candidates,
            "probabilities": {c: round(p, 6) for c, p in self.probabilities.items()},
            "target_title": self.target_title, "message": self.message,
            "commits_tested": self.commits_tested, "vm_runs": self.vm_runs, "builds": self.builds,
            **self.time.to_json(),
            "warnings": self.warnings,
            "steps": [st.to_json() for st in self.steps],
            "confirmations": [c.to_json() for c in self.confirmations], "doubtful": self.doubtful,
            "evidence": [e.to_json() for e in self.evidence.values()],
            "relevance": None if self.relevance is None else self.relevance.to_json(),
            "config_minimized": self.config_minimized,
        }
