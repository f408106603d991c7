"""The bisection driver: tests commits through the seams and names the culprit.

Pure apart from the seams: every git question goes to the
:class:`~kvmlab.bisect.seams.Repository`, every build and VM run to the
:class:`~kvmlab.bisect.seams.Tester` (through a
:class:`~kvmlab.bisect.state.Session`), every line of the log to a
:class:`~kvmlab.bisect.log.LogWriter`, and every outcome to the journal. The
policies' loops live in :mod:`kvmlab.bisect.syzbot` and
:mod:`kvmlab.bisect.adaptive`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kvmlab.bisect import log as fmt
from kvmlab.bisect import relevant, syzbot
from kvmlab.bisect.adaptive import AdaptiveBisection, release_doubt, settle_release
from kvmlab.bisect.confirm import confirm, crashed_with_the_bug, rate_steps
from kvmlab.bisect.confirm import summary_lines as confirm_lines
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.journal import Journal
from kvmlab.bisect.policy import POLICIES, AdaptivePolicy, Policy, SyzbotPolicy
from kvmlab.bisect.result import BisectResult, Outcome, StepRecord, Verdict
from kvmlab.bisect.seams import IsTarget, Maintainers, Repository, Reverts, Tag, Tester
from kvmlab.bisect.state import BisectInfraError, BisectUsageError, ReproFailedError, Session
from kvmlab.bisect.timing import Stopwatch
from kvmlab.outcome import BuildStatus

__all__ = ["BisectInfraError", "BisectUsageError", "ReproFailedError", "bisect"]


def bisect(
    repo: Repository,
    tester: Tester,
    *,
    bad: str,
    good: str | None = None,
    fix: bool = False,
    policy: str | Policy = "adaptive",
    is_target: IsTarget | None = None,
    journal: Path | None = None,
    log: fmt.LogWriter | None = None,
    release_floor: str | None = None,
    observer: Callable[[StepRecord], None] | None = None,
    verify: bool = True,
    stopwatch: Stopwatch | None = None,
    relevance: bool = True,
) -> BisectResult:
    """Find the first commit that introduced the crash (or, with ``fix``, the first
    one where it is gone).

    ``bad`` is a commit that crashes; ``good`` one that does not: an ancestor of
    ``bad`` for a cause bisection, a descendant for a fix bisection. Without
    ``good`` (cause only), release tags reachable from ``bad`` are tested newest
    first down to ``release_floor`` until one is good. ``is_target`` says which
    crashes are the bug (default: the title of the first crash on ``bad``).
    ``journal``: a JSON-lines file of every outcome; an existing one is replayed
    first, so a killed bisection resumes without re-testing. Crashes are results;
    only kvmlab's and the host's failures raise (:class:`BisectInfraError` when
    the tester keeps failing, :class:`BisectUsageError` on a bad request).
    ``observer`` is called with a :class:`StepRecord` after every tested commit
    of the range (the same records are journaled and kept in the result).
    ``verify``: once a culprit is named, revert it on the bad commit (apply a
    fix) and test that (:mod:`kvmlab.bisect.confirm`), when the repository can;
    and while bisecting, test a likely culprit so
    (:attr:`~kvmlab.bisect.policy.AdaptivePolicy.revert_probes`).
    ``stopwatch``: the job's, started when the job did (default: started
    now); the closing block's ``total time`` is its wall time, split into
    build, test, VM idle and waiting (:mod:`kvmlab.bisect.timing`).
    ``relevance``: bisect only over the commits that can change the kernel
    (their diff touches a file the builds read, :mod:`kvmlab.bisect.relevant`),
    when the repository and the tester can tell; and count two commits whose
    builds are the same kernel binary as one test.
    """
    pol = POLICIES[policy] if isinstance(policy, str) else policy
    if isinstance(policy, str) and policy not in POLICIES:
        raise BisectUsageError(f"{policy}: unknown bisection policy (choose from {', '.join(POLICIES)})")
    out = log if log is not None else fmt.LogWriter()
    bad_h = repo.resolve(bad)
    good_h = repo.resolve(good) if good is not None else None
    if fix and good_h is None:
        raise BisectUsageError("a fix bisection needs a good commit (one where the bug is gone)")
    if good_h is not None:
        old, new = (bad_h, good_h) if fix else (good_h, bad_h)
        if old == new or not repo.is_ancestor(old, new):
            what = "good" if not fix else "bad"
            raise BisectUsageError(
                f"{what} commit {old[:12]} is not an ancestor of {new[:12]}: nothing to bisect between them"
            )
    header = {"bad": bad_h, "good": good_h, "fix": fix, "policy": pol.name}
    jr = Journal(journal, header) if journal is not None else None
    s = Session(tester=tester, journal=jr, out=out, fix=fix, is_target=is_target, observer=observer,
                stopwatch=stopwatch if stopwatch is not None else Stopwatch(), same_kernel=relevance)
    try:
        return _bisect(repo, s, pol, bad_h, good_h, release_floor, verify, relevance)
    finally:
        if jr is not None:
            jr.close()


def _result(s: Session, pol: Policy, outcome: Outcome, bad: str, good: str | None, **kw: object
            ) -> BisectResult:
    r = BisectResult(outcome=outcome, fix=s.fix, policy=pol.name, bad=bad, good=good,
                     target_title=s.target_title, evidence=s.evidence, builds=s.builds, steps=list(s.steps))
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _bisect(repo: Repository, s: Session, pol: Policy, bad: str, good: str | None,
            floor: str | None, verify: bool, relevance: bool) -> BisectResult:
    st = syzbot.SyzbotState()
    s.out(fmt.start_line(bad, fix=s.fix))
    if isinstance(pol, SyzbotPolicy):
        reproduced = syzbot.judge_commit(s, st, pol, bad, pol.first_runs, on_bad=True) is Verdict.BAD
    else:
        reproduced = False
        if s.build(bad).status is BuildStatus.OK:
            e = s.ev(bad)
            runs = -(-pol.repro_runs // pol.chunk) * pol.chunk if pol.plan_in_batches else pol.repro_runs
            s.run_until_crash(bad, runs, pol.chunk, on_bad=True)
            s.show_runs(bad, 0, counted_all=False)
            reproduced = e.target_crashes > 0
            if reproduced and pol.rate_batch and e.oks == 0:
                since = len(e.runs)
                s.out(fmt.rate_batch_line(bad, e.target_crashes, pol.chunk))
                s.run(bad, pol.chunk, on_bad=True)
                s.show_runs(bad, since, counted_all=False)
    if not reproduced:
        msg = f"the crash did not reproduce on the bad commit {bad}"
        if s.ev(bad).untestable:
            msg += f" ({s.untestable_line(bad).partition(': ')[2]})"
        s.out(msg)
        return _finish(repo, s, pol, _result(s, pol, Outcome.NO_REPRO, bad, good, message=msg))
    ladder: list[Tag] = []
    unsettled = False
    if good is None:
        ladder = [t for t in repo.release_tags(bad, floor) if t.commit != bad]
        if not ladder:
            raise BisectUsageError(f"no good commit given and no release tag (vX.Y) below {bad[:12]}")
        good, unsettled = _find_good_release(s, pol, st, ladder)
        if good is None:
            return _oldest_release_bad(repo, s, pol, bad)
    while True:
        g = repo.graph(good, [bad]) if s.fix else repo.graph(bad, [good])
        rel = relevant.fold_range(repo, s, g) if relevance else None
        if rel is not None:
            g, summary = rel
        s.out(fmt.bisect_start_line(bad, good, fix=s.fix))
        background = 0.0
        if isinstance(pol, SyzbotPolicy):
            outcome, culprit, cands = syzbot.loop(s, st, pol, g)
            res = _result(s, pol, outcome, bad, good, culprit=culprit,
                          candidates=cands or ([culprit] if culprit else []))
            break
        probes = repo if verify and isinstance(repo, Reverts) else None
        d = AdaptiveBisection(s, pol, g, reverts=probes, bad=bad).run()
        tag = next((t for t in ladder if t.commit == good), None)
        still_good = tag is None or not unsettled or _release_still_good(repo, s, pol, tag, d.culprit)
        if not still_good and tag is not None:
            # The bisection started from a release that has the bug after
            # all: go on down the ladder; every run so far still counts.
            good, unsettled = _find_good_release(s, pol, st, ladder[ladder.index(tag) + 1:])
            if good is None:
                return _oldest_release_bad(repo, s, pol, bad)
            continue
        culprit, background = d.culprit, d.background
        cands = [culprit] if culprit else list(d.probabilities)
        res = _result(s, pol, d.outcome, bad, good, culprit=culprit, candidates=cands,
                      confidence=d.confidence, probabilities=d.probabilities, confidence_goal=d.goal)
        if d.outcome is Outcome.INCONCLUSIVE:
            why = (f"the budget ran out ({s.runs} VM runs, {s.builds} builds) before any commit reached "
                   f"{d.goal:.3g}" if d.budget_spent else d.unsettled_note or
                   "no testable commit can tell the remaining candidates apart")
            res.message = f"inconclusive: {why}: the culprit is one of {len(cands)} commits"
        break
    if culprit is not None:
        res.message = f"first {'fixed' if s.fix else 'bad'} commit: {culprit} {g.subject(culprit)}"
        if verify:
            chunk = pol.chunk if isinstance(pol, AdaptivePolicy) else pol.runs
            res.confirmations = confirm(repo, s, culprit=culprit, bad=bad, chunk=chunk, background=background)
            _account(s, res)
        res.warnings = (_warnings(repo, s, g, culprit) + rate_steps(s, g, culprit)
                        + confirm_lines(res.confirmations))
        if rel is not None and culprit in summary.irrelevant:  # only the tip can be: it is kept
            res.warnings.append("warning: the culprit changes no file the build reads: it cannot have "
                                "changed the kernel, the result is likely wrong")
    elif not res.message:
        res.message = f"inconclusive: the culprit is one of {len(res.candidates)} commits"
    if rel is not None:
        res.relevance = summary
    return _finish(repo, s, pol, res, g)


def _account(s: Session, res: BisectResult) -> None:
    """Count the confirmation's builds in the totals."""
    res.builds = s.builds


def _find_good_release(s: Session, pol: Policy, st: syzbot.SyzbotState, tags: list[Tag]
                       ) -> tuple[str | None, bool]:
    """The newest release of ``tags`` without the bug, by the policy's rule, and
    whether it is still to be settled: the adaptive policy starts from a
    release at ``release_first_confidence``; :func:`_release_still_good`
    settles it after the bisection."""
    for tag in tags:
        s.out(fmt.testing_release_line(tag.name))
        if isinstance(pol, SyzbotPolicy):
            v = syzbot.judge_commit(s, st, pol, tag.commit, st.runs(pol))
        else:
            v = settle_release(s, pol, tag.commit, confidence=min(pol.release_first_confidence,
                                                                   pol.release_confidence))
            q = release_doubt(s, pol, tag.commit)
            if v is Verdict.GOOD and q > 1.0 - pol.release_confidence:
                runs = fmt.clean_runs(s.ev(tag.commit).oks)
                s.out(f"kvmlab: release {tag.name}: {runs}, P(it has the bug) = {q:.2f}: bisecting from it; "
                      f"it is settled at {1 - pol.release_confidence:.2f} after the bisection, with the "
                      "bug's rate the bisection saw")
                return tag.commit, True
        if v is Verdict.GOOD:
            return tag.commit, False
    return None, False


def _release_still_good(repo: Repository, s: Session, pol: AdaptivePolicy, tag: Tag, culprit: str | None
                        ) -> bool:
    """Settle the release the bisection started from at ``release_confidence``,
    with the bug's rate as the commits with the bug (by ``culprit``, when one
    was named) showed it."""
    rate_from = crashed_with_the_bug(repo, s, culprit) if culprit is not None else None
    if release_doubt(s, pol, tag.commit, rate_from) > 1.0 - pol.release_confidence:
        s.out(fmt.release_again_line(tag.name, s.ev(tag.commit).oks, pol.release_confidence))
    v = settle_release(s, pol, tag.commit, rate_from=rate_from)
    if v is Verdict.GOOD:
        runs = fmt.clean_runs(s.ev(tag.commit).oks)
        q = release_doubt(s, pol, tag.commit, rate_from)
        s.out(f"kvmlab: release {tag.name}: {runs}, P(it has the bug) = {q:.2f} with the bug's rate the "
              "bisection saw: good")
    elif v is Verdict.BAD:
        s.out(f"release {tag.name} has the bug after all: bisecting again from an older release")
    else:
        s.out(f"release {tag.name} could not be settled as good: bisecting again from an older release")
    return v is Verdict.GOOD


def _oldest_release_bad(repo: Repository, s: Session, pol: Policy, bad: str) -> BisectResult:
    msg = "the oldest tested release already had the bug"
    s.out(msg)
    return _finish(repo, s, pol, _result(s, pol, Outcome.OLDEST_RELEASE_BAD, bad, None, message=msg))


def _warnings(repo: Repository, s: Session, g: CommitGraph, culprit: str) -> list[str]:
    out = []
    if g.is_merge(culprit):
        out.append("warning: the culprit is a merge commit: the bug may come from how its parents "
                   "combine rather than from one change")
    tags = [t.name for t in repo.release_tags(culprit) if t.commit == culprit]
    if tags:
        out.append(f"warning: the culprit is a release commit ({', '.join(tags)}): "
                   "releases usually only change the version, the result is suspect")
    mine = s.evidence.get(culprit)
    digest = mine.build.artifacts.get("kernel_sha256") if mine and mine.build else None
    if digest:
        parents = g.commits[g.index[culprit]].parents
        for p in parents:
            pe = s.evidence.get(p)
            if pe and pe.build and pe.build.artifacts.get("kernel_sha256") == digest:
                out.append(f"warning: the culprit builds to the same kernel binary as its parent {p[:12]}: "
                           "it cannot have changed the kernel's behaviour, the result is likely wrong")
    return out


def _finish(repo: Repository, s: Session, pol: Policy, res: BisectResult, g: CommitGraph | None = None
            ) -> BisectResult:
    counted_all = isinstance(pol, SyzbotPolicy)
    lines: list[str] = []
    res.time = s.stopwatch.split()
    tested = fmt.totals_line(res.commits_tested, res.time)
    if res.outcome is Outcome.FOUND and res.culprit is not None:
        info = repo.commit_info(res.culprit)
        lines += fmt.culprit_lines(info, fix=s.fix)
        lines.append(tested)
        maintainers = repo.maintainers(res.culprit) if isinstance(repo, Maintainers) else []
        lines += fmt.first_commit_lines(info, fix=s.fix, maintainers=maintainers)
        title, report = _crash_for(s, res.culprit)
        lines += fmt.crash_lines(title, report)
    elif res.outcome is Outcome.INCONCLUSIVE and g is not None:
        lines.append(res.message)
        lines += fmt.candidates_lines([(c, g.subject(c)) for c in res.candidates[:50]], fix=s.fix)
        if len(res.candidates) > 50:
            lines.append(f"... and {len(res.candidates) - 50} more")
        lines.append(tested)
        lines += fmt.probability_lines(res.probabilities)
    else:
        lines.append(tested)
    lines += fmt.kvmlab_lines(policy=pol.name, confidence=res.confidence, vm_runs=res.vm_runs,
                              builds=res.builds, uncounted=res.uncounted_crashes, counted_all=counted_all)
    lines += res.warnings
    s.out.many(lines)
    return res


def _crash_for(s: Session, culprit: str) -> tuple[str | None, str]:
    """The target crash to show: one seen on the culprit if any, else the bad commit's."""
    for c in (culprit, *s.evidence):
        e = s.evidence.get(c)
        if e is None:
            continue
        for r, t in zip(e.runs, e.target, strict=True):
            if t:
                return r.title, r.report
    return s.target_title, s.target_report

