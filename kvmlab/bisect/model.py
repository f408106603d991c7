"""The adaptive policy's belief: a posterior over the culprit and the crash rates.

Model. The culprit is one commit of the range, a priori uniform. In a cause
bisection the *crashing* commits are those that contain the culprit; in a fix
bisection, those that do not. Each crashing commit ``j`` crashes a run with the
target bug with its **own** probability ``p_j``: a race's window changes from
commit to commit, so a reliable bad tip says little about a flaky commit next
to the culprit. The ``p_j`` are drawn from a population of rates shared by the
range (hierarchical): by default their log-odds are normal around an unknown
mean with an unknown spread (spread 0 is one rate shared by every crashing
commit). Both are learnt from the data: consistent rates make the model as
sharp as a shared rate, differing ones make it careful. The mean's prior is
uniform in log rate, so a few fast crashes do not make a high rate certain.
Rates live on a grid (:attr:`RateModel.p`) whose smallest value is a floor: a
commit that crashes less often than that cannot be told from a clean one
within any budget.

Background. A *clean* commit (one without the bug) may still show a crash with
the target's title: a title that merges two root causes, a race the culprit
only widened, a mis-titled report, an older bug with the same top frame. A
clean commit ``j`` shows it with its own small probability ``b_j``, drawn
from a population of *background rates*: log-normal around a typical rate
``b`` (a small grid, :attr:`RateModel.background`, with a prior that makes a
(near-)zero rate likely but not certain) with a spread ``s`` (one of
:attr:`RateModel.background_spreads`; 0 = one rate shared by every clean
commit; the default, see :attr:`AdaptivePolicy.background_spreads`). The
other code a commit carries changes how often the other path is
hit, so a clean commit may show the title at three times the typical rate;
with a shared rate such a commit could only be "the bug", and with rates of
the bug's commits that low the culprit was named wrong half of the time (bg
jitter: benchmarks/flaky_bisect.py). ``(b, s)`` is learnt from the runs of
the commits that are clean under each hypothesis and marginalised. One target
crash among many clean runs then weighs as a background crash would, against
the rate the commits with the bug show.

Rates near the culprit. A crashing commit within ``near`` commits of the
culprit (in the range's topological order) may have a rate unlike the rest: a
later change often widens the race, so the commits right after the culprit
crash less often than the tip. Their rates come from a *near* population:
either the same as the others (``tied``) or log-odds normal around a mean of
their own. The commit next to the culprit, whose clean runs decide the answer,
is then judged by the rates seen near the culprit, not by the tip's. The near
mean's prior is uniform on [0, 1] (not in log rate): low rates near the
culprit stay possible, not a third of the prior whatever the range shows.

Reverts. A tree kvmlab made — a likely culprit reverted on the bad commit —
is one more observation: its ancestor bitset is the bad commit's less that
commit (a fix bisection: the candidate fix applied, its own bit), so it has
the bug unless that commit is the culprit. When it has the bug it crashes at
the bad commit's own rate (one commit less is the same race), so its runs are
weighed *tied* to the bad commit's: given those, not as a commit of its own
(:attr:`Observation.tied`).

Only runs that answered count: a target crash (a boot crash with the target's
title included) or an OK run. Other crashes, boot failures and infrastructure
errors carry no information about this bug.

Computation. Candidates whose state is the same for every tested commit
(clean, crashing far from the culprit, or crashing near it) have the same
likelihood, so they are split into classes (bitsets) by the tested commits'
ancestor sets and near windows. A tested commit's runs have one likelihood if
it is clean, one per point of the hyper grid (mean, spread) if it crashes far
from the culprit, and one per near mean if near; a class's log-likelihood is a
sum of those, so the posterior is a (classes x near means x hyper) array.
Given the class, the background touches only the clean commits and the
population only the crashing ones, so the background's axis (typical rate x
spread) is summed out per class (a classes x background array) and never
multiplies the others. With :attr:`RateModel.background_adds` (the default)
the crashing commits see the typical background too, as a *level* axis (one
per typical rate): the background is then summed out per class and level. The joint is
never built: the near means and the hyper points enter as separate terms, so
its marginals are sums of (classes x levels x hyper) and (classes x levels x
near means) arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def _logit_grid(lo: float, hi: float, n: int) -> Array:
    a, b = math.log(lo / (1 - lo)), math.log(hi / (1 - hi))
    x = np.linspace(a, b, n)
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _cell_widths(grid: Array) -> Array:
    """Width of the part of [0, 1] closest to each grid point."""
    edges = np.concatenate(([0.0], (grid[1:] + grid[:-1]) / 2, [1.0]))
    return np.asarray(np.diff(edges), dtype=np.float64)


def _cell_offsets(k: int) -> Array:
    """Midpoints of ``k`` equal parts of a cell one step wide, centred on 0."""
    return np.asarray((np.arange(k) + 0.5) / k - 0.5)


def _logsumexp(a: Array, axis: int) -> Array:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.asarray(np.log(np.sum(np.exp(a - top), axis=axis)) + np.squeeze(top, axis=axis))


@dataclass(frozen=True)
class RateModel:
    """The prior over crash rates, and the likelihood of one commit's runs.

    The population of rates of crashing commits is ``family``: ``logit`` (the
    rates' log-odds are normal around a mean, with standard deviation one of
    ``spreads``; 0 = one rate shared by every crashing commit) or ``beta``
    (Beta with mean mu and concentration one of ``spreads``; inf = shared).
    ``spread_weights`` are the spreads' prior weights; the mean is a priori
    uniform on [0, 1]. Rates live on ``p_points`` logit-spaced values from
    ``p_floor`` to ``p_ceil``.
    """

    background: tuple[float, ...] = (0.0002, 0.001, 0.003, 0.01, 0.02, 0.05)
    """The grid of background rates: P(a run of a clean commit crashes with the target's title)."""
    background_weights: tuple[float, ...] = (0.30, 0.20, 0.15, 0.13, 0.12, 0.10)
    """Prior of each background rate."""
    background_spreads: tuple[float, ...] = (0.0,)
    """Log-normal sigmas of a clean commit's own background rate around the typical one (0: shared)."""
    background_spread_weights: tuple[float, ...] = (1.0,)
    """Prior of each background spread."""
    background_adds: bool = True
    """Whether a crashing commit shows the background too: a run crashes at
    ``1 - (1 - p_j)(1 - b)`` for its own rate ``p_j`` and the typical
    background ``b``, so a commit with the bug crashes at least ``p_floor``
    more often than a clean one, and a clean commit at 2.6% is not a
    crashing one at 3%. False: ``p_j`` alone (the background and the bug's
    rates are learnt apart; the two are measured against each other in
    :attr:`~kvmlab.bisect.policy.AdaptivePolicy.background_adds`)."""
    family: str = "logit"
    spreads: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    spread_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    p_floor: float = 0.03
    p_ceil: float = 0.995
    p_points: int = 48
    cell_points: int = 1
    """Rates at which a grid point's likelihood is averaged over its cell (the
    rates closer to it than to its neighbours); 1: the grid point alone (the
    default, see :attr:`~kvmlab.bisect.policy.AdaptivePolicy.rate_cell_points`).
    With the point alone a commit's posterior drifts as its runs grow at one
    fixed rate: at 1,600 runs the likelihood is about half a grid step wide,
    so the hypothesis whose grid happens to lie nearer the measured rate
    wins. A commit before the culprit at 8.9%, where "clean with a high
    background" and "the bug at a low rate" both fit, goes from P = 0.28 at
    1,600 runs to 0.40 at 6,400 (0.28 and 0.29 with 8 points)."""
    near: int = 16
    """Crashing commits this close to the culprit draw their rate from the near population."""
    near_spread: float = 0.7
    """Log-odds standard deviation of the near population around its own mean."""
    near_tied: float = 0.5
    """Prior probability that the near population is the same as the others'."""
    mean_prior: str = "log"
    """Prior of the populations' mean rate: ``uniform`` on [0, 1], or ``log``
    (uniform in log rate: a few fast crashes do not make a high rate certain)."""
    near_mean_prior: str = "uniform"
    """Prior of the near population's own mean, ``uniform`` or ``log``. Uniform:
    with ``log`` a third of the prior put the commits next to the culprit below
    a 10% rate whatever the tip showed, and only crashes of commits near the
    culprit could lift it, so a commit before a reliable bug's culprit needed
    13-20 clean runs to be called good (see :class:`AdaptivePolicy`)."""

    @functools.cached_property
    def b(self) -> Array:
        """The background grid: the typical rate of each background hyper point
        (typical rate x spread, spread-major)."""
        return np.tile(np.asarray(self.background, dtype=np.float64), len(self.background_spreads))

    @functools.cached_property
    def log_background_prior(self) -> Array:
        w = np.asarray(self.background_weights, dtype=np.float64)
        sw = np.asarray(self.background_spread_weights, dtype=np.float64)
        if len(sw) != len(self.background_spreads) or len(w) != len(self.background):
            raise ValueError("background rates/spreads and their prior weights differ in length")
        return np.asarray(np.log(np.outer(sw / sw.sum(), w / w.sum()).ravel()))

    @functools.cached_property
    def _background_pop(self) -> tuple[Array, Array]:
        """(a clean commit's own rates (R), log P(own rate = r | hyper point) (B x R)).
        A hyper point without spread is a point mass on its typical rate, which
        heads the grid of own rates."""
        typical = np.asarray(self.background, dtype=np.float64)
        spread = [s for s in self.background_spreads if s > 0.0]
        lo = min(typical) * math.exp(-3.0 * max(spread, default=0.0))
        hi = min(0.5, max(typical) * math.exp(3.0 * max(spread, default=0.0)))
        own = np.geomspace(lo, hi, 64) if spread else np.zeros(0)
        rates = np.concatenate((typical, own))
        rows = []
        for s in self.background_spreads:
            for k, b in enumerate(typical):
                row = np.full(len(rates), -np.inf)
                if s == 0.0:
                    row[k] = 0.0
                else:
                    logpdf = -0.5 * ((np.log(own) - math.log(b)) / s) ** 2
                    row[len(typical):] = logpdf - _logsumexp(logpdf[None, :], axis=1)[0]
                rows.append(row)
        return rates, np.array(rows)

    @functools.cached_property
    def levels(self) -> Array:
        """The background a crashing commit carries, per level (L): the
        typical rates when :attr:`background_adds`, else one level of 0."""
        if not self.background_adds:
            return np.zeros(1)
        return np.asarray(self.background, dtype=np.float64)

    @functools.cached_property
    def level_of(self) -> npt.NDArray[np.intp]:
        """The level (index into :attr:`levels`) of each background hyper point."""
        k = np.arange(len(self.b))
        return np.asarray(k % len(self.background) if self.background_adds else np.zeros_like(k))

    @functools.cached_property
    def q(self) -> Array:
        """The crash rate of a crashing commit per level and own rate (L x G)."""
        return np.asarray(1.0 - (1.0 - self.levels)[:, None] * (1.0 - self.p)[None, :])

    @functools.cached_property
    def q_cells(self) -> Array:
        """:attr:`q` at :attr:`cell_points` rates across each own rate's cell (L x G x k)."""
        k = max(1, self.cell_points)
        logit = np.log(self.p / (1 - self.p))
        sub = _cell_offsets(k) * (logit[1] - logit[0]) if len(logit) > 1 else np.zeros(k)
        p = 1.0 / (1.0 + np.exp(-(logit[:, None] + sub[None, :])))
        return np.asarray(1.0 - (1.0 - self.levels)[:, None, None] * (1.0 - p)[None, :, :])

    @functools.cached_property
    def background_cells(self) -> Array:
        """A clean commit's own rates (R, as in :attr:`_background_pop`), each
        at :attr:`cell_points` rates across its cell (R x k): a typical rate
        without spread is one exact rate, an own rate of the log-spaced grid
        covers half a step to each side."""
        rates, _ = self._background_pop
        k = max(1, self.cell_points)
        n_typ = len(self.background)
        out = np.repeat(rates[:, None], k, axis=1)
        own = rates[n_typ:]
        if len(own) > 1:
            step = math.log(own[1] / own[0])
            out[n_typ:] = np.exp(np.log(own)[:, None] + (_cell_offsets(k) * step)[None, :])
        return np.asarray(out)

    @functools.cached_property
    def background_means(self) -> Array:
        """Mean own background rate of a clean commit, per hyper point."""
        rates, log_pop = self._background_pop
        return np.asarray(np.exp(log_pop) @ rates)

    @property
    def eps(self) -> float:
        """The prior mean background rate."""
        return float(np.dot(np.exp(self.log_background_prior), self.background_means))

    @functools.cached_property
    def p(self) -> Array:
        """The rate grid."""
        return _logit_grid(self.p_floor, self.p_ceil, self.p_points)

    @functools.cached_property
    def _hyper(self) -> tuple[Array, Array]:
        """(log population pmf per hyper point (H x G), log prior (H))."""
        p = self.p
        logit = np.log(p / (1 - p))
        width = _cell_widths(p)
        mu_idx = list(range(1, len(p), 2))
        mu_w = self._mean_weights(mu_idx, self.mean_prior)
        rows: list[Array] = []
        prior: list[float] = []
        total = sum(self.spread_weights)
        for spread, sw in zip(self.spreads, self.spread_weights, strict=True):
            for j in mu_idx:
                mu = float(p[j])
                shared = spread == 0.0 if self.family == "logit" else spread >= 1e6
                if shared:
                    row = np.full(len(p), -np.inf)
                    row[j] = 0.0
                else:
                    if self.family == "logit":
                        logpdf = -0.5 * ((logit - logit[j]) / spread) ** 2
                    else:
                        a, b = mu * spread, (1 - mu) * spread
                        logpdf = (a - 1) * np.log(p) + (b - 1) * np.log1p(-p) + np.log(width)
                    row = logpdf - _logsumexp(logpdf[None, :], axis=1)[0]
                rows.append(row)
            prior.extend(math.log(sw / total) + math.log(w / mu_w.sum()) for w in mu_w)
        return np.array(rows), np.array(prior)

    def _mean_weights(self, idx: list[int], prior: str) -> Array:
        w = _cell_widths(self.p[idx])
        if prior == "log":
            w = w / self.p[idx]
        elif prior != "uniform":
            raise ValueError(f"unknown prior of a mean crash rate: {prior!r} (log or uniform)")
        return np.asarray(w / w.sum())

    @functools.cached_property
    def _near(self) -> tuple[Array, Array]:
        """(log pmf of the near population per free mean (S x G), log prior of
        the S free means and, last, of ``tied``)."""
        p = self.p
        logit = np.log(p / (1 - p))
        mu_idx = list(range(1, len(p), 2))
        mu_w = self._mean_weights(mu_idx, self.near_mean_prior)
        rows = []
        for j in mu_idx:
            logpdf = -0.5 * ((logit - logit[j]) / self.near_spread) ** 2
            rows.append(logpdf - _logsumexp(logpdf[None, :], axis=1)[0])
        free = (1.0 - self.near_tied) * mu_w / mu_w.sum()
        return np.array(rows), np.log(np.concatenate((free, [self.near_tied])))

    @property
    def log_pop(self) -> Array:
        """log P(rate = p[g] | hyper point h), shape (H, G)."""
        return self._hyper[0]

    @property
    def log_near_pop(self) -> Array:
        """log P(rate = p[g] | near mean s), shape (S, G)."""
        return self._near[0]

    @property
    def log_near_prior(self) -> Array:
        """log prior of the S near means, then of ``tied`` (S + 1)."""
        return self._near[1]

    @property
    def log_hyper_prior(self) -> Array:
        return self._hyper[1]

    def powers(self, horizon: int) -> Array:
        """(1 - p[g]) ** t for t = 0 .. ``horizon``, shape (G, horizon + 1)."""
        return _powers(self, horizon)

    def crashing_loglik(self, crashes: int, oks: int) -> Array:
        """log P(these runs | the commit crashes, level l, hyper point h), (L x H)."""
        return _loglik(self, False, crashes, oks)

    def near_loglik(self, crashes: int, oks: int) -> Array:
        """log P(these runs | the commit crashes near the culprit, level l, near mean s), (L x S)."""
        return _loglik(self, True, crashes, oks)

    def clean_loglik(self, crashes: int, oks: int) -> Array:
        """log P(these runs | the commit is clean, background hyper point k), per k."""
        return _clean_loglik(self, crashes, oks)

    def clean_survival(self, weights: Array, horizon: int, crashes: int = 0, oks: int = 0) -> Array:
        """P(no target crash in t more runs | the commit is clean and showed
        these runs), t = 0 .. ``horizon``, for the background hyper points'
        posterior ``weights``."""
        like, curves = _clean_curves(self, horizon, crashes, oks)
        w = np.log(np.maximum(weights, 1e-300)) + like
        w = np.exp(w - w.max())
        return np.asarray((w / w.sum()) @ curves)

    def rate_table(self, near: bool, crashes: int, oks: int) -> Array:
        """P(own rate = p[g] | level, population row, a crashing commit's runs):
        shape (L, H, G) for the hyper grid, (L, S, G) for the near means."""
        return _rate_given(self, near, crashes, oks)


@functools.lru_cache(maxsize=64)
def _powers(model: RateModel, horizon: int) -> Array:
    out = np.asarray((1.0 - model.p)[:, None] ** np.arange(horizon + 1)[None, :])
    out.setflags(write=False)
    return out


def _binomial_terms(rates: Array, crashes: int, oks: int) -> Array:
    """log P(``crashes`` crashes and ``oks`` OK runs | a run crashes at each rate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(crashes == 0, 0.0, crashes * np.log(rates)) + oks * np.log1p(-rates))


def _cell_terms(cells: Array, crashes: int, oks: int) -> Array:
    """:func:`_binomial_terms` averaged over the last axis (the rates across each cell)."""
    terms = _binomial_terms(cells, crashes, oks)
    return np.asarray(_logsumexp(terms, axis=-1) - math.log(cells.shape[-1]))


@functools.lru_cache(maxsize=65536)
def _clean_loglik(model: RateModel, crashes: int, oks: int) -> Array:
    _, log_pop = model._background_pop
    out = _logsumexp(log_pop + _cell_terms(model.background_cells, crashes, oks)[None, :], axis=1)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8192)
def _clean_curves(model: RateModel, horizon: int, crashes: int, oks: int) -> tuple[Array, Array]:
    """(log P(these runs | clean, hyper point k), P(no crash in t more runs |
    clean, these runs, k)) for the background's hyper points."""
    _, log_pop = model._background_pop
    cells = model.background_cells                                                # (R, k)
    like = _clean_loglik(model, crashes, oks)
    # P(own rate = cells[r, j] | these runs, k): the cell's prior split evenly over its rates.
    terms = _binomial_terms(cells, crashes, oks) - math.log(cells.shape[1])      # (R, k)
    own = np.exp(log_pop[:, :, None] + terms[None, :, :] - like[:, None, None])   # (K, R, k)
    powers = (1.0 - cells)[:, :, None] ** np.arange(horizon + 1)[None, None, :]  # (R, k, T)
    curves = np.einsum("krj,rjt->kt", own, powers)
    curves.setflags(write=False)
    return like, curves


def _crashing_terms(model: RateModel, crashes: int, oks: int) -> Array:
    """log P(these runs | a crashing commit of each level and own rate), (L x G)."""
    return _cell_terms(model.q_cells, crashes, oks)


@functools.lru_cache(maxsize=256)  # an entry is L x H x G floats (276 KiB with 6 levels): 70 MiB at most
def _rate_given(model: RateModel, near: bool, crashes: int, oks: int) -> Array:
    pop = model.log_near_pop if near else model.log_pop
    log_post = pop[None, :, :] + _crashing_terms(model, crashes, oks)[:, None, :]     # (L, H, G)
    out = np.exp(log_post - _logsumexp(log_post, axis=2)[:, :, None])
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=65536)
def _loglik(model: RateModel, near: bool, crashes: int, oks: int) -> Array:
    pop = model.log_near_pop if near else model.log_pop
    out = _logsumexp(pop[None, :, :] + _crashing_terms(model, crashes, oks)[:, None, :], axis=2)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Observation:
    """Answered runs of one commit: ``closure`` is its ancestor bitset in the range."""

    closure: int
    crashes: int
    """Runs that crashed with the target bug."""
    oks: int
    """Runs that ran to the end without a crash."""
    near: int = 0
    """Candidates for which this commit crashes *and* is near the culprit
    (see :func:`near_mask`)."""
    tied: tuple[int, int] | None = None
    """(target crashes, OK runs) of the commit this tree was made on (a
    revert on the bad commit), whose crash rate it shares when it has the
    bug: one commit less is the same race. That commit's runs must be among
    the observations too (they count once, under every hypothesis)."""

    def loglik(self, model: RateModel, near: bool) -> Array:
        """log P(these runs | the tree crashes), (L x H) far or (L x S) near;
        for a tied tree, given its base's runs."""
        own = model.near_loglik if near else model.crashing_loglik
        if self.tied is None:
            return own(self.crashes, self.oks)
        c, o = self.tied
        return np.asarray(own(self.crashes + c, self.oks + o) - own(c, o))


def near_mask(closure: int, index: int, n: int, distance: int, *, fix: bool) -> int:
    """Candidates (bitset) for which the commit with this ancestor bitset and
    topological ``index`` crashes within ``distance`` commits of the culprit:
    for a cause bisection its own ancestors up to ``distance`` - 1 places
    before it; for a fix bisection the commits up to ``distance`` places after
    it that it does not contain."""
    if fix:
        window = ((1 << min(n, index + distance + 1)) - 1) & ~((1 << (index + 1)) - 1)
        return window & ~closure
    window = ((1 << (index + 1)) - 1) & ~((1 << max(0, index - distance + 1)) - 1)
    return window & closure


def _bit_matrix(rows: Sequence[int], width: int) -> Array:
    """Bit j of each row as a (len(rows), width) 0/1 float matrix."""
    size = (width + 7) // 8
    raw = np.frombuffer(b"".join(r.to_bytes(size, "little") for r in rows), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(rows), size), axis=1, bitorder="little")
    return np.asarray(bits[:, :width], dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _partition(all_mask: int, observed: tuple[tuple[int, int], ...],
               fix: bool) -> tuple[tuple[int, ...], Array, Array]:
    """Split the range into classes of candidates that every observation
    (ancestor bitset, near mask) treats alike: (class bitsets, far, near), where
    far[c, j] / near[c, j] = 1 when observation j crashes far from / near the
    culprit for the candidates of class c. It depends on which commits were
    tested, not on their runs, so a bisection computes it once per commit."""
    classes: list[tuple[int, int, int]] = [(all_mask, 0, 0)]
    for j, (closure, near_bits) in enumerate(observed):
        crash = (all_mask & ~closure) if fix else closure
        near = near_bits & crash
        far = crash & ~near
        refined = []
        for bits, f, n in classes:
            for part, df, dn in ((bits & far, 1, 0), (bits & near, 0, 1), (bits & ~crash, 0, 0)):
                if part:
                    refined.append((part, f | (df << j), n | (dn << j)))
        classes = refined
    far_m = _bit_matrix([f for _, f, _ in classes], len(observed))
    near_m = _bit_matrix([n for _, _, n in classes], len(observed))
    far_m.setflags(write=False)
    near_m.setflags(write=False)
    return tuple(bits for bits, _, _ in classes), far_m, near_m


@functools.lru_cache(maxsize=64)
def _members(classes: tuple[int, ...], n: int) -> npt.NDArray[np.intp]:
    """The class of every candidate, by bit index (length ``n``; bits in no
    class get ``len(classes)``: index a per-class array with a 0 appended)."""
    out = np.full(n, len(classes), dtype=np.intp)
    for c, bits in enumerate(classes):
        out[bit_indices(bits, n)] = c
    out.setflags(write=False)
    return out


class Belief:
    """What the adaptive policy believes after some observations.

    ``classes[c]`` is a bitset of candidates with equal posterior;
    ``mass[c]`` the posterior of the whole class; ``hyper`` the posterior over
    (level, the population's hyper point).
    """

    def __init__(self, model: RateModel, all_mask: int, observations: Sequence[Observation], *,
                 fix: bool) -> None:
        self.model = model
        self._probabilities: dict[int, Array] = {}
        self.fix = fix
        obs = [o for o in observations if o.crashes or o.oks]
        self.observations = obs
        classes, far_m, near_m = _partition(all_mask, tuple((o.closure, o.near) for o in obs), fix)
        self.classes = list(classes)  # the cached partition is shared: a copy to hand out
        n_c, n_o = len(self.classes), len(obs)
        h = len(model.log_hyper_prior)
        s = len(model.log_near_prior) - 1
        n_l = len(model.levels)
        far_ll = np.array([o.loglik(model, False) for o in obs]).reshape(n_o, n_l * h)
        near_ll = np.array([o.loglik(model, True) for o in obs]).reshape(n_o, n_l * s)
        k = len(model.b)
        clean_ll = np.array([model.clean_loglik(o.crashes, o.oks) for o in obs]).reshape(n_o, k)
        self.size = np.array([bits.bit_count() for bits in self.classes], dtype=np.float64)
        bg = (1.0 - far_m - near_m) @ clean_ll + model.log_background_prior[None, :]  # (C, K)
        level = model.level_of
        bg_level = np.stack([_logsumexp(bg[:, level == lv], axis=1) for lv in range(n_l)], axis=1)  # (C, L)
        base = ((far_m @ far_ll).reshape(n_c, n_l, h) + bg_level[:, :, None]
                + model.log_hyper_prior[None, None, :] + np.log(self.size)[:, None, None])  # (C, L, H)
        prior_near = model.log_near_prior
        near_part = (near_m @ near_ll).reshape(n_c, n_l, s) + prior_near[None, None, :s]   # (C, L, S)
        tied_part = base + (near_m @ far_ll).reshape(n_c, n_l, h) + prior_near[s]          # (C, L, H)
        # The joint over (class, level, near mean or tied, hyper point) is
        # base + near_part for a free near mean and tied_part for tied: its
        # marginals are sums of (C, L, H) and (C, L, S) terms, never the product.
        base_sum = _logsumexp(base, axis=2)                                  # (C, L)
        near_sum = _logsumexp(near_part, axis=2)
        tied_sum = _logsumexp(tied_part, axis=2)
        free = base_sum + near_sum
        log_class_level = np.logaddexp(free, tied_sum)
        top = float(log_class_level.max())
        log_z = top + math.log(float(np.exp(log_class_level - top).sum()))
        class_level = np.exp(log_class_level - log_z)                       # (C, L)
        self.mass: Array = np.asarray(class_level.sum(axis=1))
        tied = np.exp(tied_part - log_z)                                     # (C, L, H)
        far_hyper = np.exp(base + near_sum[:, :, None] - log_z) + tied
        self.hyper: Array = np.asarray(far_hyper.sum(axis=0))                # (L, H): far population
        near_levels = np.exp(near_part + base_sum[:, :, None] - log_z).sum(axis=0)
        self.near_levels: Array = np.asarray(near_levels)                    # (L, S)
        tied_total = tied.sum(axis=0)
        # The S free near means, then tied.
        self.near_weights: Array = np.append(self.near_levels.sum(axis=0), tied_total.sum())
        self.tied_hyper: Array = (np.asarray(tied_total / tied_total.sum()) if tied_total.sum() > 0
                                  else self.hyper / self.hyper.sum())
        bg_given = np.exp(bg - bg_level[:, level])
        self.background: Array = np.asarray(np.einsum("ck,ck->k", class_level[:, level], bg_given))  # (K)
        """Posterior of the background's hyper points (typical rates :attr:`RateModel.b`)."""

    # -- the culprit -------------------------------------------------------

    def per_member(self) -> Array:
        """Posterior of one candidate of each class."""
        return np.asarray(self.mass / self.size)

    def best(self) -> tuple[int, float]:
        """(bit index, posterior) of the most probable culprit (lowest index on ties)."""
        per = self.per_member()
        top = float(per.max())
        c = min((c for c in range(len(self.classes)) if per[c] >= top * (1 - 1e-12)),
                key=lambda c: (self.classes[c] & -self.classes[c]).bit_length())
        bits = self.classes[c]
        return (bits & -bits).bit_length() - 1, float(per[c])

    def ranked(self) -> list[tuple[int, float]]:
        """(bitset, posterior per member) of every class, most probable first."""
        per = self.per_member()
        return sorted(zip(self.classes, (float(x) for x in per), strict=True), key=lambda t: -t[1])

    def credible(self, level: float) -> int:
        """Smallest set of candidates (bitset) holding at least ``level`` of the mass."""
        out, mass = 0, 0.0
        for bits, w in self.ranked():
            if mass >= level:
                break
            out |= bits
            mass += w * bits.bit_count()
        return out

    def probabilities(self, n: int) -> Array:
        """Posterior of every candidate, by bit index (length ``n``; computed
        once per belief: the planner asks for it per commit)."""
        if n not in self._probabilities:
            out = np.append(self.per_member(), 0.0)[_members(tuple(self.classes), n)]
            out.setflags(write=False)
            self._probabilities[n] = out
        return self._probabilities[n]

    # -- commits -----------------------------------------------------------

    def changed_probability(self, closure: int) -> float:
        """P(the commit with this ancestor bitset contains the culprit)."""
        per = self.per_member()
        return float(sum(per[c] * (bits & closure).bit_count()
                         for c, bits in enumerate(self.classes) if bits & closure))

    def crash_probability(self, closure: int) -> float:
        """P(the commit with this ancestor bitset is in the crashing state)."""
        q = self.changed_probability(closure)
        return 1.0 - q if self.fix else q

    def near_probability(self, closure: int, near: int, n: int) -> float:
        """P(the commit is near the culprit | it crashes), for the commit with
        this ancestor bitset and near mask (:func:`near_mask`), in a range of
        ``n`` candidates."""
        own = self.probabilities(n)
        crash = bit_mask(closure, n)
        crashing = float(own[~crash].sum() if self.fix else own[crash].sum())
        if crashing <= 0.0:
            return 0.0
        return min(1.0, float(own[bit_mask(near, n)].sum()) / crashing)

    def rate_pmf(self, crashes: int, oks: int, near: float = 0.0) -> Array:
        """P(the commit's level = l and own rate = p[g] | it crashes and showed
        these runs), (L x G), for a commit near the culprit with probability
        ``near`` (its crash rate is :attr:`RateModel.q`)."""
        m = self.model
        far = np.einsum("lh,lhg->lg", self.hyper, m.rate_table(False, crashes, oks))
        if near <= 0.0:
            return np.asarray(far / far.sum())
        tied = np.einsum("lh,lhg->lg", self.tied_hyper, m.rate_table(False, crashes, oks))
        w = self.near_weights
        close = np.einsum("ls,lsg->lg", self.near_levels, m.rate_table(True, crashes, oks)) + w[-1] * tied
        mix = (1.0 - near) * far / far.sum() + near * close / close.sum()
        return np.asarray(mix / mix.sum())

    def background_rate(self) -> float:
        """Posterior mean background rate (a run of a clean commit shows the target's title)."""
        return float(np.dot(self.background, self.model.background_means))

    def clean_survival(self, horizon: int, crashes: int = 0, oks: int = 0) -> Array:
        """P(no target crash in t more runs | the commit is clean and showed
        these runs), t = 0 .. ``horizon``."""
        return self.model.clean_survival(self.background, horizon, crashes, oks)

    def survival(self, crashes: int, oks: int, horizon: int, near: float = 0.0) -> Array:
        """P(no target crash in t more runs | the commit crashes), t = 0 .. ``horizon``."""
        m = self.model
        own = self.rate_pmf(crashes, oks, near) @ m.powers(horizon)                  # (L, T)
        carried = (1.0 - m.levels)[:, None] ** np.arange(horizon + 1)[None, :]
        return np.asarray((own * carried).sum(axis=0))

    def rate(self, crashes: int, oks: int, near: float = 0.0) -> float:
        """Posterior mean crash rate of a crashing commit with these runs."""
        return float((self.rate_pmf(crashes, oks, near) * self.model.q).sum())


def bit_mask(bits: int, n: int) -> npt.NDArray[np.bool_]:
    """The bits of ``bits`` below ``n`` as a boolean array."""
    raw = np.frombuffer(bits.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def bit_indices(bits: int, n: int) -> npt.NDArray[np.intp]:
    """Indices of the set bits of ``bits`` (below ``n``), ascending."""
    raw = np.frombuffer(bits.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")[:n])
