"""Pure geometry for the HTML report: commit-graph lanes, line charts, the job's timeline.

Nothing here reads files or runs git; everything takes plain data and returns
plain data (coordinates in SVG user units, i.e. CSS pixels), so it is
snapshot-testable and the templates only draw what these functions computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Commit graph: pixels between rows and between lanes, and the left margin.
ROW_H = 26
LANE_W = 18
GRAPH_PAD = 14


@dataclass(frozen=True)
class GraphNode:
    commit: str
    row: int
    lane: int
    x: float
    y: float


@dataclass(frozen=True)
class GraphEdge:
    child: str
    parent: str
    path: str
    """SVG path data, from the child's dot down to the parent's."""
    lane: int


@dataclass(frozen=True)
class GraphLayout:
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    lanes: int
    width: float
    height: float
    stubs: tuple[GraphEdge, ...] = ()
    """Edges leaving the drawn part downwards (a parent outside it)."""


def nearest_subgraph(
    order: Sequence[str], closure: Mapping[str, int], bit: Mapping[str, int], keep: Sequence[str]
) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    """The part of a DAG spanned by ``keep``: each kept commit with its nearest
    kept ancestors (those not behind another kept ancestor), in ``order``
    (parents first), and per kept commit the number of commits left out
    between it and them.

    ``closure[h]``: ancestor bitset of ``h`` including itself; ``bit[h]``: its own bit.
    """
    kept = [h for h in order if h in set(keep)]
    mask = 0
    for h in kept:
        mask |= bit[h]
    out: list[tuple[str, list[str]]] = []
    hidden: dict[str, int] = {}
    by_bit = {bit[h]: h for h in kept}
    for h in kept:
        anc = closure[h] & mask & ~bit[h]
        behind = 0
        bits = anc
        while bits:
            low = bits & -bits
            bits ^= low
            behind |= closure[by_bit[low]] & ~low
        nearest = anc & ~behind
        parents = []
        covered = 0
        bits = nearest
        while bits:
            low = bits & -bits
            bits ^= low
            parents.append(by_bit[low])
            covered |= closure[by_bit[low]]
        out.append((h, parents))
        hidden[h] = (closure[h] & ~bit[h] & ~covered).bit_count()
    return out, hidden


def lay_out_graph(rows: Sequence[tuple[str, Sequence[str]]], *, newest_first: bool = True) -> GraphLayout:
    """Lanes for ``(commit, parents)`` rows given parents first, drawn newest
    on top, the way ``git log --graph`` does: a commit takes the lane its
    first child reserved for it, its first parent continues that lane, other
    parents (merged branches) get lanes of their own. Parents not among the
    rows become short stubs going down from the commit."""
    present = {h for h, _ in rows}
    seq = list(reversed(rows)) if newest_first else list(rows)
    lanes: list[str | None] = []
    placed: dict[str, tuple[int, int]] = {}
    pending: dict[str, list[tuple[str, int]]] = {}
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    stubs: list[GraphEdge] = []
    width_lanes = 1

    def free_lane(prefer: int = 0) -> int:
        for k in range(prefer, len(lanes)):
            if lanes[k] is None:
                return k
        lanes.append(None)
        return len(lanes) - 1

    for row, (h, parents) in enumerate(seq):
        mine = [k for k, want in enumerate(lanes) if want == h]
        lane = mine[0] if mine else free_lane()
        for k in mine:
            lanes[k] = None
        x, y = _xy(row, lane)
        placed[h] = (row, lane)
        nodes.append(GraphNode(h, row, lane, x, y))
        for child, via in pending.pop(h, []):
            crow, clane = placed[child]
            edges.append(GraphEdge(child, h, _edge_path(crow, clane, via, row, lane), via))
        inside = [p for p in parents if p in present]
        for p in parents:
            if p not in present:
                stubs.append(GraphEdge(h, p, _stub_path(row, lane), lane))
        for i, p in enumerate(inside):
            if p in placed:  # not possible with parents-first input, but be safe
                continue
            waiting = [k for k, want in enumerate(lanes) if want == p]
            if i == 0 and lanes[lane] is None:
                via = lane  # the first parent goes straight down, as in git log --graph
            elif waiting:
                via = waiting[0]
            else:
                via = free_lane(lane + 1)
            lanes[via] = p
            pending.setdefault(p, []).append((h, via))
        while lanes and lanes[-1] is None:
            lanes.pop()
        width_lanes = max(width_lanes, len(lanes), lane + 1)
    height = GRAPH_PAD * 2 + max(0, len(seq) - 1) * ROW_H + (ROW_H // 2 if stubs else 0)
    width = GRAPH_PAD * 2 + (width_lanes - 1) * LANE_W
    return GraphLayout(tuple(nodes), tuple(edges), width_lanes, width, height, tuple(stubs))


def _xy(row: int, lane: int) -> tuple[float, float]:
    return GRAPH_PAD + lane * LANE_W, GRAPH_PAD + row * ROW_H


def _edge_path(crow: int, clane: int, via: int, prow: int, plane: int) -> str:
    """Child dot -> bend into lane ``via`` -> straight down -> bend into the parent's lane."""
    cx, cy = _xy(crow, clane)
    px, py = _xy(prow, plane)
    vx = _xy(0, via)[0]
    if prow == crow + 1 or (clane == via == plane):
        if cx == px:
            return f"M{cx:g},{cy:g} L{px:g},{py:g}"
        mid = (cy + py) / 2
        return f"M{cx:g},{cy:g} C{cx:g},{mid:g} {px:g},{mid:g} {px:g},{py:g}"
    top = cy + ROW_H
    bottom = py - ROW_H
    parts = [f"M{cx:g},{cy:g}"]
    if vx != cx:
        parts.append(f"C{cx:g},{cy + ROW_H / 2:g} {vx:g},{cy + ROW_H / 2:g} {vx:g},{top:g}")
    else:
        parts.append(f"L{vx:g},{top:g}")
    parts.append(f"L{vx:g},{bottom:g}")
    if vx != px:
        parts.append(f"C{vx:g},{py - ROW_H / 2:g} {px:g},{py - ROW_H / 2:g} {px:g},{py:g}")
    else:
        parts.append(f"L{px:g},{py:g}")
    return " ".join(parts)


def _stub_path(row: int, lane: int) -> str:
    x, y = _xy(row, lane)
    return f"M{x:g},{y:g} L{x:g},{y + ROW_H / 2:g}"


# ------------------------------------------------------------------ line charts


@dataclass(frozen=True)
class Series:
    label: str
    key: str
    """What the series is of (a commit hash for candidate probabilities)."""
    points: tuple[tuple[float, float], ...]
    """(x, y) in data units; a gap in x values breaks the line."""
    dashed: bool = False


@dataclass(frozen=True)
class ChartLine:
    key: str
    label: str
    paths: tuple[str, ...]
    dots: tuple[tuple[float, float], ...]
    dashed: bool
    colour: str


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    left: float
    top: float
    plot_w: float
    plot_h: float
    lines: tuple[ChartLine, ...]
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    hlines: tuple[tuple[float, str], ...] = ()
    """Horizontal reference lines (pixel y, label)."""


#: Colours of chart series, in order (the Tableau 10 palette, readable on white).
SERIES_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                  "#ff9da7", "#9c755f", "#bab0ac")


def line_chart(
    series: Sequence[Series], *, x_max: float, y_max: float, width: float = 640, height: float = 240,
    y_ticks: Sequence[float] = (), y_fmt: str = "{:.0%}", x_label_every: int = 1,
    hlines: Sequence[tuple[float, str]] = (), gap: float = 1.0,
) -> Chart:
    """Pixel paths of ``series`` on axes 0..x_max, 0..y_max; consecutive points
    more than ``gap`` apart in x are not joined (the value was not known in between)."""
    left, top, right, bottom = 44.0, 12.0, 12.0, 28.0
    pw, ph = width - left - right, height - top - bottom
    sx = pw / x_max if x_max > 0 else 0.0
    sy = ph / y_max if y_max > 0 else 0.0

    def px(x: float, y: float) -> tuple[float, float]:
        return round(left + x * sx, 1), round(top + ph - y * sy, 1)

    lines = []
    for n, s in enumerate(series):
        paths: list[str] = []
        dots: list[tuple[float, float]] = []
        run: list[tuple[float, float]] = []
        last_x: float | None = None
        for x, y in s.points:
            if last_x is not None and x - last_x > gap and run:
                paths.append(_polyline(run))
                run = []
            p = px(x, y)
            run.append(p)
            dots.append(p)
            last_x = x
        if run:
            paths.append(_polyline(run))
        lines.append(ChartLine(s.key, s.label, tuple(paths), tuple(dots), s.dashed,
                               SERIES_COLOURS[n % len(SERIES_COLOURS)]))
    xt = tuple((px(x, 0)[0], str(x)) for x in range(0, int(x_max) + 1, max(1, x_label_every)))
    yt = tuple((px(0, y)[1], y_fmt.format(y)) for y in y_ticks)
    hl = tuple((px(0, y)[1], label) for y, label in hlines)
    return Chart(width, height, left, top, pw, ph, tuple(lines), xt, yt, hl)


def _polyline(pts: Sequence[tuple[float, float]]) -> str:
    if len(pts) == 1:
        x, y = pts[0]
        return f"M{x:g},{y:g} l0.01,0"
    return "M" + " L".join(f"{x:g},{y:g}" for x, y in pts)


# --------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class Span:
    """Something that took time: a build, a VM run, waiting."""

    row: str
    start: float
    """Seconds since the job started."""
    end: float
    kind: str
    """CSS class: ``cached``, ``incremental``, ``clean``, ``failed``, ``target``, ``ok`` ..."""
    label: str


@dataclass(frozen=True)
class TimelineBar:
    x: float
    y: float
    w: float
    h: float
    kind: str
    label: str


@dataclass(frozen=True)
class Timeline:
    width: float
    height: float
    left: float
    rows: tuple[tuple[str, float], ...]
    """(row name, pixel y of its middle)."""
    bars: tuple[TimelineBar, ...]
    ticks: tuple[tuple[float, str], ...]
    loads: tuple[TimelineLoad, ...] = ()
    """Lines drawn over rows (a VM's QEMU CPU)."""


@dataclass(frozen=True)
class TimelineLoad:
    """A quantity sampled over time, drawn in a band under its row (0 at the
    band's bottom, the top of the scale at its top)."""

    row: str
    paths: tuple[str, ...]
    label: str
    band_top: float
    """Pixel y of the top of its band (under its row)."""
    band_h: float


@dataclass(frozen=True)
class Load:
    """Samples of one row: (seconds since the job started, value 0..1 of the
    scale), and what they are."""

    row: str
    points: tuple[tuple[float, float], ...]
    label: str


def idle_spans(busy: Sequence[Span], end: float, *, min_gap: float = 1.0, row: str = "waiting") -> list[Span]:
    """Intervals of 0..end covered by none of ``busy`` (at least ``min_gap`` seconds long)."""
    out: list[Span] = []
    t = 0.0
    for s in sorted(busy, key=lambda s: s.start):
        if s.start - t >= min_gap:
            out.append(Span(row, t, s.start, "waiting", f"waiting {s.start - t:.0f} s"))
        t = max(t, s.end)
    if end - t >= min_gap:
        out.append(Span(row, t, end, "waiting", f"waiting {end - t:.0f} s"))
    return out


def lay_out_timeline(spans: Sequence[Span], rows: Sequence[str], *, total: float, width: float = 900,
                     row_h: float = 20, loads: Sequence[Load] = (), gap: float = 10.0,
                     load_h: float = 18) -> Timeline:
    """Bars of ``spans`` on one row each of ``rows`` (top to bottom), 0..total seconds
    across; bars shorter than 2 px are widened to 2 px so a cached build still shows.
    ``loads`` are drawn as lines inside their rows; samples more than ``gap``
    seconds apart are not joined (nothing ran in between); each gets a band of
    ``load_h`` pixels under its row."""
    left, right, top = 90.0, 10.0, 6.0
    pw = width - left - right
    scale = pw / total if total > 0 else 0.0
    banded = {ld.row for ld in loads if ld.points}
    ys: dict[str, float] = {}
    y = top
    for r in rows:
        ys[r] = y
        y += row_h + (load_h if r in banded else 0.0)
    bars = []
    for s in spans:
        if s.row not in ys:
            continue
        x = left + max(0.0, s.start) * scale
        w = max(2.0, (s.end - s.start) * scale)
        bars.append(TimelineBar(round(x, 1), ys[s.row] + 3, round(w, 1), row_h - 6, s.kind, s.label))
    step = _tick_step(total)
    ticks = tuple((round(left + t * scale, 1), _fmt_clock(t)) for t in _frange(0.0, total, step))
    height = y + 22
    lines = []
    for ld in loads:
        if ld.row not in ys:
            continue
        base, span = ys[ld.row] + row_h + load_h - 2, load_h - 4
        paths: list[str] = []
        run: list[tuple[float, float]] = []
        last: float | None = None
        for t, v in sorted(ld.points):
            if t < 0 or t > total:
                continue
            if last is not None and t - last > gap and run:
                paths.append(_polyline(run))
                run = []
            run.append((round(left + t * scale, 1), round(base - min(1.0, max(0.0, v)) * span, 1)))
            last = t
        if run:
            paths.append(_polyline(run))
        if paths:
            lines.append(TimelineLoad(ld.row, tuple(paths), ld.label, round(ys[ld.row] + row_h, 1), load_h))
    return Timeline(width, height, left, tuple((r, ys[r] + row_h / 2) for r in rows), tuple(bars), ticks,
                    tuple(lines))


def _tick_step(total: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if total / step <= 10:
            return float(step)
    return 28800.0


def _frange(a: float, b: float, step: float) -> list[float]:
    out = []
    t = a
    while t <= b + 1e-9:
        out.append(t)
        t += step
    return out


def _fmt_clock(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{sec}s"
