"""The adaptive policy's belief: a posterior over the culprit and the crash rate.

Model. The culprit is one commit of the range, a priori uniform. The bug
crashes a run of a *crashing* commit with an unknown probability ``p`` (one
value shared by every crashing commit, prior uniform over :data:`P_GRID`), and a
run of a *clean* commit with a small probability ``eps`` (a mismatched crash
counted as the target). In a cause bisection the crashing commits are those
that contain the culprit; in a fix bisection, those that do not. Only runs that
answered count: a target crash or an OK run; other crashes, boot failures and
infrastructure errors carry no information about this bug.

Computation. Commits whose membership is the same in every tested commit's
ancestor set have the same likelihood, so the candidates are split into such
classes (bitsets) by the tested commits; each class needs only sums of
crashes and OK runs, and the posterior is a short sum over the p grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Values of the per-run crash probability the model considers (midpoints of 50 bins).
P_GRID: tuple[float, ...] = tuple((i + 0.5) / 50 for i in range(50))
_LOG_P = tuple(math.log(p) for p in P_GRID)
_LOG_Q = tuple(math.log1p(-p) for p in P_GRID)


@dataclass(frozen=True)
class Observation:
    """Answered runs of one commit: ``closure`` is its ancestor bitset in the range."""

    closure: int
    crashes: int
    """Runs that crashed with the target bug."""
    oks: int
    """Runs that ran to the end without a crash."""


@dataclass(frozen=True)
class Posterior:
    """Belief after the observations. ``classes`` are (bitset, weight per member)."""

    classes: tuple[tuple[int, float], ...]
    p_weights: tuple[float, ...]
    """Posterior over :data:`P_GRID`."""
    fix: bool
    eps: float

    def changed_probability(self, closure: int) -> float:
        """P(the commit with this ancestor bitset contains the culprit)."""
        return sum(w * (s & closure).bit_count() for s, w in self.classes if s & closure)

    def crash_probability_of_state(self, closure: int) -> float:
        """P(the commit is in the crashing state)."""
        q = self.changed_probability(closure)
        return 1.0 - q if self.fix else q

    def best(self) -> tuple[int, float]:
        """(bit index, posterior) of the most probable culprit (lowest index on ties)."""
        bits, w = max(self.classes, key=lambda c: (c[1], -(c[0] & -c[0]).bit_length()))
        return (bits & -bits).bit_length() - 1, w

    def credible(self, level: float) -> int:
        """Smallest set of candidates (bitset) holding at least ``level`` of the mass."""
        out, mass = 0, 0.0
        for bits, w in sorted(self.classes, key=lambda c: -c[1]):
            if mass >= level:
                break
            out |= bits
            mass += w * bits.bit_count()
        return out

    def survival(self, runs: int) -> float:
        """E[(1-p)^runs]: chance that a crashing commit gives ``runs`` OK runs."""
        return sum(w * (1.0 - p) ** runs for w, p in zip(self.p_weights, P_GRID, strict=True))

    def mean_p(self) -> float:
        return sum(w * p for w, p in zip(self.p_weights, P_GRID, strict=True))


def posterior(all_mask: int, observations: Sequence[Observation], *, fix: bool, eps: float) -> Posterior:
    """Posterior over culprits in ``all_mask`` and over p, given the observations."""
    # Each class carries: bitset, crashes/oks on crashing commits, crashes/oks on clean ones.
    classes: list[tuple[int, int, int, int, int]] = [(all_mask, 0, 0, 0, 0)]
    for ob in observations:
        if ob.crashes == 0 and ob.oks == 0:
            continue
        refined = []
        for bits, ck, cm, gk, gm in classes:
            for part, changed in ((bits & ob.closure, True), (bits & ~ob.closure, False)):
                if not part:
                    continue
                if changed != fix:
                    refined.append((part, ck + ob.crashes, cm + ob.oks, gk, gm))
                else:
                    refined.append((part, ck, cm, gk + ob.crashes, gm + ob.oks))
        classes = refined
    log_eps, log_neps = math.log(eps), math.log1p(-eps)
    tables: list[list[float]] = []
    top = -math.inf
    for _, ck, cm, gk, gm in classes:
        base = gk * log_eps + gm * log_neps
        row = [base + ck * lp + cm * lq for lp, lq in zip(_LOG_P, _LOG_Q, strict=True)]
        tables.append(row)
        top = max(top, max(row))
    p_weights = [0.0] * len(P_GRID)
    masses = []
    for (bits, *_), row in zip(classes, tables, strict=True):
        n = bits.bit_count()
        per = [math.exp(v - top) for v in row]
        for g, x in enumerate(per):
            p_weights[g] += n * x
        masses.append(sum(per))
    total = sum(p_weights)
    out = tuple(
        (bits, m / total) for (bits, *_), m in zip(classes, masses, strict=True)
    )
    return Posterior(
        classes=out, p_weights=tuple(w / total for w in p_weights), fix=fix, eps=eps
    )


def binary_entropy(q: float) -> float:
    if q <= 0.0 or q >= 1.0:
        return 0.0
    return -(q * math.log2(q) + (1.0 - q) * math.log2(1.0 - q))


def information_gain(q_crash: float, survival: float, eps_survival: float) -> float:
    """Bits learnt about the culprit by runs on one commit that stop at the first
    target crash: ``q_crash`` = P(commit in crashing state), ``survival`` =
    P(no crash in all the runs | crashing), ``eps_survival`` = same | clean.
    A crash is taken as settling the commit (eps is small)."""
    p_none = q_crash * survival + (1.0 - q_crash) * eps_survival
    if p_none <= 0.0:
        return binary_entropy(q_crash)
    return binary_entropy(q_crash) - p_none * binary_entropy(q_crash * survival / p_none)
