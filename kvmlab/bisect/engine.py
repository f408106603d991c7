"""The bisection loop: tests commits through the seams and names the culprit.

Pure apart from the seams: every git question goes to the
:class:`~kvmlab.bisect.seams.Repository`, every build and VM run to the
:class:`~kvmlab.bisect.seams.Tester`, every line of the log to a
:class:`~kvmlab.bisect.log.LogWriter`, and every outcome to the journal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab.bisect import log as fmt
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.journal import Journal
from kvmlab.bisect.model import Observation, Posterior, information_gain, posterior
from kvmlab.bisect.policy import POLICIES, AdaptivePolicy, Policy, SyzbotPolicy
from kvmlab.bisect.result import BisectResult, CommitEvidence, Outcome, StepRecord, Verdict
from kvmlab.bisect.seams import IsTarget, Maintainers, Repository, Tester
from kvmlab.errors import InfraError, UserError
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus

log = logging.getLogger(__name__)

#: Infrastructure failures in a row on one commit before the bisection gives up.
MAX_INFRA_IN_A_ROW = 5

#: Run counts the adaptive policy considers for a commit it has not built yet.
_PLAN_RUNS = (1, 2, 3, 5, 8, 12, 20, 30)


class BisectUsageError(UserError):
    """The bisection was asked something it cannot do (bad range, missing good commit)."""


class BisectInfraError(InfraError):
    """The tester kept failing on kvmlab's side."""


class ReproFailedError(UserError):
    """The reproducer itself could not run on a commit (a run came back
    ``repro-failed``): no verdict can be drawn from it, so the bisection stops."""


@dataclass
class _Session:
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
    observer: Callable[[StepRecord], None] | None = None
    steps: list[StepRecord] = field(default_factory=list)

    def step(self, commit: str, verdict: Verdict, remaining: int,
             top: tuple[tuple[str, float], ...] = (), confidence: float | None = None) -> None:
        """Record what the engine believes after finishing with ``commit``."""
        rec = StepRecord(index=len(self.steps), commit=commit, verdict=verdict.value, remaining=remaining,
                         top=top, confidence=confidence, vm_runs=self.runs, builds=self.builds)
        self.steps.append(rec)
        if self.journal:
            self.journal.record_step(rec.to_json())
        if self.observer is not None:
            self.observer(rec)

    def ev(self, commit: str) -> CommitEvidence:
        if commit not in self.evidence:
            self.evidence[commit] = CommitEvidence(commit)
        return self.evidence[commit]

    def build(self, commit: str) -> BuildOutcome:
        """Build once per commit; logs ``testing commit`` (and a build failure)."""
        e = self.ev(commit)
        if e.build is None:
            b = self.journal.replay_build(commit) if self.journal else None
            if b is None:
                b = self.tester.build(commit)
                if self.journal:
                    self.journal.record_build(b)
            e.build = b
            self.builds += 1
        self.out(fmt.testing_line(commit, e.build.compiler))
        if e.build.status is BuildStatus.FAILED:
            self.out(fmt.build_failed_line(e.build.error))
        return e.build

    def matches(self, run: RunOutcome, *, on_bad: bool) -> bool:
        if not run.crashed:
            return False
        if self.is_target is not None:
            hit = self.is_target(run)
        elif self.target_title is None:
            hit = on_bad  # the first crash on the bad commit names the target
        else:
            hit = run.title == self.target_title
        if hit and self.target_title is None:
            self.target_title, self.target_report = run.title, run.report
        return hit

    def run(self, commit: str, n: int, *, on_bad: bool = False) -> list[RunOutcome]:
        """``n`` answered runs (infra failures are retried, not counted)."""
        e = self.ev(commit)
        assert e.build is not None and e.build.status is BuildStatus.OK
        got: list[RunOutcome] = []
        infra = 0
        while len(got) < n:
            batch: list[RunOutcome] = []
            replayed = self.journal.replay_run(commit) if self.journal else None
            if replayed is not None:
                batch = [replayed]
            else:
                batch = list(self.tester.test(e.build, n - len(got)))
                if not batch:
                    raise BisectInfraError(f"commit {commit}: the tester returned no runs")
            for r in batch:
                if replayed is None and self.journal:
                    self.journal.record_run(commit, r)
                r = _renumber(r, len(e.runs))
                e.runs.append(r)
                e.target.append(self.matches(r, on_bad=on_bad))
                if r.status is RunStatus.REPRO_FAILED:
                    raise ReproFailedError(
                        f"commit {commit}: the reproducer could not run (run #{r.index}): {r.detail}"
                    )
                if r.status is RunStatus.INFRA:
                    infra += 1
                    if infra >= MAX_INFRA_IN_A_ROW:
                        raise BisectInfraError(
                            f"commit {commit}: {infra} runs in a row failed on kvmlab's side: {r.detail}"
                        )
                    continue
                infra = 0
                got.append(r)
                self.runs += 1
        return got


def _renumber(r: RunOutcome, index: int) -> RunOutcome:
    if r.index == index:
        return r
    d = r.to_json()
    d["index"] = index
    d["duration"] = r.duration
    return RunOutcome.from_json(d)


def _show_runs(s: _Session, commit: str, since: int, counted_all: bool) -> None:
    e = s.ev(commit)
    s.out.many(fmt.run_lines(e.runs[since:], e.target[since:], counted_all=counted_all))


# ----------------------------------------------------------------- syzbot policy


@dataclass
class _SyzbotState:
    flaky: bool = False


def _syzbot_test(s: _Session, st: _SyzbotState, pol: SyzbotPolicy, commit: str, runs: int,
                 *, on_bad: bool = False) -> Verdict:
    """Test one commit by syzbot's rule: BAD means it crashed (any title)."""
    b = s.build(commit)
    if b.status is BuildStatus.FAILED:
        return Verdict.SKIP
    e = s.ev(commit)
    since = len(e.runs)
    got = s.run(commit, runs, on_bad=on_bad)
    _show_runs(s, commit, since, counted_all=True)
    crashes = sum(1 for r in got if r.crashed)
    oks = sum(1 for r in got if r.status is RunStatus.OK)
    if any(r.status is RunStatus.BOOT_FAILED for r in got):
        return Verdict.SKIP
    answered = crashes + oks
    if crashes >= max(2, runs // 6) and 2 * answered >= runs:
        if crashes < answered:
            st.flaky = True
        return Verdict.BAD
    need = 3 * runs / 4 if st.flaky else runs / 2
    if crashes == 0 and oks >= need:
        return Verdict.GOOD
    return Verdict.SKIP


def _syzbot_runs(st: _SyzbotState, pol: SyzbotPolicy) -> int:
    return pol.flaky_runs if st.flaky else pol.runs


def _syzbot_loop(s: _Session, st: _SyzbotState, pol: SyzbotPolicy, g: CommitGraph
                 ) -> tuple[Outcome, str | None, list[str]]:
    """git bisect with syzbot's verdicts. Bits: ``remaining`` = candidates."""
    remaining = g.all_mask
    known_changed = 1 << g.index[g.tip]
    skipped = 0
    while True:
        n = remaining.bit_count()
        choices = remaining & ~skipped & ~known_changed
        if n == 1:
            return Outcome.FOUND, g.members(remaining)[0], []
        if not choices:
            return Outcome.INCONCLUSIVE, None, g.members(remaining)
        best, best_score, best_reach = -1, -1, 0
        bits = choices
        while bits:
            low = bits & -bits
            i = low.bit_length() - 1
            bits ^= low
            reach = (g.closure[i] & remaining).bit_count()
            score = min(reach, n - reach)
            if score > best_score:
                best, best_score, best_reach = i, score, reach
        commit = g.commits[best].hash
        s.out(fmt.bisecting_line(max(0, n - best_reach - 1), fmt.estimate_steps(n)))
        s.out(fmt.next_line(commit, g.commits[best].subject))
        verdict = _syzbot_test(s, st, pol, commit, _syzbot_runs(st, pol))
        s.out(fmt.mark_line(verdict, commit, fix=s.fix))
        if verdict is Verdict.SKIP:
            skipped |= 1 << best
        elif (verdict is Verdict.BAD) != s.fix:
            remaining &= g.closure[best]
            known_changed |= 1 << best
        else:
            remaining &= ~g.closure[best]
        s.step(commit, verdict, remaining.bit_count())


# --------------------------------------------------------------- adaptive policy


def _observations(s: _Session, g: CommitGraph) -> list[Observation]:
    return [
        Observation(g.closure_of(c), e.target_crashes, e.oks)
        for c, e in s.evidence.items()
        if e.target_crashes or e.oks
    ]


def _untestable_bits(s: _Session, g: CommitGraph) -> int:
    bits = 0
    for c, e in s.evidence.items():
        if e.untestable and c in g.index:
            bits |= 1 << g.index[c]
    return bits


def _choose(post: Posterior, g: CommitGraph, s: _Session, pol: AdaptivePolicy, testable: int
            ) -> tuple[int, int, float]:
    """(commit index, runs, expected bits per VM run of the best *other* commit) of the
    best next test; index -1 if none.

    A commit already built costs one run per run; a new one also a build
    (``build_cost``), so for it the number of runs is chosen too. The value of
    a new commit depends only on P(it is in the crashing state), so only the
    few new commits nearest the best such probability are evaluated exactly.
    """
    # Commits that only split off the last 0.1% of the mass are not worth a run.
    mass = post.credible(0.999)
    live = [(bits, w) for bits, w in post.classes if w * bits.bit_count() > 1e-9]
    surv = {m: post.survival(m) for m in _PLAN_RUNS}
    eps_surv = {m: (1.0 - pol.eps) ** m for m in _PLAN_RUNS}

    def new_rate(q: float) -> tuple[float, int]:
        return max(
            (information_gain(q, surv[m], eps_surv[m]) / (m + pol.build_cost), m) for m in _PLAN_RUNS
        )

    best, best_runs, best_rate, second = -1, 0, 0.0, 0.0
    fresh: list[tuple[float, int]] = []
    for i in range(len(g.commits)):
        if not (testable >> i) & 1:
            continue
        # A non-merge commit outside the mass splits it exactly as its parent
        # does: test the parent instead (unless the parent cannot be tested).
        if not (mass >> i) & 1 and len(g.parent_bits[i]) == 1 and testable & g.parent_bits[i][0]:
            continue
        clo = g.closure[i]
        if not clo & mass or not mass & ~clo:
            continue
        q = sum(w * (bits & clo).bit_count() for bits, w in live if bits & clo)
        q_crash = 1.0 - q if s.fix else q
        e = s.evidence.get(g.commits[i].hash)
        if e is not None and e.build is not None:
            rate = information_gain(q_crash, surv[1], eps_surv[1])
            if rate > best_rate:
                best, best_runs, best_rate, second = i, 1, rate, best_rate
            else:
                second = max(second, rate)
        else:
            fresh.append((q_crash, i))
    if fresh:
        # The rate of a new commit is unimodal in q: find its peak on a grid, then
        # evaluate the new commits closest to it.
        grid = [k / 32 for k in range(1, 32)]
        q_star = max(grid, key=lambda q: new_rate(q)[0])
        fresh.sort(key=lambda t: (abs(t[0] - q_star), t[1]))
        for q_crash, i in fresh[:6]:
            rate, m = new_rate(q_crash)
            if rate > best_rate:
                best, best_runs, best_rate, second = i, m, rate, best_rate
            else:
                second = max(second, rate)
    return best, best_runs, second


def _top(post: Posterior, g: CommitGraph, n: int = 10) -> tuple[tuple[str, float], ...]:
    """The ``n`` most probable culprits with their probability, best first."""
    out: list[tuple[str, float]] = []
    for bits, w in sorted(post.classes, key=lambda c: -c[1]):
        for h in g.members(bits):
            if len(out) >= n:
                return tuple(out)
            out.append((h, w))
    return tuple(out)


def _adaptive_verdict(s: _Session, commit: str) -> Verdict:
    e = s.ev(commit)
    if e.target_crashes:
        return Verdict.BAD
    if e.untestable:
        return Verdict.SKIP
    return Verdict.GOOD


def _adaptive_loop(s: _Session, pol: AdaptivePolicy, g: CommitGraph
                   ) -> tuple[Outcome, str | None, list[str], float]:
    visiting: str | None = None
    since = 0
    runner_up = 0.0

    def close_visit() -> None:
        if visiting is not None:
            _show_runs(s, visiting, since, counted_all=False)
            verdict = _adaptive_verdict(s, visiting)
            s.out(fmt.mark_line(verdict, visiting, fix=s.fix))
            after = posterior(g.all_mask, _observations(s, g), fix=s.fix, eps=pol.eps)
            s.step(visiting, verdict, after.credible(0.99).bit_count(), _top(after, g), after.best()[1])

    while True:
        post = posterior(g.all_mask, _observations(s, g), fix=s.fix, eps=pol.eps)
        idx, conf = post.best()
        if conf >= pol.confidence:
            close_visit()
            return Outcome.FOUND, g.commits[idx].hash, [], conf
        testable = g.all_mask & ~_untestable_bits(s, g)
        pick, runs = -1, 0
        if s.runs < pol.max_runs and s.builds <= pol.max_builds:
            # Keep testing the commit at hand while one more run of it is worth
            # more than the best alternative was at the last full look (cheap),
            # else look at every commit again.
            if visiting is not None and visiting in g.index and runner_up > 0.0:
                q = post.crash_probability_of_state(g.closure_of(visiting))
                surv1 = post.survival(1)
                if information_gain(q, surv1, 1.0 - pol.eps) >= runner_up and not s.ev(visiting).untestable:
                    pick, runs = g.index[visiting], 1
            if pick < 0:
                pick, runs, runner_up = _choose(post, g, s, pol, testable)
            if pick >= 0 and s.ev(g.commits[pick].hash).build is None and s.builds >= pol.max_builds:
                pick = -1
        if pick < 0:
            close_visit()
            cands = g.members(post.credible(pol.confidence))
            return Outcome.INCONCLUSIVE, None, cands, conf
        commit = g.commits[pick].hash
        runs = min(runs, max(1, pol.max_runs - s.runs))
        if commit != visiting:
            close_visit()
            left = max(0, post.credible(0.99).bit_count() // 2 - 1)
            s.out(fmt.bisecting_line(left, fmt.estimate_steps(left + 1)))
            s.out(fmt.next_line(commit, g.commits[pick].subject))
            visiting, since = commit, len(s.ev(commit).runs)
            if s.build(commit).status is BuildStatus.FAILED:
                continue
        _run_until_crash(s, commit, runs, pol.chunk)


def _run_until_crash(s: _Session, commit: str, runs: int, chunk: int, *, on_bad: bool = False) -> None:
    """Up to ``runs`` runs, stopping after the first target crash or boot failure."""
    done = 0
    while done < runs:
        got = s.run(commit, min(chunk, runs - done), on_bad=on_bad)
        done += len(got)
        e = s.ev(commit)
        if any(e.target[-len(got):]) or any(r.status is RunStatus.BOOT_FAILED for r in got):
            return


def _adaptive_settle(s: _Session, pol: AdaptivePolicy, commit: str) -> Verdict:
    """Test a release until it crashes or P(it has the bug) falls below 1 - release_confidence,
    using what the bad commit taught about the crash rate."""
    if s.build(commit).status is BuildStatus.FAILED:
        return Verdict.SKIP
    e = s.ev(commit)
    since = len(e.runs)
    while e.target_crashes == 0 and not e.untestable and len(e.runs) - since < pol.release_max_runs:
        # Every other commit tested so far crashed (the bad one, newer releases):
        # they tell the crash rate p; then P(bad | n OK runs) from a prior of 1/2.
        obs = [Observation(1, x.target_crashes, x.oks)
               for c, x in s.evidence.items() if (x.target_crashes or x.oks) and c != commit]
        post = posterior(1, obs, fix=False, eps=pol.eps)
        stay = post.survival(e.oks)
        q = stay / (stay + (1 - pol.eps) ** e.oks)
        if q <= 1.0 - pol.release_confidence:
            break
        _run_until_crash(s, commit, 1, pol.chunk)
    _show_runs(s, commit, since, counted_all=False)
    if e.target_crashes:
        return Verdict.BAD
    if e.untestable:
        return Verdict.SKIP
    return Verdict.GOOD if len(e.runs) - since < pol.release_max_runs else Verdict.SKIP


# ------------------------------------------------------------------------ driver


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
    s = _Session(tester=tester, journal=jr, out=out, fix=fix, is_target=is_target, observer=observer)
    try:
        return _bisect(repo, s, pol, bad_h, good_h, release_floor)
    finally:
        if jr is not None:
            jr.close()


def _result(s: _Session, pol: Policy, outcome: Outcome, bad: str, good: str | None, **kw: object
            ) -> BisectResult:
    r = BisectResult(outcome=outcome, fix=s.fix, policy=pol.name, bad=bad, good=good,
                     target_title=s.target_title, evidence=s.evidence, builds=s.builds, steps=list(s.steps))
    for k, v in kw.items():
        setattr(r, k, v)
    r.build_seconds = sum(e.build.duration for e in s.evidence.values() if e.build is not None)
    r.test_seconds = sum(x.duration for e in s.evidence.values() for x in e.runs)
    return r


def _bisect(repo: Repository, s: _Session, pol: Policy, bad: str, good: str | None,
            floor: str | None) -> BisectResult:
    st = _SyzbotState()
    s.out(fmt.start_line(bad, fix=s.fix))
    if isinstance(pol, SyzbotPolicy):
        reproduced = _syzbot_test(s, st, pol, bad, pol.first_runs, on_bad=True) is Verdict.BAD
    else:
        reproduced = False
        if s.build(bad).status is BuildStatus.OK:
            e = s.ev(bad)
            _run_until_crash(s, bad, pol.repro_runs, pol.chunk, on_bad=True)
            _show_runs(s, bad, 0, counted_all=False)
            reproduced = e.target_crashes > 0
    if not reproduced:
        msg = f"the crash did not reproduce on the bad commit {bad}"
        s.out(msg)
        return _finish(repo, s, pol, _result(s, pol, Outcome.NO_REPRO, bad, good, message=msg))
    if good is None:
        good = _find_good_release(repo, s, pol, st, bad, floor)
        if good is None:
            msg = "the oldest tested release already had the bug"
            s.out(msg)
            return _finish(repo, s, pol, _result(s, pol, Outcome.OLDEST_RELEASE_BAD, bad, None, message=msg))
    g = repo.graph(good, [bad]) if s.fix else repo.graph(bad, [good])
    s.out(fmt.bisect_start_line(bad, good, fix=s.fix))
    confidence: float | None = None
    if isinstance(pol, SyzbotPolicy):
        outcome, culprit, cands = _syzbot_loop(s, st, pol, g)
    else:
        outcome, culprit, cands, confidence = _adaptive_loop(s, pol, g)
    res = _result(s, pol, outcome, bad, good, culprit=culprit,
                  candidates=cands or ([culprit] if culprit else []), confidence=confidence)
    if culprit is not None:
        res.message = f"first {'fixed' if s.fix else 'bad'} commit: {culprit} {g.subject(culprit)}"
        res.warnings = _warnings(repo, s, g, culprit)
    else:
        res.message = f"inconclusive: the culprit is one of {len(cands)} commits"
    return _finish(repo, s, pol, res, g)


def _find_good_release(repo: Repository, s: _Session, pol: Policy, st: _SyzbotState, bad: str,
                       floor: str | None) -> str | None:
    tags = [t for t in repo.release_tags(bad, floor) if t.commit != bad]
    if not tags:
        raise BisectUsageError(f"no good commit given and no release tag (vX.Y) below {bad[:12]}")
    for tag in tags:
        s.out(fmt.testing_release_line(tag.name))
        if isinstance(pol, SyzbotPolicy):
            v = _syzbot_test(s, st, pol, tag.commit, _syzbot_runs(st, pol))
        else:
            v = _adaptive_settle(s, pol, tag.commit)
        if v is Verdict.GOOD:
            return tag.commit
    return None


def _warnings(repo: Repository, s: _Session, g: CommitGraph, culprit: str) -> list[str]:
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


def _finish(repo: Repository, s: _Session, pol: Policy, res: BisectResult, g: CommitGraph | None = None
            ) -> BisectResult:
    counted_all = isinstance(pol, SyzbotPolicy)
    lines: list[str] = []
    tested = fmt.totals_line(res.commits_tested, res.build_seconds, res.test_seconds)
    if res.outcome is Outcome.FOUND and res.culprit is not None:
        info = repo.commit_info(res.culprit)
        lines += fmt.culprit_lines(info, fix=s.fix)
        lines.append(tested)
        maintainers = repo.maintainers(res.culprit) if isinstance(repo, Maintainers) else []
        lines += fmt.first_commit_lines(info, fix=s.fix, maintainers=maintainers)
        title, report = _crash_for(s, res.culprit)
        lines += fmt.crash_lines(title, report)
    elif res.outcome is Outcome.INCONCLUSIVE and g is not None:
        lines += fmt.candidates_lines([(c, g.subject(c)) for c in res.candidates[:50]], fix=s.fix)
        if len(res.candidates) > 50:
            lines.append(f"... and {len(res.candidates) - 50} more")
        lines.append(tested)
    else:
        lines.append(tested)
    lines += fmt.kvmlab_lines(policy=pol.name, confidence=res.confidence, vm_runs=res.vm_runs,
                              builds=res.builds, uncounted=res.uncounted_crashes, counted_all=counted_all)
    lines += res.warnings
    s.out.many(lines)
    return res


def _crash_for(s: _Session, culprit: str) -> tuple[str | None, str]:
    """The target crash to show: one seen on the culprit if any, else the bad commit's."""
    for c in (culprit, *s.evidence):
        e = s.evidence.get(c)
        if e is None:
            continue
        for r, t in zip(e.runs, e.target, strict=True):
            if t:
                return r.title, r.report
    return s.target_title, s.target_report

