"""What the adaptive policy would test next, and how much each choice is worth.

Pure functions of a :class:`~kvmlab.bisect.model.Belief` and the commit graph.
A test of a commit is a *plan* of up to ``runs`` runs that stops at the first
target crash; its value is the expected information about the culprit (bits)
per unit of cost. The cost is wall time: with a pool of ``batch`` VMs the runs
go in batches of ``batch`` that take one run's time whether they hold one run
or ``batch`` (so a plan is a whole number of batches and stops after the batch
with the first target crash), and building a commit not built yet costs
``build_cost`` runs' time. The engine takes the best option; the overlap scheduler
uses the ranking to pre-build what is likely to come next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kvmlab.bisect.graph import CommitGraph
from kvmlab.bisect.model import Array, Belief, bit_mask, near_mask

#: Run counts a plan may have.
PLAN_RUNS: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 20, 30, 45)
_HORIZON = max(PLAN_RUNS)

#: Fresh (unbuilt) commits evaluated exactly per decision: those whose
#: P(crashing) is nearest the most valuable one.
FRESH_EVALUATED = 8


@dataclass(frozen=True)
class Option:
    """One possible next test."""

    index: int
    """Bit index of the commit in the graph."""
    runs: int
    """Runs planned (the plan stops at the first target crash)."""
    value: float
    """Expected bits about the culprit per unit of cost."""
    q_crash: float
    """P(the commit is in the crashing state)."""
    built: bool


def crash_probabilities(belief: Belief, graph: CommitGraph) -> Array:
    """P(crashing state) of every commit of the range, by bit index.

    P(a commit contains the culprit) is the posterior mass of its ancestors:
    along a chain it is the parent's plus its own (a cumulative sum); only
    commits with two or more parents inside the range need their ancestor bitset.
    """
    own = belief.probabilities(len(graph))
    per = belief.per_member()
    live = [(bits, float(w)) for bits, w in zip(belief.classes, per, strict=True) if w > 1e-15]
    cum = np.cumsum(own)
    c = cum.tolist()
    chain_of = graph.chain_of
    # q = cum + the offset of the commit's chain: each chain continues its base.
    offset: list[float] = []
    for start, _, base in graph.chains:
        before = c[start - 1] if start else 0.0
        if base == -2:
            clo = graph.closure[start]
            offset.append(sum(w * (bits & clo).bit_count() for bits, w in live if bits & clo) - c[start])
        elif base >= 0:
            offset.append(c[base] + offset[chain_of[base]] - before)
        else:
            offset.append(-before)
    q = cum + np.asarray(offset)[np.asarray(chain_of)]
    np.clip(q, 0.0, 1.0, out=q)
    return np.asarray(1.0 - q) if belief.fix else q


def _entropy(q: Array) -> Array:
    q = np.clip(q, 1e-300, 1.0)
    r = np.clip(1.0 - q, 1e-300, 1.0)
    h = -(q * np.log2(q) + r * np.log2(r))
    return np.asarray(np.where((q >= 1.0) | (r >= 1.0), 0.0, h))


def horizon(batch: int = 1) -> int:
    """Runs the survival curves must reach for plans of ``batch``-run batches
    (a pool larger than the largest plan runs one batch of its size)."""
    return max(_HORIZON, batch)


def plan_sizes(batch: int = 1) -> tuple[int, ...]:
    """Run counts a plan may have with a pool of ``batch`` VMs: whole batches,
    about the sizes of :data:`PLAN_RUNS`, within :func:`horizon`."""
    b = max(1, batch)
    if b == 1:
        return PLAN_RUNS
    sizes = sorted({-(-m // b) * b for m in PLAN_RUNS} | {b})
    return tuple(m for m in sizes if m <= horizon(b))


def plan_values(q: Array, survivals: Array, clean: Array, build_cost: float | Array, batch: int = 1) -> Array:
    """Value (expected bits per unit of wall time) of each plan of
    :func:`plan_sizes` runs, for K commits in the crashing state with
    probabilities ``q`` (K); ``survivals`` (horizon + 1, or K x (horizon + 1))
    = P(no crash in t runs | crashing), ``clean`` (horizon + 1, or K x
    (horizon + 1)) = P(no target crash in t runs | clean: the background),
    t = 0 .. horizon; ``build_cost``: one, or one per commit. A plan of m
    runs is m / batch batches; batch j (from 0) happens when the j batches
    before it showed no target crash. Returns shape (K, len(plan_sizes(batch)))."""
    b = max(1, batch)
    sizes = np.array(plan_sizes(b))
    cl = np.atleast_2d(clean)
    h = cl.shape[1] - 1
    if h < sizes[-1]:
        raise ValueError(f"survival curves to {h} runs, plans of up to {sizes[-1]}")
    q = np.asarray(q, dtype=np.float64)[:, None]
    surv = np.atleast_2d(survivals)
    s_m, e_m = surv[:, sizes], cl[:, sizes]
    p_none = q * s_m + (1.0 - q) * e_m
    post = np.divide(q * s_m, p_none, out=np.zeros_like(p_none), where=p_none > 0)
    # A target crash settles the commit only when the title cannot show
    # without the bug: a commit whose own rate is known, between the
    # background's and the bug's, gains nothing from more runs.
    p_crash = 1.0 - p_none
    post_crash = np.divide(q * (1.0 - s_m), p_crash, out=np.ones_like(p_crash), where=p_crash > 0)
    gain = _entropy(q) - p_none * _entropy(post) - p_crash * _entropy(post_crash)
    # Expected batches: sum over the batches started, P(no crash before it).
    starts = np.arange(0, h + 1, b)
    cum_s = np.concatenate((np.zeros((surv.shape[0], 1)), np.cumsum(surv[:, starts], axis=1)), axis=1)
    cum_e = np.concatenate((np.zeros((cl.shape[0], 1)), np.cumsum(cl[:, starts], axis=1)), axis=1)
    extra = np.asarray(build_cost, dtype=np.float64).reshape(-1, 1)
    cost = q * cum_s[:, sizes // b] + (1.0 - q) * cum_e[:, sizes // b] + extra
    return np.asarray(np.maximum(gain, 0.0) / cost)


def plan_value(q: float, survivals: Array, clean: Array, build_cost: float,
               batch: int = 1) -> tuple[float, int]:
    """(value, runs) of the best plan for one commit."""
    v = plan_values(np.array([q]), survivals, clean, build_cost, batch)[0]
    k = int(np.argmax(v))
    return float(v[k]), plan_sizes(batch)[k]


def survival_curve(belief: Belief, crashes: int, oks: int, near: float = 0.0, *, runs: int = _HORIZON
                   ) -> Array:
    """P(no target crash in t more runs | crashing) for t = 0 .. ``runs``, for a
    commit near the culprit with probability ``near``."""
    return belief.survival(crashes, oks, runs, near)


def near_probability(belief: Belief, graph: CommitGraph, i: int) -> float:
    """P(commit ``i`` is near the culprit | it crashes)."""
    n = len(graph)
    mask = near_mask(graph.closure[i], i, n, belief.model.near, fix=belief.fix)
    return belief.near_probability(graph.closure[i], mask, n)


def rank(
    belief: Belief,
    graph: CommitGraph,
    *,
    testable: int,
    built: Mapping[int, tuple[int, int]],
    build_cost: float,
    current: int | None = None,
    switch_cost: float = 0.0,
    fresh_limit: int = FRESH_EVALUATED,
    batch: int = 1,
) -> list[Option]:
    """Options worth running, best first.

    ``testable``: bitset of commits that may be tested (not unbuildable, not
    consistently failing to boot). ``built``: bit index -> (target crashes, OK
    runs) of commits already built. Fresh commits are ranked by how close their
    P(crashing) is to the most valuable one, and only ``fresh_limit`` of them
    are evaluated exactly. Going back to a built commit other than ``current``
    costs ``switch_cost`` (in runs), so that tests do not flit between
    commits one run at a time. ``batch``: VMs that run at once (a plan is
    whole batches; see the module docstring).
    """
    h = horizon(batch)
    clean = belief.clean_survival(h)
    sizes = plan_sizes(batch)
    q_all = crash_probabilities(belief, graph)
    useful = (q_all > 1e-6) & (q_all < 1.0 - 1e-6)
    options: list[Option] = []
    olds = [i for i in built if (testable >> i) & 1 and useful[i]]
    if olds:
        surv = np.array([survival_curve(belief, *built[i], near_probability(belief, graph, i), runs=h)
                         for i in olds])
        cleans = np.array([belief.clean_survival(h, *built[i]) for i in olds])
        switch = np.array([0.0 if i == current else switch_cost for i in olds])
        values = plan_values(q_all[olds], surv, cleans, switch, batch)
        for i, row in zip(olds, values, strict=True):
            k = int(np.argmax(row))
            if row[k] > 0.0:
                options.append(Option(i, sizes[k], float(row[k]), float(q_all[i]), True))
    pop = survival_curve(belief, 0, 0, runs=h)
    grid = np.arange(1, 64) / 64
    q_star = float(grid[int(np.argmax(plan_values(grid, pop, clean, build_cost, batch).max(axis=1)))])
    n = len(graph)
    ok = useful & bit_mask(testable, n)
    ok[list(built)] = False
    fresh = np.flatnonzero(ok)
    order = fresh[np.lexsort((fresh, np.abs(q_all[fresh] - q_star)))]
    picked: list[int] = []
    seen_q: set[float] = set()
    for i in (int(x) for x in order):
        if len(picked) >= fresh_limit:
            break
        key = round(float(q_all[i]), 9)
        if key not in seen_q:  # else it splits the belief exactly as one already picked
            seen_q.add(key)
            picked.append(i)
    if picked:
        surv = np.array([survival_curve(belief, 0, 0, near_probability(belief, graph, i), runs=h)
                         for i in picked])
        values = plan_values(q_all[picked], surv, clean, build_cost, batch)
        for i, row in zip(picked, values, strict=True):
            k = int(np.argmax(row))
            if row[k] > 0.0:
                options.append(Option(i, sizes[k], float(row[k]), float(q_all[i]), False))
    options.sort(key=lambda o: (-o.value, o.index))
    return options
