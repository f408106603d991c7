"""syzbot's published bisection rule, kept as the baseline to beat.

A fixed number of runs per commit; any crash counts, whatever its title; a
commit is bad, good or skipped by fixed thresholds; the next commit is
``git bisect``'s midpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab.bisect import log as fmt
from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.policy import SyzbotPolicy
from kvmlab.bisect.result import Outcome, Verdict
from kvmlab.bisect.state import Session
from kvmlab.outcome import BuildStatus, RunStatus


@dataclass
class SyzbotState:
    flaky: bool = False
    """Set once a bad commit did not crash on every run: more runs from then on."""

    def runs(self, pol: SyzbotPolicy) -> int:
        return pol.flaky_runs if self.flaky else pol.runs


def judge_commit(s: Session, st: SyzbotState, pol: SyzbotPolicy, commit: str, runs: int,
                *, on_bad: bool = False) -> Verdict:
    """Test one commit by syzbot's rule: BAD means it crashed (any title)."""
    b = s.build(commit)
    if b.status is BuildStatus.FAILED:
        return Verdict.SKIP
    e = s.ev(commit)
    since = len(e.runs)
    got = s.run(commit, runs, on_bad=on_bad, retry_boot_failures=False)
    s.show_runs(commit, since, counted_all=True)
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


def loop(s: Session, st: SyzbotState, pol: SyzbotPolicy, g: CommitGraph
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
        verdict = judge_commit(s, st, pol, commit, st.runs(pol))
        s.out(fmt.mark_line(verdict, commit, fix=s.fix))
        if verdict is Verdict.SKIP:
            skipped |= 1 << best
        elif (verdict is Verdict.BAD) != s.fix:
            remaining &= g.closure[best]
            known_changed |= 1 << best
        else:
            remaining &= ~g.closure[best]
        s.step(commit, verdict, remaining.bit_count())
