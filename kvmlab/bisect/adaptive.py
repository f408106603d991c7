"""The adaptive policy: Bayesian bisection with per-commit crash rates.

:class:`AdaptiveBisection` answers two questions at any point of a bisection —
*what do we believe now* (:meth:`~AdaptiveBisection.belief`, a
:class:`~kvmlab.bisect.model.Belief`) and *what would we test next*
(:meth:`~AdaptiveBisection.options`, ranked by expected information per cost;
or a likely culprit reverted on the bad commit, :meth:`~AdaptiveBisection.probe`) —
and :meth:`~AdaptiveBisection.run` loops over them until one commit holds the
asked-for confidence, or no test can help, or the budget is spent.

The log stays truthful: ``# git bisect good`` only for a commit whose
probability of having the bug is at most 1 - confidence; a commit left
between the two gets a ``no verdict yet`` line, and a commit tested again says
why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from kvmlab.bisect import log as fmt
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.model import Belief, Observation, near_mask
from kvmlab.bisect.planner import Option, horizon, near_probability, plan_value, rank, survival_curve
from kvmlab.bisect.policy import AdaptivePolicy
from kvmlab.bisect.result import CommitEvidence, Outcome, Verdict
from kvmlab.bisect.seams import Prebuilds, Reverts
from kvmlab.bisect.state import Session
from kvmlab.outcome import BuildStatus
from kvmlab.text import counted

#: Commits pre-built per likely outcome of a test (overlapped builds).
PER_OUTCOME = 2

#: Expected bits per unit of cost below which no test is worth running.
#: Kept low: a higher floor stops inconclusive bisections sooner, but right
#: answers pass through stretches as low (bg-jitter 2%, p = 0.3,
#: 60 histories, ``--seed 11``: 1e-4 took 905 -> 825 VM runs per bisection
#: and 49 -> 48 named right: 4 of the 8 inconclusive stopped 270-1,600 runs
#: sooner, and one named right at 1,297 runs stopped inconclusive at 1,081).
MIN_VALUE = 1e-6
#: A commit judged unable to settle is judged again once the session's runs
#: have grown by this fraction (the other commits' runs change the answer).
RECHECK = 0.2
#: A commit already built in the background is preferred when its value is
#: within this fraction of the best option's.
PREFER_BUILT = 0.05


@dataclass
class Decision:
    """How an adaptive bisection ended."""

    outcome: Outcome
    culprit: str | None
    confidence: float
    probabilities: dict[str, float]
    """The culprit and its runners-up, or an inconclusive range's credible set."""
    budget_spent: bool = False
    background: float = 0.0
    """Estimated rate of the target's title on commits without the bug."""
    goal: float = 0.0
    """The confidence the culprit had to reach (raised by a background crash)."""
    unsettled_note: str = ""
    """Why the bisection stopped before the budget was spent, when more runs
    on the commit it was testing could not settle that commit."""


@dataclass(frozen=True)
class Probe:
    """A likely culprit tested reverted on the bad commit (for a fix
    bisection: applied on it): the tree has the bug unless ``change`` is
    the culprit."""

    change: str
    closure: int
    """Candidates the tree contains (the bad commit's, less ``change``; a fix: plus it)."""
    near: int
    """Candidates for which the tree crashes near the culprit (:func:`near_mask`)."""
    runs: int
    value: float
    """Expected bits about the culprit per unit of cost, as :class:`Option`'s."""
    q_change: float
    """P(``change`` is the culprit)."""


@dataclass
class _Visit:
    commit: str
    since: int
    """Index of the commit's first run of this visit."""
    crashes: int = 0
    """Target crashes the commit had when its last plan began."""


@dataclass
class AdaptiveBisection:
    """The adaptive policy over one range ``g``, testing through ``s``."""

    s: Session
    pol: AdaptivePolicy
    g: CommitGraph
    marks: dict[str, str] = field(default_factory=dict)
    """The last verdict the log gave each commit (``good``/``bad``/``skip``/``undecided``)."""
    goal: float = 0.0
    """The confidence the culprit must reach: the policy's, or its
    ``background_confidence`` once a background crash was seen."""
    asked_again: dict[str, int] = field(default_factory=dict)
    """Culprits held at the goal on too few crashes, and the crashes the log
    said each must show (said again only when that number grows)."""
    checked: dict[str, tuple[int, bool]] = field(default_factory=dict)
    """Commits judged by :meth:`worth_testing`: (the session's runs then, the answer)."""
    high: tuple[int, float] = (0, 0.0)
    """(the session's runs then, the best culprit's posterior) when that posterior was last at a new high."""
    reverts: Reverts | None = None
    """The repository, when likely culprits may be tested reverted on ``bad`` (:meth:`probe`)."""
    bad: str = ""
    probes: dict[str, Probe] = field(default_factory=dict)
    """The commits made for probes (a change reverted on ``bad``), by hash."""
    probe_of: dict[str, str] = field(default_factory=dict)
    """The commit made for each change probed (or "" when its revert does not apply or build)."""

    # -- what do we believe now ------------------------------------------

    def observations(self) -> list[Observation]:
        out = []
        n, distance = len(self.g), self.pol.model.near
        for c, e in self.s.evidence.items():
            if not (e.target_crashes or e.oks):
                continue
            probe = self.probes.get(c)
            if probe is not None:
                base = self.s.ev(self.bad)
                out.append(Observation(probe.closure, e.target_crashes, e.oks, probe.near,
                                       tied=(base.target_crashes, base.oks)))
                continue
            if c in self.s.made:  # a confirmation's commit of an earlier attempt: not this range's
                continue
            i = self.g.index.get(c)
            clo = self.g.closure_of(c)
            near = 0 if i is None else near_mask(clo, i, n, distance, fix=self.s.fix)
            out.append(Observation(clo, e.target_crashes, e.oks, near))
        return out

    def belief(self) -> Belief:
        return Belief(self.pol.model, self.g.all_mask, self.observations(), fix=self.s.fix)

    def top(self, b: Belief, n: int = 10) -> tuple[tuple[str, float], ...]:
        """The ``n`` most probable culprits with their probability, best first."""
        out: list[tuple[str, float]] = []
        for bits, w in b.ranked():
            for h in self.g.members(bits):
                if len(out) >= n:
                    return tuple(out)
                out.append((h, w))
        return tuple(out)

    def commit_state(self, b: Belief, commit: str) -> tuple[float, float]:
        """(P(the commit is in the crashing state), its estimated rate if it is)."""
        e = self.s.ev(commit)
        i = self.g.index[commit]
        near = near_probability(b, self.g, i)
        return b.crash_probability(self.g.closure[i]), b.rate(e.target_crashes, e.oks, near)

    # -- what would we test next -----------------------------------------

    def testable(self) -> int:
        bits = self.g.all_mask
        for c, e in self.s.evidence.items():
            if e.untestable and c in self.g.index:
                bits &= ~(1 << self.g.index[c])
        return bits

    def built(self) -> dict[int, tuple[int, int]]:
        return {self.g.index[c]: (e.target_crashes, e.oks) for c, e in self.s.evidence.items()
                if c in self.g.index and e.build is not None and e.build.status is BuildStatus.OK}

    def options(self, b: Belief, current: str | None = None) -> list[Option]:
        """Every test worth running now, best first (builds beyond the budget
        excluded). A commit built in the background comes first when its value
        is within :data:`PREFER_BUILT` of the best."""
        opts = rank(b, self.g, testable=self.testable(), built=self.built(), build_cost=self.pol.build_cost,
                    current=self.g.index.get(current) if current else None, switch_cost=self.pol.switch_cost,
                    batch=self.pol.chunk if self.pol.plan_in_batches else 1)
        if self.s.builds >= self.pol.max_builds:
            opts = [o for o in opts if o.built]
        opts = [o for o in opts if o.value > MIN_VALUE]
        ready = self.s.tester.prebuilt() if isinstance(self.s.tester, Prebuilds) else frozenset()
        if opts and ready and not opts[0].built:
            near_best = [o for o in opts if self.g.commits[o.index].hash in ready
                         and o.value >= (1.0 - PREFER_BUILT) * opts[0].value]
            if near_best:
                opts.remove(near_best[0])
                opts.insert(0, near_best[0])
        return opts

    # -- the loop ----------------------------------------------------------

    def run(self) -> Decision:
        """Test until one commit holds the confidence, no test can help, or the
        budget is spent. Each chosen plan (a commit, up to N runs stopping at
        the first target crash) is carried out before the next choice."""
        visit: _Visit | None = None
        self.goal = self.goal or self.pol.confidence
        while True:
            b = self.belief()
            self._raise_goal(b)
            idx, conf = b.best()
            if conf > self.high[1]:
                self.high = (self.s.runs, conf)
            budget = self.s.runs < self.pol.max_runs and self.s.builds <= self.pol.max_builds
            again = None
            if conf >= self.goal:
                culprit = self.g.commits[idx].hash
                if not budget or not self._needs_another_crash(culprit):
                    self._close(visit, b)
                    return Decision(Outcome.FOUND, culprit, conf, dict(self.top(b, 5)),
                                    background=b.background_rate(), goal=self.goal)
                again = culprit
            opts = self.options(b, visit.commit if visit else None) if budget and again is None else []
            unsettled = None
            if opts and opts[0].built and not self.worth_testing(opts[0].index):
                unsettled, opts = self.g.commits[opts[0].index].hash, []
            probe = self.probe(b, opts[0].value if opts else 0.0) if budget and again is None else None
            if probe is not None:
                self._close(visit, b)
                visit = None
                self._test_probe(probe)
                continue
            if unsettled is not None:
                self._close(visit, b)
                return self._inconclusive(b, budget_spent=False, unsettled=unsettled)
            if not opts and again is None:
                self._close(visit, b)
                return self._inconclusive(b, budget_spent=not budget)
            pick = again or self.g.commits[opts[0].index].hash
            if again is not None:
                e = self.s.ev(again)
                wanted = self._crashes_wanted(e)
                if self.asked_again.get(again) != wanted:
                    self.asked_again[again] = wanted
                    self.s.out(again_line(again[:12], e.target_crashes, e.target_crashes + e.oks,
                                          conf, wanted))
            if visit is None or pick != visit.commit:
                self._close(visit, b)
                visit = self._open(pick, b)
                if self.s.build(pick).status is BuildStatus.FAILED:
                    continue
            elif again is None and self.s.ev(pick).target_crashes > visit.crashes:
                # More runs on a commit whose last plan ended in a target crash:
                # the log says why it is not bad yet.
                q, rate = self.commit_state(b, pick)
                self.s.out(self._retest_line(pick, q, rate, b))
            visit.crashes = self.s.ev(pick).target_crashes
            plan = max(1, self.pol.chunk) if again is not None else opts[0].runs
            runs = min(plan, max(1, self.pol.max_runs - self.s.runs))
            if isinstance(self.s.tester, Prebuilds) and opts:
                self.s.tester.prebuild(self.likely_next(b, opts[0]))
            self.s.run_until_crash(pick, runs, self.pol.chunk)

    def probe(self, b: Belief, best: float) -> Probe | None:
        """The revert test worth :attr:`~AdaptivePolicy.probe_edge` times
        ``best`` (the best commit of the range's value) or more, if any.

        A candidate ``x`` reverted on the bad commit gives a tree that has the
        bug unless ``x`` is the culprit, and that crashes, if it has it, at
        the bad commit's own rate (:attr:`Observation.tied`). Runs on the
        commit next to ``x`` must tell its own background from the bug at a
        low rate; here a few runs tell the bad commit's rate from the
        background (bg-jitter at 2%, p = 0.3, 100 paired: 84% -> 98% exact,
        3 -> 0 named wrong; at 500, 460 VM runs against 951; benchmarks/flaky_bisect.py
        --revert-check). Only
        candidates with P(culprit) of at least ``probe_min`` are tried, never
        a merge (its revert takes a whole branch away) nor the bad commit
        itself (its parent is a commit of the range)."""
        if self.reverts is None or not self.pol.revert_probes:
            return None
        g, n = self.g, len(self.g)
        base = g.closure_of(self.bad)
        at = g.index.get(self.bad)
        tied = self.s.ev(self.bad)
        batch = self.pol.chunk if self.pol.plan_in_batches else 1
        h = horizon(batch)
        out: Probe | None = None
        for bits, w in b.ranked():
            if w < self.pol.probe_min:
                break
            for x in g.members(bits):
                if x == self.bad or g.is_merge(x) or self.probe_of.get(x) == "":
                    continue
                i = g.index[x]
                clo = base | (1 << i) if self.s.fix else base & ~(1 << i)
                near = 0 if self.s.fix or at is None else near_mask(clo, at, n, b.model.near, fix=False)
                made = self.probe_of.get(x)
                if made is None and self.s.builds >= self.pol.max_builds:
                    continue
                e = self.s.ev(made) if made else None
                crashes, oks = (e.target_crashes, e.oks) if e else (0, 0)
                if e is not None and e.untestable:
                    continue
                q = b.crash_probability(clo)
                # With the bug, the tree crashes at the bad commit's rate.
                surv = b.survival(crashes + tied.target_crashes, oks + tied.oks, h,
                                  b.near_probability(clo, near, n) if near else 0.0)
                value, runs = plan_value(q, surv, b.clean_survival(h, crashes, oks),
                                         self.pol.switch_cost if made else self.pol.build_cost, batch)
                if value > max(self.pol.probe_edge * best, MIN_VALUE) and (out is None or value > out.value):
                    out = Probe(x, clo, near, runs, value, w)
        return out

    def _test_probe(self, p: Probe) -> None:
        """Make (once), build and run the tree of ``p``; a revert that does not
        apply whole, or does not build, is not tried again."""
        what = "applied on" if self.s.fix else "reverted on top of"
        role = "fix" if self.s.fix else "culprit"
        made = self.probe_of.get(p.change)
        if made is None:
            assert self.reverts is not None
            syn = self.reverts.revert_onto(self.bad, p.change, pick=self.s.fix)
            if syn.commit is None or syn.failed:
                self.probe_of[p.change] = ""
                self.s.out(f"kvmlab: {p.change[:12]} cannot be tested {what} {self.bad[:12]}: "
                           f"its change does not apply whole (not: {', '.join(syn.failed)})")
                return
            made = self.probe_of[p.change] = syn.commit
            self.s.made.add(made)
            self.probes[made] = p
            self.s.out(probe_line(p.change[:12], what, self.bad[:12], made[:12], p.q_change, fix=self.s.fix))
        else:
            self.s.out(f"re-testing {made[:12]} ({p.change[:12]} {what} {self.bad[:12]}): "
                       f"P({p.change[:12]} is the {role}) = {p.q_change:.2f}")
        if self.s.build(made).status is BuildStatus.FAILED:
            self.probe_of[p.change] = ""
            return
        e = self.s.ev(made)
        since = len(e.runs)
        self.s.run_until_crash(made, min(p.runs, max(1, self.pol.max_runs - self.s.runs)), self.pol.chunk)
        self.s.show_runs(made, since, counted_all=False)
        if e.untestable:
            self.s.out(self.s.untestable_line(made))
            return
        after = self.belief().changed_probability(1 << self.g.index[p.change])
        self.s.out(f"kvmlab: {p.change[:12]} {what} {self.bad[:12]}: "
                   f"{fmt.crashes_in_runs(e.target_crashes, e.target_crashes + e.oks)}: "
                   f"P({p.change[:12]} is the {role}) {p.q_change:.2f} -> {after:.2f}")

    def worth_testing(self, i: int) -> bool:
        """Whether the bisection should go on testing commit ``i``, which it
        would test next. No only when the commit has ``futility_runs`` runs,
        the bisection ``futility_after``, the posterior has stalled
        (:meth:`_progressing`), and the rest of the run budget spent on the
        commit could neither settle it (P(crashing) beyond the confidence
        either way) nor name a culprit, at any crash rate its runs so far
        allow (a Wilson interval, ``futility_z``). Once a commit's rate is
        known, and sits where both a clean commit's background and a low rate
        of the bug fit it, more runs only measure that rate again: the
        posterior wanders with each run and the budget goes (bg-jitter:
        2,000-2,700 runs on the commit before the culprit, P = 0.3
        throughout). Judged again after the session's runs grew by
        :data:`RECHECK`."""
        commit = self.g.commits[i].hash
        e = self.s.ev(commit)
        n = e.target_crashes + e.oks
        left = self.pol.max_runs - self.s.runs
        early = n < max(1, self.pol.futility_runs) or self.s.runs < self.pol.futility_after
        if self.pol.futility_z <= 0.0 or early or left <= 0 or self._progressing():
            return True
        seen = self.checked.get(commit)
        if seen is not None and self.s.runs < seen[0] * (1.0 + RECHECK):
            return seen[1]
        band = _rate_band(e.target_crashes, n, self.pol.futility_z)
        obs = self.observations()
        ok = any(self._settled_at(obs, i, rate, left) for rate in band)
        self.checked[commit] = (self.s.runs, ok)
        return ok

    def _progressing(self) -> bool:
        """Whether the best culprit's posterior reached a new high in the
        latest two thirds of the session's runs: evidence still building up
        somewhere (a culprit whose own rate showed low by chance, the
        commits near it learning the bug's rate) is not cut short. (Half was
        too short: bg at 2%, p = 0.1, a culprit at 19 crashes in 285 runs,
        the posterior's high at 789 runs and the next at 1,600, named right
        at 2,475.)"""
        return self.high[0] > self.s.runs / 3

    def _settled_at(self, obs: list[Observation], i: int, rate: float, more: int) -> bool:
        """Whether ``more`` runs of commit ``i`` crashing at ``rate``, on top
        of the observations ``obs``, would settle it or name a culprit."""
        e = self.s.ev(self.g.commits[i].hash)
        crashes = e.target_crashes + round(rate * more)
        oks = e.oks + more - round(rate * more)
        clo = self.g.closure[i]
        after = Belief(self.pol.model, self.g.all_mask,
                       [o if o.closure != clo else Observation(clo, crashes, oks, o.near) for o in obs],
                       fix=self.s.fix)
        q = after.crash_probability(clo)
        c = self.pol.confidence
        return q <= 1.0 - c or q >= c or after.best()[1] >= self.goal

    def _crashes_wanted(self, e: CommitEvidence) -> int:
        """Target crashes a culprit must have shown to be named: more once it
        has also run clean (policy ``culprit_crashes``, ``mixed_culprit_crashes``)."""
        return max(self.pol.culprit_crashes, self.pol.mixed_culprit_crashes if e.oks else 0)

    def _needs_another_crash(self, culprit: str) -> bool:
        """Whether the culprit the posterior names has shown the target's
        title fewer times than it must (cause bisections only: a fix's
        culprit is the clean side of the boundary; a commit that has since
        become untestable cannot show it again)."""
        e = self.s.ev(culprit)
        return not self.s.fix and not e.untestable and e.target_crashes < self._crashes_wanted(e)

    def _raise_goal(self, b: Belief) -> None:
        """Raise the goal to the policy's ``background_confidence`` the first
        time a commit that showed the target's title is more likely without
        the bug than with it, and say so once."""
        goal = self.pol.background_confidence
        if self.goal >= goal:
            return
        for c, e in self.s.evidence.items():
            i = self.g.index.get(c)
            if i is None or not e.target_crashes or b.crash_probability(self.g.closure[i]) >= 0.5:
                continue
            self.goal = goal
            self.s.out(background_goal_line(c[:12], e.target_crashes, e.target_crashes + e.oks,
                                            b.background_rate(), self.pol.confidence, goal))
            return

    def likely_next(self, b: Belief, plan: Option, *, per_outcome: int = PER_OUTCOME) -> list[str]:
        """Unbuilt commits this bisection would test after ``plan`` under each
        likely outcome of it (the bug shows, or every run stays clean), most
        likely first: what overlapped builds (:mod:`kvmlab.bisect.overlap`) make."""
        g = self.g
        e = self.s.ev(g.commits[plan.index].hash)
        surv = float(survival_curve(b, e.target_crashes, e.oks, runs=plan.runs)[plan.runs])
        clean = float(b.clean_survival(plan.runs, e.target_crashes, e.oks)[plan.runs])
        p_clean = plan.q_crash * surv + (1.0 - plan.q_crash) * clean
        outcomes = [(1.0 - p_clean, (e.target_crashes + 1, e.oks)),
                    (p_clean, (e.target_crashes, e.oks + plan.runs))]
        outcomes.sort(key=lambda t: -t[0])
        clo = g.closure[plan.index]
        base = [o for o in self.observations() if o.closure != clo]
        near = near_mask(clo, plan.index, len(g), self.pol.model.near, fix=self.s.fix)
        scored: dict[str, float] = {}
        for prob, (crashes, oks) in outcomes:
            if prob < 0.05:
                continue
            after = Belief(self.pol.model, g.all_mask, [*base, Observation(clo, crashes, oks, near)],
                           fix=self.s.fix)
            fresh = [o for o in self.options(after) if not o.built]
            for place, o in enumerate(fresh[:per_outcome]):
                h = g.commits[o.index].hash
                scored[h] = max(scored.get(h, 0.0), prob / (1 + place))
        return sorted(scored, key=lambda h: -scored[h])

    def _open(self, commit: str, b: Belief) -> _Visit:
        e = self.s.ev(commit)
        if e.runs:
            q, rate = self.commit_state(b, commit)
            self.s.out(self._retest_line(commit, q, rate, b))
        else:
            left = b.credible(0.99).bit_count()
            self.s.out(fmt.bisecting_line(max(0, left // 2 - 1), fmt.estimate_steps(left)))
            self.s.out(fmt.next_line(commit, self.g.subject(commit)))
        return _Visit(commit, len(e.runs))

    def _retest_line(self, commit: str, q: float, rate: float, b: Belief | None = None) -> str:
        e = self.s.ev(commit)
        short = commit[:12]
        if e.target_crashes:
            return retest_crashed_line(short, e.target_crashes, e.target_crashes + e.oks, q,
                                       b.rate(0, 0) if b is not None else rate,
                                       b.background_rate() if b is not None else 0.0)
        before = "marked good earlier, but " if self.marks.get(commit) == "good" else ""
        runs = counted(e.oks, "clean run is", "clean runs are")
        line = (f"re-testing {short}: {before}{runs} not enough at the estimated rate {rate:.2f} "
                f"(P(it has the bug) = {q:.2f})")
        if e.boot_failures:
            line += f"; {counted(e.boot_failures, 'transient boot failure')} not counted"
        return line

    def _close(self, visit: _Visit | None, b: Belief) -> None:
        if visit is None:
            return
        commit = visit.commit
        e = self.s.ev(commit)
        self.s.show_runs(commit, visit.since, counted_all=False)
        q, rate = self.commit_state(b, commit)
        note = ""
        if e.untestable:
            verdict = Verdict.SKIP.value
            note = self.s.untestable_line(commit)
            self.s.out(note)
        elif e.target_crashes and q >= 0.5:
            verdict = Verdict.BAD.value
        elif q <= 1.0 - self.pol.confidence:
            verdict = Verdict.GOOD.value
        else:
            verdict = "undecided"
            crashes = counted(e.target_crashes, "target crash", "target crashes")
            crashes = f", {crashes}" if e.target_crashes else ""
            note = (f"kvmlab: {commit[:12]}: no verdict yet: {counted(e.oks, 'clean run')}{crashes}, "
                    f"P(it has the bug) = {q:.2f} (estimated rate {rate:.2f} if it has)")
            self.s.out(note)
        if verdict != "undecided":
            self.s.out(fmt.mark_line(Verdict(verdict), commit, fix=self.s.fix))
        self.marks[commit] = verdict
        self.s.step(commit, verdict, b.credible(0.99).bit_count(), top=self.top(b), confidence=b.best()[1],
                    p_crash=q, rate=rate, note=note)

    def _inconclusive(self, b: Belief, *, budget_spent: bool, unsettled: str | None = None) -> Decision:
        cands = b.credible(self.pol.confidence)
        probs = b.probabilities(len(self.g))
        members = self.g.members(cands)
        ranked = sorted(members, key=lambda h: -probs[self.g.index[h]])
        out = {h: float(probs[self.g.index[h]]) for h in ranked}
        why = ""
        if unsettled is not None:
            e = self.s.ev(unsettled)
            q, _ = self.commit_state(b, unsettled)
            why = unsettled_line(unsettled[:12], e.target_crashes, e.target_crashes + e.oks, q,
                                 b.rate(0, 0), b.background_rate())
        return Decision(Outcome.INCONCLUSIVE, None, b.best()[1], out, budget_spent=budget_spent,
                        goal=self.goal, unsettled_note=why)


def _rate_band(crashes: int, runs: int, z: float) -> tuple[float, ...]:
    """The crash rate measured, and the ends of its Wilson interval at ``z``."""
    mid = crashes / runs
    centre = (crashes + z * z / 2) / (runs + z * z)
    half = z / (runs + z * z) * math.sqrt(crashes * (runs - crashes) / runs + z * z / 4)
    return mid, max(0.0, centre - half), min(1.0, centre + half)


def unsettled_line(short: str, crashes: int, runs: int, q: float, bad_rate: float, background: float) -> str:
    """Why more runs on a commit cannot settle it."""
    return (f"more runs on {short} cannot settle it: {fmt.crashes_in_runs(crashes, runs)} "
            f"({crashes / runs:.1%}) fit both a background on a clean commit (typically {background:.1%}) "
            f"and the bug at a low rate (the bad commits crash in {bad_rate:.0%}); "
            f"P(it has the bug) = {q:.2f}")


def probe_line(short: str, what: str, bad: str, made: str, q: float, *, fix: bool) -> str:
    """Why a likely culprit is tested reverted on the bad commit (a fix: applied)."""
    role = "fix" if fix else "culprit"
    return (f"kvmlab: testing {short} {what} {bad} (commit {made}): P(it is the {role}) = {q:.2f}; "
            f"if it is, the crash is gone there, if not it stays at {bad}'s rate")


def background_goal_line(short: str, crashes: int, runs: int, background: float, confidence: float,
                         goal: float) -> str:
    """Why the confidence goal went up: the target's title showed on a commit
    that probably lacks the bug."""
    return (f"kvmlab: {short} showed the target's title ({fmt.crashes_in_runs(crashes, runs)}) but probably "
            f"lacks the bug: the title also shows without it (~{background:.1%} of runs); naming a culprit "
            f"at {goal:g} instead of {confidence:g}")


def again_line(short: str, crashes: int, runs: int, confidence: float, want: int) -> str:
    """Why a culprit that holds the goal is tested once more: a single crash,
    or crashes mixed with clean runs, may be the title's background on a
    clean commit."""
    why = "one crash" if crashes <= 1 else "crashes mixed with clean runs"
    return (f"kvmlab: {short} holds {confidence:.3f} on {fmt.crashes_in_runs(crashes, runs)}: testing it "
            f"until the title shows {want} times ({why} may be the title's background on a clean commit)")


def retest_crashed_line(short: str, crashes: int, runs: int, q: float, bad_rate: float,
                        background: float) -> str:
    """Why a commit that showed the target crash is tested again: its rate lies
    between the background (the title on commits without the bug) and the rate
    the commits with the bug show."""
    return (f"re-testing {short}: {fmt.crashes_in_runs(crashes, runs)}, the bad commits crash in "
            f"{bad_rate:.0%} (P(it has the bug) = {q:.2f}; the title shows on commits without the bug in "
            f"~{background:.1%} of runs)")


def release_doubt(s: Session, pol: AdaptivePolicy, commit: str, rate_from: Iterable[str] | None = None
                  ) -> float:
    """P(the release ``commit`` has the bug), from its clean runs and what the
    commits ``rate_from`` (default: every commit that showed the target crash)
    taught about the population of crash rates."""
    # Two hypotheses: bit 0 "the release has the bug", bit 1 "it has not";
    # the commits with the bug crash under both.
    pick = rate_from if rate_from is not None else [c for c, x in s.evidence.items() if x.target_crashes]
    obs = [Observation(0b11, x.target_crashes, x.oks)
           for c in pick if c != commit and (x := s.ev(c)).target_crashes]
    obs.append(Observation(0b01, 0, s.ev(commit).oks))
    return Belief(pol.model, 0b11, obs, fix=False).crash_probability(0b01)


def settle_release(s: Session, pol: AdaptivePolicy, commit: str, *, confidence: float | None = None,
                   rate_from: Iterable[str] | None = None) -> Verdict:
    """Test a release until it crashes or P(it has the bug) falls to 1 -
    ``confidence`` (default ``release_confidence``): BAD, GOOD, or SKIP
    (untestable, or ``release_max_runs`` runs in all without settling)."""
    if s.build(commit).status is BuildStatus.FAILED:
        return Verdict.SKIP
    level = pol.release_confidence if confidence is None else confidence
    e = s.ev(commit)
    since = len(e.runs)
    settled = False
    while e.target_crashes == 0 and not e.untestable and len(e.runs) < pol.release_max_runs:
        if release_doubt(s, pol, commit, rate_from) <= 1.0 - level:
            settled = True
            break
        s.run_until_crash(commit, pol.chunk, pol.chunk)
    if len(e.runs) > since:
        s.show_runs(commit, since, counted_all=False)
    if e.target_crashes:
        return Verdict.BAD
    if e.untestable:
        s.out(s.untestable_line(commit))
        return Verdict.SKIP
    return Verdict.GOOD if settled else Verdict.SKIP
