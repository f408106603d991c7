"""The bisection range cut down to the commits that can change the kernel.

After the first builds (the bad commit, the releases tested), the tester knows
which tree files the kernel is built from (:class:`~kvmlab.bisect.seams.BuildInputs`)
and the repository which files each commit changes
(:class:`~kvmlab.bisect.seams.ChangedPaths`). A commit whose changes touch
none of them (:class:`kvmlab.kernel.relevance.BuildFiles`) builds the same
kernel as its parent: it is folded into its parents
(:func:`kvmlab.bisect.graph.fold`), so it is never built, never run and never
named the culprit, and the policy bisects over the rest.
"""

from __future__ import annotations

import logging

from kvmlab.bisect.graph import CommitGraph, fold
from kvmlab.bisect.result import RangeRelevance
from kvmlab.bisect.seams import BuildInputs, ChangedPaths, Repository
from kvmlab.bisect.state import Session
from kvmlab.kernel.relevance import BuildFiles
from kvmlab.outcome import BuildStatus

log = logging.getLogger(__name__)


def build_files(s: Session) -> BuildFiles | None:
    """The files every successful build of the bisection so far read (their
    union: a file built at the bad commit or at the good one is relevant);
    None when the tester cannot tell."""
    if not isinstance(s.tester, BuildInputs):
        return None
    files: frozenset[str] | None = None
    for e in s.evidence.values():
        if e.build is None or e.build.status is not BuildStatus.OK:
            continue
        got = s.tester.build_inputs(e.build)
        if got is not None:
            files = got if files is None else files | got
    return None if files is None else BuildFiles(files)


def classify(g: CommitGraph, changed: dict[str, frozenset[str]], files: BuildFiles) -> list[str]:
    """The commits of ``g`` that cannot change the kernel, parents first. A
    commit the repository said nothing about is kept (relevant)."""
    return [c.hash for c in g.commits if c.hash in changed and not files.touches(changed[c.hash])]


def fold_range(repo: Repository, s: Session, g: CommitGraph) -> tuple[CommitGraph, RangeRelevance] | None:
    """``g`` without the commits that cannot change the kernel, and the
    figures the log and the JSON give; None (and a log line saying why) when
    relevance cannot be known: every commit stays a candidate."""
    files = build_files(s)
    if files is None or not isinstance(repo, ChangedPaths):
        why = "the repository cannot list changed files" if not isinstance(repo, ChangedPaths) else \
            "no build listed the files it read"
        s.out(f"kvmlab: relevance to the build unknown ({why}): bisecting all {len(g)} commits")
        return None
    irrelevant = classify(g, repo.changed_paths(g.tip, g.boundary), files)
    folded = fold(g, set(c.hash for c in g.commits) - set(irrelevant))
    summary = RangeRelevance(commits=len(g), relevant=len(g) - len(irrelevant), build_files=len(files.files),
                             irrelevant=tuple(irrelevant))
    s.out(f"kvmlab: {summary.relevant} of {summary.commits} commits in the range are relevant to the build "
          f"(they change one of the {summary.build_files} files it reads, a Kconfig, a Makefile or "
          "scripts/); the others build their parent's kernel and are not tested")
    log.info("folded %d commits that change no build file into their parents", len(irrelevant))
    return folded, summary
