"""A ``kvmlab repro`` run as its report shows it: per-run outcomes, titles,
the crash rate and the reports, from the run's ``result.json`` and ``meta.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmlab.errors import MissingFileError, UserError
from kvmlab.show import layout, panels
from kvmlab.show.bisection import RESULT_NAME
from kvmlab.show.meta import JobMeta, load_meta
from kvmlab.show.model import RUN_KINDS, RunView, TitleCount
from kvmlab.vmm.resources import INTERVAL, SAMPLES_NAME, read_samples


@dataclass
class ReproView:
    workdir: Path
    meta: JobMeta | None
    runs: list[RunView]
    crashes: int
    answered: int
    """Runs that came to an outcome other than an infra error."""
    cancelled: int
    wall: float
    titles: list[TitleCount]
    timeline: layout.Timeline | None
    expect: str | None
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)
    load_note: str = ""
    """What the lines in the timeline's VM rows are (empty: no samples)."""

    @property
    def rate(self) -> float:
        return self.crashes / self.answered if self.answered else 0.0


def is_repro_dir(path: Path) -> bool:
    """A repro workdir: a ``result.json`` with per-run outcomes and no journal."""
    try:
        d = json.loads((path / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "runs" in d and "outcome" not in d


def load_repro(workdir: Path) -> tuple[dict[str, Any], JobMeta | None]:
    try:
        d = json.loads((workdir / RESULT_NAME).read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{workdir}: no {RESULT_NAME} in it") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{workdir / RESULT_NAME}: not readable as JSON: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("runs"), list):
        raise UserError(f"{workdir / RESULT_NAME}: not a kvmlab repro result")
    return d, load_meta(workdir)


def repro_view(workdir: Path, result: dict[str, Any], meta: JobMeta | None) -> ReproView:
    expect = meta.expect if meta else None
    kinds = dict(RUN_KINDS)
    if not expect:
        kinds["target"] = ("crashed", RUN_KINDS["target"][1])
    runs = []
    for n, r in enumerate(result["runs"]):
        st = str(r.get("status", ""))
        if st == "crashed":
            kind = "other" if r.get("expected") is False else "target"
        elif st in kinds:
            kind = st
        else:
            kind = "infra"
        runs.append(RunView("", n, int(r.get("index", n)), st, kind, str(r.get("title") or ""),
                            str(r.get("detail") or ""), str(r.get("report") or ""),
                            float(r.get("duration", 0.0) or 0.0), str(r.get("console_log") or ""),
                            end=float(r.get("duration", 0.0) or 0.0), start=0.0))
    titles: dict[str, TitleCount] = {}
    for r in runs:
        if r.status in ("crashed", "boot-failed") and r.title:
            t = titles.setdefault(r.title, TitleCount(r.title, 0, False, [],
                                                       "boot" if r.status == "boot-failed" else "crash"))
            t.count += 1
            t.target = t.target or (r.kind == "target" and bool(expect))
    answered = sum(1 for r in runs if r.kind not in ("infra", "guest-stopped"))
    spans = [layout.Span(f"VM {r.vm}", r.start, r.end, r.kind, f"{r.label} ({r.duration:.0f} s)")
             for r in runs]
    total = max([float(result.get("wall", 0.0) or 0.0), *(s.end for s in spans)], default=0.0)
    vms = sorted({r.vm for r in runs})
    timeline = None
    samples = list(read_samples(workdir / SAMPLES_NAME))
    # The runs are drawn from the pool's start; the first samples come one
    # interval after the VMs started.
    loads, load_note = panels.vm_loads(samples, min(s.t for s in samples) - INTERVAL) if samples else ([], "")
    if spans and total:
        timeline = layout.lay_out_timeline(spans, [f"VM {i}" for i in vms], total=total, loads=loads)
    return ReproView(workdir, meta, runs, sum(1 for r in runs if r.status == "crashed"), answered,
                     int(result.get("cancelled_runs", 0) or 0), float(result.get("wall", 0.0) or 0.0),
                     sorted(titles.values(), key=lambda t: (not t.target, -t.count, t.title)), timeline,
                     expect, kinds, load_note)
