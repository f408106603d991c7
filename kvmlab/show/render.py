"""HTML reports from Jinja2 templates: one self-contained file each (CSS and
JS inlined, no fonts, images or scripts fetched from anywhere)."""

from __future__ import annotations

import datetime
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from kvmlab.bisect.log import format_duration
from kvmlab.show.bisection import BisectView
from kvmlab.show.model import RUN_KINDS, VERDICT_COLOURS
from kvmlab.show.repro import ReproView

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"

#: Run squares drawn per commit row in the graph (more are counted, not drawn).
MAX_SQUARES = 20
#: A running bisection's report reloads itself this often (seconds): the
#: bisection rewrites it after every step.
REFRESH_SECONDS = 30
#: Width of the graph's text columns (hash, verdict, runs, subject), CSS pixels.
GRAPH_TEXT_W = 700


def _dur(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    return format_duration(round(s, 1) if s < 60 else round(s))


def _pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return ""
    return f"{100 * v:.1f}%" if v < 0.999 or v == 1.0 else f"{100 * v:.2f}%"


def _num(x: Any) -> str:
    """A step field for the table: floats to 3 significant digits, None empty."""
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _clock(t: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OSError, OverflowError):
        return ""


def _static(name: str) -> Markup:
    # Our own files, trusted: inlined as they are.
    return Markup(resources.files("kvmlab.show").joinpath("templates", name).read_text())


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kvmlab.show", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters.update(dur=_dur, pct=_pct, clock=_clock, num=_num)
    env.globals.update(css=_static("report.css"), js=_static("report.js"), version=_version())
    return env


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvmlab")
    except PackageNotFoundError:
        return "(source)"


def render_bisection(v: BisectView) -> str:
    """The bisection report for ``v`` as one HTML document."""
    words = {"bad": "broken (crashes)" if v.fix else "bad (crashes)",
             "good": "fixed (no crash)" if v.fix else "good (no crash)",
             "skip": "skipped", "undecided": "undecided", "build-failed": "build failed",
             "pending": "being tested",
             "untested": "not tested"}
    initial = v.culprit.commit.hash if v.culprit else v.bad
    return environment().get_template("bisect.html.j2").render(
        v=v, verdict_colours=VERDICT_COLOURS, verdict_words=words, run_kinds=RUN_KINDS,
        used_verdicts={c.verdict for c in v.commits.values()},
        used_kinds={r.kind for c in v.commits.values() for r in c.runs},
        initial=initial, max_squares=MAX_SQUARES, text_w=GRAPH_TEXT_W,
        extra_step_keys=extra_step_keys(v.steps), refresh_seconds=REFRESH_SECONDS,
    )


def render_repro(v: ReproView) -> str:
    """The repro report for ``v`` as one HTML document."""
    return environment().get_template("repro.html.j2").render(
        v=v, used_kinds={r.kind for r in v.runs}, generated=time.time())


#: StepRecord fields the steps table always shows.
_STEP_KEYS = frozenset({"index", "commit", "verdict", "remaining", "top", "confidence", "vm_runs", "builds"})


def extra_step_keys(steps: list[dict[str, Any]]) -> list[str]:
    """Step fields beyond the known ones (a newer engine's ``note``, a crash-rate
    estimate ...) that hold plain values: shown as extra columns, in first-seen order."""
    keys: dict[str, None] = {}
    for st in steps:
        for k, val in st.items():
            if k not in _STEP_KEYS and isinstance(val, (str, int, float, bool)):
                keys[k] = None
    return list(keys)


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file, so a reader (a browser
    reloading a running bisection's report) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
