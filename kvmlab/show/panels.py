"""The report's panels made from the steps and the evidence: the belief
charts, the crash titles seen, the job's timeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kvmlab.show import layout
from kvmlab.show.meta import JobMeta
from kvmlab.show.model import CommitView, TitleCount, build_kind
from kvmlab.vmm.resources import Sample

#: Candidates drawn in the probability chart, at most.
CHART_SERIES = 6


def prob_chart(steps: Sequence[tuple[float, dict[str, Any]]], subject: Callable[[str], str],
               goal: float | None) -> tuple[layout.Chart | None, list[tuple[str, str, str]]]:
    """Probability of the leading candidates after each step (adaptive policy
    only), with the line of each labelled by its commit's ``subject``."""
    if not steps or not any(st.get("top") for _, st in steps):
        return None, []
    best: dict[str, float] = {}
    for _, st in steps:
        for h, p in st.get("top", []):
            best[h] = max(best.get(h, 0.0), float(p))
    final = [h for h, _ in steps[-1][1].get("top", [])[:3]]
    keys = list(dict.fromkeys([*final, *sorted(best, key=lambda h: -best[h])]))[:CHART_SERIES]
    series = []
    for h in keys:
        pts = []
        for n, (_, st) in enumerate(steps, 1):
            p = dict((str(x), float(y)) for x, y in st.get("top", [])).get(h)
            if p is not None:
                pts.append((float(n), p))
        label = f"{h[:12]} {subject(h)}".strip()
        series.append(layout.Series(label, h, tuple(pts)))
    hl = [(goal, f"goal {goal:.0%}")] if goal else []
    chart = layout.line_chart(series, x_max=max(1, len(steps)), y_max=1.0,
                              y_ticks=(0.0, 0.25, 0.5, 0.75, 1.0), hlines=hl,
                              x_label_every=max(1, len(steps) // 12))
    return chart, [(ln.key, ln.label, ln.colour) for ln in chart.lines]


def remaining_chart(steps: Sequence[tuple[float, dict[str, Any]]]) -> layout.Chart | None:
    """Candidates left after each step (either policy)."""
    pts = tuple((float(n), float(st.get("remaining", 0))) for n, (_, st) in enumerate(steps, 1))
    if not pts:
        return None
    top = max(y for _, y in pts) or 1.0
    ticks = sorted({0.0, float(round(top / 2)), top})
    return layout.line_chart([layout.Series("candidates left", "remaining", pts)], x_max=max(1, len(steps)),
                             y_max=top, y_ticks=ticks, y_fmt="{:.0f}", width=640, height=160,
                             x_label_every=max(1, len(steps) // 12))


def crash_titles(commits: dict[str, CommitView]) -> list[TitleCount]:
    seen: dict[tuple[str, str], TitleCount] = {}
    for c in commits.values():
        for r in c.runs:
            if r.kind in ("target", "other"):
                key = (r.title or "?", "crash")
            elif r.kind == "boot-failed" and r.title:
                key = (r.title, "boot")
            else:
                continue
            t = seen.setdefault(key, TitleCount(key[0], 0, False, [], key[1]))
            t.count += 1
            t.target = t.target or r.kind == "target"
            if c.hash not in t.commits:
                t.commits.append(c.hash)
    return sorted(seen.values(), key=lambda t: (not t.target, -t.count, t.title))


def timeline(commits: dict[str, CommitView], meta: JobMeta | None, origin: float, end_t: float,
             loads: Sequence[layout.Load] = ()
             ) -> tuple[layout.Timeline | None, dict[str, tuple[float, int]]]:
    spans: list[layout.Span] = []
    fb = meta.first_build if meta is not None else None
    if fb and meta is not None and meta.started:
        d = 0.0 if fb.get("cached") else float(fb.get("duration", 0.0))
        kind = build_kind(fb)[0]
        s0 = meta.started - origin
        spans.append(layout.Span("build", s0, s0 + d, kind,
                                 f"{str(fb.get('commit', ''))[:12]} (before the first step): "
                                 f"{kind}, {d:.0f} s"))
    vms = 0
    for c in commits.values():
        if c.build is not None:
            b = c.build
            spans.append(layout.Span("build", b.start, b.end, b.kind, f"{c.short}: {b.label}"))
        for r in c.runs:
            vms = max(vms, r.vm + 1)
            spans.append(layout.Span(f"VM {r.vm}", r.start, r.end, r.kind,
                                     f"{c.short} {r.label} ({r.duration:.0f} s)"))
    total = max([end_t - origin, *(s.end for s in spans)], default=0.0)
    if not spans or total <= 0:
        return None, {}
    idle = layout.idle_spans(spans, total)
    rows = ["build", *(f"VM {i}" for i in range(vms)), "waiting"]
    tl = layout.lay_out_timeline([*spans, *idle], rows, total=total, loads=loads)
    totals: dict[str, tuple[float, int]] = {"total": (total, 0)}
    for s in spans:
        if s.row == "build":
            secs, n = totals.get(f"build ({s.kind})", (0.0, 0))
            totals[f"build ({s.kind})"] = (secs + s.end - s.start, n + 1)
    vm = [s for s in spans if s.row.startswith("VM ")]
    totals["VM runs (time summed over VMs)"] = (sum(s.end - s.start for s in vm), len(vm))
    totals["waiting (no build, no VM)"] = (sum(s.end - s.start for s in idle), 0)
    return tl, totals


def time_split(result: dict[str, Any], *, builds: int, runs: int) -> dict[str, tuple[float, int]]:
    """The job's wall time and its parts as ``result.json`` (and the log's
    closing block) has them: they add up to the total."""

    def secs(key: str) -> float:
        v = result.get(key, 0.0)
        return float(v) if isinstance(v, (int, float)) else 0.0

    return {
        "total": (secs("total_seconds"), 0),
        "build": (secs("build_seconds"), builds),
        "test (VM runs, at a full pool)": (secs("test_seconds"), runs),
        "VM idle (pool slots unused during runs)": (secs("vm_idle_seconds"), 0),
        "waiting (no build, no VM)": (secs("waiting_seconds"), 0),
    }


def vm_loads(samples: Sequence[Sample], origin: float) -> tuple[list[layout.Load], str]:
    """The QEMU CPU of each VM row from a job's resource samples (seconds
    since ``origin``), on one scale: 100% of a host core, or the highest
    sample when a QEMU used more; and a line saying what the lines are."""
    if not samples:
        return [], ""
    top = max(100.0, *(s.cpu for s in samples))
    by_vm: dict[int, list[Sample]] = {}
    for s in samples:
        by_vm.setdefault(s.vm, []).append(s)
    loads = []
    for vm, ss in sorted(by_vm.items()):
        peak = max(s.rss for s in ss)
        mean = sum(s.cpu for s in ss) / len(ss)
        loads.append(layout.Load(f"VM {vm}", tuple((s.t - origin, s.cpu / top) for s in ss),
                                 f"VM {vm}: QEMU CPU, mean {mean:.0f}% of a host core, peak RSS "
                                 f"{peak / 2**20:.0f} MiB ({len(ss)} samples)"))
    note = (f"The CPU band under each VM row is its QEMU's CPU on this machine (the band's height is "
            f"{top:.0f}% of one host core), sampled every few seconds; hover the line for the mean and the "
            f"peak memory. VMs on a remote host are not sampled.")
    return loads, note
