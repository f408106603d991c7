"""Bisection: a pure engine over a repository seam and a tester seam.

Entry point::

    from kvmlab.bisect import bisect, GitRepository, LogWriter

    result = bisect(
        GitRepository(tree), tester,           # tester: kvmlab.bisect.Tester
        bad="HEAD", good="v6.1",                # good=None: try release tags newest first
        fix=False,                              # True: find the first commit where the bug is gone
        policy="adaptive",                      # or "syzbot", or an AdaptivePolicy/SyzbotPolicy
        is_target=None,                         # RunOutcome -> bool; default: title of the first
                                                # crash on the bad commit
        journal=Path("bisect.journal"),         # resumable record of every outcome
        log=LogWriter(print, Path("bisect.log")),
        release_floor="v4.18",
    ) -> BisectResult

``BisectResult`` has ``outcome`` (found / inconclusive / no-repro /
oldest-release-bad), ``culprit`` and ``confidence`` (None for syzbot), the
``candidates`` of an inconclusive range, ``commits_tested``, ``vm_runs``,
``builds``, per-commit ``evidence``, ``uncounted_crashes`` and ``warnings``.

Seams (:mod:`kvmlab.bisect.seams`): ``Repository`` (resolve, graph, is_ancestor,
release_tags, commit_info; :class:`GitRepository` is the real one) and
``Tester`` (``build(commit) -> BuildOutcome``, ``test(build, runs) ->
list[RunOutcome]``). Policies (:mod:`kvmlab.bisect.policy`): ``syzbot``, the
published baseline rule, and ``adaptive``, a Bayesian bisection over the culprit
and the bug's unknown crash rate (:mod:`kvmlab.bisect.model`).
"""

from kvmlab.bisect.engine import bisect
from kvmlab.bisect.graph import CommitGraph, RangeCommit
from kvmlab.bisect.journal import JournalMismatchError
from kvmlab.bisect.log import LogWriter
from kvmlab.bisect.policy import POLICIES, AdaptivePolicy, Policy, SyzbotPolicy
from kvmlab.bisect.repository import GitRepository
from kvmlab.bisect.result import BisectResult, CommitEvidence, Outcome, StepRecord, Verdict
from kvmlab.bisect.seams import CommitInfo, IsTarget, Repository, Tag, Tester
from kvmlab.bisect.state import BisectInfraError, BisectUsageError, ReproFailedError

__all__ = [
    "POLICIES",
    "AdaptivePolicy",
    "BisectInfraError",
    "BisectResult",
    "BisectUsageError",
    "CommitEvidence",
    "CommitGraph",
    "CommitInfo",
    "GitRepository",
    "IsTarget",
    "JournalMismatchError",
    "LogWriter",
    "Outcome",
    "Policy",
    "RangeCommit",
    "Repository",
    "ReproFailedError",
    "StepRecord",
    "SyzbotPolicy",
    "Tag",
    "Tester",
    "Verdict",
    "bisect",
]
