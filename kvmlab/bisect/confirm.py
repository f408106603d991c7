"""Confirm a culprit by reverting it.

Once a bisection names a culprit, kvmlab reverts it on top of the bad commit
(and on top of the tree's HEAD when that differs and contains it), builds
that, and runs the reproducer as many times as it takes for the bug, if still
there, to show with 99% probability at the rate the commits with the bug
showed it. The crash gone is a confirmation; the crash still there at about
the rate the commits with the bug showed makes the culprit doubtful. When the
target's title also shows, rarely, on commits without the bug (the bisection's
*background* rate), a crash or two in the revert's runs is weighed against both
rates: the runs go on to the planned count, and past it (up to MAX_RUNS) while
the crashes fit both about as well, and the culprit is doubtful only when the
crashes look more like the bug's rate than like the background.

A revert that does not apply is retried file by file and the files that do
not apply are named; when no whole revert applied on those bases, the tested
commit with the bug nearest to the culprit where it does is checked too. For a
fix bisection it is the mirror image: the fix applied on top of the bad (still
broken) commit must make the crash go.
"""

from __future__ import annotations

import math

from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.result import Confirmation, ConfirmStatus
from kvmlab.bisect.seams import Repository, Reverts, SyntheticCommit
from kvmlab.bisect.state import Session
from kvmlab.outcome import BuildStatus

#: The bug, if still there, must show in the confirmation runs with this probability.
SHOW_PROBABILITY = 0.99
MIN_RUNS, MAX_RUNS = 3, 60
#: Likelihood ratio (the bug's rate against the background) at which the
#: revert's crashes settle it as still crashing before the planned runs end.
STILL_CRASHES = 19.0
#: Background rate assumed when the bisection gives none.
MIN_BACKGROUND = 1e-4
#: A rate step the answer does not explain (:func:`rate_steps`): counts the
#: other commits' pooled rate gives this rarely (one-sided binomial tail).
STEP_TAIL = 1e-3


def still_crashes_ratio(crashes: int, runs: int, bug_crashes: int, bug_oks: int, background: float) -> float:
    """P(``crashes`` in ``runs`` | the bug's rate, Beta(1 + bug_crashes, 1 +
    bug_oks)) / P(the same | the background rate)."""
    a, b = 1 + bug_crashes, 1 + bug_oks
    k, n = crashes, runs
    log_bug = (math.lgamma(a + k) + math.lgamma(b + n - k) - math.lgamma(a + b + n)
               - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b))
    bg = min(max(background, MIN_BACKGROUND), 0.5)
    log_bg = _binomial_log(k, n, bg)
    return math.exp(min(700.0, log_bug - log_bg))


def runs_needed(crashes: int, oks: int) -> int:
    """Runs after which a bug that showed ``crashes`` in ``crashes + oks`` runs
    would show at least once with :data:`SHOW_PROBABILITY` (rate posterior
    Beta(1 + crashes, 1 + oks))."""
    a, b = 1 + crashes, 1 + oks
    survive = 1.0  # E[(1 - p)^n] = prod_{i<n} (b + i) / (a + b + i)
    for n in range(1, MAX_RUNS + 1):
        survive *= (b + n - 1) / (a + b + n - 1)
        if n >= MIN_RUNS and survive <= 1.0 - SHOW_PROBABILITY:
            return n
    return MAX_RUNS


def confirm(repo: Repository, s: Session, *, culprit: str, bad: str, chunk: int,
            background: float = 0.0) -> list[Confirmation]:
    """Check ``culprit`` on the bad commit and, for a cause bisection, on the
    tree's HEAD when that differs and contains the culprit. ``background``: the
    rate at which the target's title showed on commits without the bug."""
    if not isinstance(repo, Reverts):
        return []
    rate = _bug_rate(repo, s, culprit)
    n = runs_needed(*rate)
    bases = [bad]
    if not s.fix:
        head = repo.head()
        if head != bad and repo.is_ancestor(culprit, head):
            bases.append(head)
    checks = [_check(repo, s, culprit, base, n, chunk, rate, background) for base in bases]
    whole = any(c.status is ConfirmStatus.CONFIRMED or (c.commit is not None and not c.failed)
                for c in checks)
    if not s.fix and not whole:
        # Later commits rewrote the culprit's lines: check it on the tested
        # commit with the bug nearest to it where the whole revert applies.
        for base in _nearer_bad(repo, s, culprit, bases + [c.commit for c in checks if c.commit]):
            syn = repo.revert_onto(base, culprit, pick=False)
            if syn.commit is not None and not syn.failed:
                s.out(f"kvmlab: confirming on {base[:12]} instead, the tested commit with the bug nearest to "
                      f"{culprit[:12]} where the whole revert applies")
                checks.append(_check(repo, s, culprit, base, n, chunk, rate, background))
                break
    return checks


def crashed_with_the_bug(repo: Repository, s: Session, culprit: str) -> list[str]:
    """Tested commits that showed the target crash and, by ``culprit``, have the
    bug (for a fix bisection: do not have the fix). Commits kvmlab made (a
    revert) are not counted: the one that reverts the culprit has it as an
    ancestor and not its code."""
    return [c for c, e in s.evidence.items()
            if e.target_crashes and c not in s.made and repo.is_ancestor(culprit, c) != s.fix]


def rate_steps(s: Session, g: CommitGraph, culprit: str) -> list[str]:
    """Warnings that the evidence fits a second change point the answer did
    not name, with the counts that show it.

    Moving the answer's boundary to a tested commit ``c`` moves a set of
    tested commits to the other side: for a cause bisection, ``c`` and the
    tested commits without the bug that descend from it (the culprit ``c`` or
    older), or ``c`` and the tested commits with the bug it descends from (the
    culprit newer than ``c``); a fix bisection mirrors it. A warning names
    such a move when those commits together

    1. showed the title far more often than the other commits without the
       bug, or far less often than the other commits with it (a binomial
       tail below :data:`STEP_TAIL` at the others' pooled rate), and
    2. fit the other side's pooled rate at least as well as their own side's
       (rates that merely differ, as a race's do, are no second change
       point: without this rule 71 of 117 right bg-jitter culprits at p = 0.3
       were warned, benchmarks/flaky_bisect.py), and
    3. for commits with the bug read as clean: commits without it showed the
       title at least twice (with no background seen a low rate is the
       bug's; drift at p = 0.1 warned 30 of 40 right culprits without it).

    The answer read them as a background of their own, or as the bug at a
    low rate (a race a later commit widened); the other reading fits as well
    and moves the culprit. Of each kind the smallest such move (the nearest
    other boundary) is named, the most telling of those. Known weakness: a
    side known from a few runs (the tip's 3 of 3) is taken as a point rate,
    so with a uniform background 6 of 39 right culprits (bg 2%, p = 0.3) were
    warned. Only commits of the range count (not the synthetic reverts), and
    a commit that reused another's kernel counts once."""
    at = g.index[culprit]
    tested = {c: e for c, e in s.evidence.items() if c in g.index and e.same_as is None}

    def has_bug(c: str) -> bool:
        return bool(g.closure[g.index[c]] >> at & 1) != s.fix

    def below(c: str, d: str) -> bool:  # d is c or descends from it
        return bool(g.closure[g.index[d]] >> g.index[c] & 1)

    crashes = {c: e.target_crashes for c, e in tested.items()}
    runs = {c: e.target_crashes + e.oks for c, e in tested.items()}
    side = {True: [c for c in tested if has_bug(c)], False: [c for c in tested if not has_bug(c)]}
    totals = {b: (sum(crashes[c] for c in cs), sum(runs[c] for c in cs)) for b, cs in side.items()}
    out = []
    for bug in (False, True):
        best: tuple[float, str, list[str], int, int] | None = None
        for c in side[bug]:
            # cause: clean commits move with their descendants, bad ones with
            # their ancestors; a fix bisection the other way round.
            down = bug == s.fix
            moved = [d for d in side[bug] if (below(c, d) if down else below(d, c))]
            k, n = sum(crashes[d] for d in moved), sum(runs[d] for d in moved)
            rest_k, rest_n = totals[bug][0] - k, totals[bug][1] - n
            if not n or not rest_n or (not bug and k < 2) or (bug and totals[False][0] < 2):
                # A clean commit's one crash, or a "background" that no
                # commit without the bug showed twice, is no second reading.
                continue
            rate = (rest_k + 0.5) / (rest_n + 1.0)
            other = (totals[not bug][0] + 0.5) / (totals[not bug][1] + 1.0)
            tail = _binomial_tail(n - k, n, 1.0 - rate) if bug else _binomial_tail(k, n, rate)
            nearer = _binomial_log(k, n, other) >= _binomial_log(k, n, rate)
            if tail < STEP_TAIL and nearer and (best is None or (len(moved), tail) < (len(best[2]), best[0])):
                best = (tail, c, moved, k, n)
        if best is not None:
            _, c, moved, k, n = best
            out.append(_step_line(s.fix, bug, bug == s.fix, c, moved, culprit, k, n, totals))
    return out


def _step_line(fix: bool, bug: bool, down: bool, c: str, moved: list[str], culprit: str, k: int, n: int,
               totals: dict[bool, tuple[int, int]]) -> str:
    """The warning of :func:`rate_steps` for moving ``moved`` (``c`` and the
    tested commits that go with it: its descendants when ``down``), which
    showed ``k`` target crashes in ``n`` runs, across."""
    rest_k, rest_n = totals[bug][0] - k, totals[bug][1] - n
    what = "fix" if fix else "culprit"
    if moved == [culprit]:
        who = "the culprit"
    else:
        span = f"from {c[:12]} to the {what}" if down else f"from the {what} to {c[:12]}"
        who = (f"the {len(moved)} tested commits {span}" if len(moved) > 1 else c[:12]) \
            + f", {'with' if bug else 'without'} the bug by this answer,"
    other_k, other_n = totals[not bug]
    near, own = ("without", "with") if bug else ("with", "without")
    seen = (f"showed the title in {k} of {n} runs ({k / n:.1%}): nearer the commits {near} the bug "
            f"({other_k} of {other_n}, {_share(other_k, other_n)}) than the other commits {own} it "
            f"({rest_k} of {rest_n}, {_share(rest_k, rest_n)})")
    if not bug:
        where = f"newer than {c[:12]}" if fix else f"{c[:12]} or older"
        return f"warning: {who} {seen}; if those crashes are this bug, the {what} is {where}"
    if moved == [culprit]:
        return (f"warning: the culprit {seen}; if its crashes are a background of its own (the title shows, "
                "rarely, without the bug), the culprit is a newer commit")
    where = f"{c[:12]} or older" if fix else f"newer than {c[:12]}"
    lack = "they lack" if len(moved) > 1 else "it lacks"
    return f"warning: {who} {seen}; if {lack} the bug, the {what} is {where}"


def _binomial_log(k: int, n: int, rate: float) -> float:
    """log P(``k`` crashes in ``n`` runs | ``rate``), without the binomial coefficient."""
    return k * math.log(rate) + (n - k) * math.log1p(-rate)


def _share(k: int, n: int) -> str:
    return f"{k / n:.1%}" if n and k / n < 0.1 else (f"{k / n:.0%}" if n else "?")


def _binomial_tail(k: int, n: int, rate: float) -> float:
    """P(at least ``k`` successes in ``n`` trials at ``rate``)."""
    if k <= 0:
        return 1.0
    log_r, log_q = math.log(rate), math.log1p(-rate)
    head = math.lgamma(n + 1)
    terms = (head - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_r + (n - i) * log_q
             for i in range(k, n + 1))
    return min(1.0, sum(math.exp(x) for x in terms))


def _bug_rate(repo: Repository, s: Session, culprit: str) -> tuple[int, int]:
    """(crashes, clean runs) pooled over :func:`crashed_with_the_bug`. A commit
    without the bug that showed the title once (the background) would pull the
    bug's rate down towards the background's, and one background crash of the
    revert would then look like the bug still there."""
    showed = [s.evidence[c] for c in crashed_with_the_bug(repo, s, culprit)]
    if not showed:  # nothing tested on the bug's side (cannot happen for a named culprit): all crashes
        showed = [e for e in s.evidence.values() if e.target_crashes]
    return sum(e.target_crashes for e in showed), sum(e.oks for e in showed)


def _nearer_bad(repo: Repository, s: Session, culprit: str, skip: list[str]) -> list[str]:
    """Tested commits that crashed with the bug and contain ``culprit``,
    nearest to it first (the one most of the others descend from)."""
    found = [c for c, e in s.evidence.items() if e.target_crashes and c != culprit and c not in skip
             and c not in s.made and repo.is_ancestor(culprit, c)]
    below = {c: sum(1 for o in found if o != c and repo.is_ancestor(c, o)) for c in found}
    return sorted(found, key=lambda c: -below[c])


def _check(repo: Reverts, s: Session, culprit: str, base: str, runs: int, chunk: int, rate: tuple[int, int],
           background: float) -> Confirmation:
    what = "applied" if s.fix else "reverted"
    syn = repo.revert_onto(base, culprit, pick=s.fix)
    if syn.commit is None:
        msg = (f"{'the fix does' if s.fix else 'the revert does'} not apply on {base[:12]}: "
               f"none of {', '.join(syn.failed)} applies")
        s.out(f"kvmlab: {msg}")
        return Confirmation(ConfirmStatus.DOES_NOT_APPLY, base, None, failed=syn.failed, message=msg)
    s.out(f"kvmlab: confirming: {culprit[:12]} {what} on top of {base[:12]}: commit {syn.commit[:12]}"
          + (f" (only {', '.join(syn.applied)}; {', '.join(syn.failed)} do not apply)" if syn.failed else ""))
    s.made.add(syn.commit)
    probed = syn.commit in s.evidence and s.evidence[syn.commit].build is not None
    build = s.build(syn.commit)
    if build.status is BuildStatus.FAILED:
        msg = f"the commit with {culprit[:12]} {what} does not build: {build.error}"
        s.out(f"kvmlab: {msg}")
        return _result(ConfirmStatus.UNTESTABLE, syn, 0, 0, msg)
    e = s.ev(syn.commit)
    since = len(e.runs)
    # A revert the bisection tested already (a probe) built this commit; its
    # runs are in the bisection's answer, so the check makes its own.
    before = e.target_crashes
    done = 0
    limit = runs
    while done < limit and not e.untestable:
        crashes = e.target_crashes - before
        ratio = still_crashes_ratio(crashes, done, *rate, background) if crashes else 0.0
        if ratio >= STILL_CRASHES and done >= MIN_RUNS and crashes >= 2:
            break  # one crash alone settles nothing before the planned runs end
        if done >= runs and ratio <= 1.0 / STILL_CRASHES:
            break
        done += len(s.run(syn.commit, min(chunk, limit - done)))
        if done >= limit and limit < MAX_RUNS and e.target_crashes > before and not e.untestable:
            # A crash or two that could be the background as well as the
            # bug: more runs settle which (the bug, if still there, keeps
            # crashing at its rate; the background stays rare).
            mid = still_crashes_ratio(e.target_crashes - before, done, *rate, background)
            if 1.0 / STILL_CRASHES < mid < STILL_CRASHES:
                limit = min(MAX_RUNS, limit + runs)
                n = e.target_crashes - before
                what_fits = f"{n} crashes in {done} runs fit" if n > 1 else f"1 crash in {done} runs fits"
                s.out(f"kvmlab: confirming: {what_fits} the bug's rate and the background's alike: "
                      f"up to {limit - done} more runs")
    s.show_runs(syn.commit, since, counted_all=False)
    crashes = e.target_crashes - before
    if e.untestable:
        msg = s.untestable_line(syn.commit).removeprefix("kvmlab: ")
        status = ConfirmStatus.UNTESTABLE
    elif crashes and still_crashes_ratio(crashes, done, *rate, background) > 1.0:
        status = ConfirmStatus.NOT_CONFIRMED
        msg = f"not confirmed: still crashes with {culprit[:12]} {what} ({crashes}/{done})"
    elif crashes:
        status = ConfirmStatus.CONFIRMED
        msg = (f"confirmed: with {culprit[:12]} {what} it crashed {crashes}/{done} runs, about the rate the "
               f"title shows on commits without the bug (~{background:.1%}), not the bug's")
    else:
        status = ConfirmStatus.CONFIRMED
        msg = f"confirmed: the crash is gone with {culprit[:12]} {what} (0/{done} runs)"
    if syn.failed:
        msg = (f"{'the fix' if s.fix else 'the revert'} does not apply cleanly: {what} only "
               f"{', '.join(syn.applied)} ({', '.join(syn.failed)} do not apply); {msg}")
    s.out(f"kvmlab: {msg}")
    return _result(status, syn, done, crashes, msg, probed)


def _result(status: ConfirmStatus, syn: SyntheticCommit, runs: int, crashes: int, msg: str,
            probed: bool = False) -> Confirmation:
    return Confirmation(status, syn.base, syn.commit, runs, crashes, syn.applied, syn.failed, msg, probed)


def summary_lines(checks: list[Confirmation]) -> list[str]:
    """The closing block's lines about the confirmation."""
    out = [f"kvmlab: confirmation on {c.base[:12]}: {c.message}" for c in checks]
    out += [f"warning: the culprit is doubtful: {c.message}" for c in checks if c.doubtful]
    return out

