"""Progress of a bisection or a repro run in the terminal.

On a terminal (stdout is a TTY) a :class:`LiveView` keeps a panel at the
bottom of the screen, redrawn a few times a second with rich: the current
step and commit, the build's phase and progress, each VM's state (booting /
running / crashed / OK ...), the verdicts so far and the candidates left; the
log lines scroll above it. Otherwise a :class:`PlainView` prints the log lines
as they come, exactly as without a view, and the build's progress as the
once-a-minute lines on stderr.

Events come from other threads (the pool's VM threads); every handler only
updates state under a lock and never raises into the caller.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kvmlab.bisect.result import StepRecord
from kvmlab.kernel.builder import Progress
from kvmlab.repro.runner import VMEvent
from kvmlab.text import counted
from kvmlab.ui.ticker import BuildTicker

log = logging.getLogger(__name__)

#: Redraws per second of the live panel.
REFRESH_PER_SECOND = 4
#: Verdicts listed in the panel (the latest ones).
SHOWN_VERDICTS = 8

#: Style and mark of each VM state.
VM_STYLES: dict[str, tuple[str, str]] = {
    "starting": ("dim", "…"),
    "booting": ("yellow", "◌"),
    "running": ("cyan", "●"),
    "crashed": ("bold red", "✖"),
    "ok": ("green", "✔"),
    "boot-failed": ("dark_orange", "✖"),
    "infra": ("magenta", "!"),
    "repro-failed": ("magenta", "!"),
    "guest-stopped": ("magenta", "■"),
    "cancelled": ("dim", "-"),
}

#: What the panel calls each state.
VM_WORDS = {"ok": "OK", "boot-failed": "boot failed", "repro-failed": "reproducer failed",
            "infra": "infra error", "guest-stopped": "guest stopped itself"}


class PlainView:
    """The log lines on stdout as they come; build progress as today's lines on stderr."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out
        self._ticker = BuildTicker()

    def say(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    def note(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def build_progress(self, p: Progress) -> None:
        self._ticker(p)

    def building(self, commit: str) -> None:
        pass

    def testing(self, commit: str, runs: int) -> None:
        pass

    def vm(self, commit: str, ev: VMEvent) -> None:
        pass

    def step(self, rec: StepRecord) -> None:
        pass


@dataclass
class _VM:
    state: str
    since: float
    title: str | None = None


@dataclass
class LiveState:
    """What the panel shows (plain data, updated by the events)."""

    title: str
    started: float
    phase: str = "starting"
    commit: str = ""
    subject: str = ""
    runs_asked: int = 0
    build: Progress | None = None
    vms: dict[int, _VM] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    run_counts: dict[str, int] = field(default_factory=dict)
    """This commit's finished runs by state."""


def render_state(st: LiveState, now: float) -> RenderableType:
    """The panel for ``st`` at monotonic time ``now`` (pure: for tests too)."""
    head = Text()
    head.append(st.title, style="bold")
    head.append(f"  {_clock(now - st.started)}", style="dim")
    if st.steps:
        last = st.steps[-1]
        head.append(f"  step {len(st.steps)}", style="bold")
        head.append(f" · {counted(last.remaining, 'candidate')} left")
        if last.confidence is not None:
            head.append(f" · confidence {last.confidence:.1%}")
    lines: list[RenderableType] = [head]
    now_line = Text()
    now_line.append(f"{st.phase} ", style="bold cyan")
    if st.commit:
        now_line.append(st.commit[:12], style="bold")
        if st.subject:
            now_line.append(f" {st.subject}")
    lines.append(now_line)
    if st.phase == "building" and st.build is not None:
        b = st.build
        t = Text("  build: ", style="dim")
        t.append(b.phase, style="bold")
        if b.objects:
            t.append(f", {b.objects} objects")
        t.append(f", {b.elapsed:.0f} s")
        if b.phase == "compile" and b.line.strip():
            t.append(f"  {b.line.strip()[:80]}", style="dim")
        lines.append(t)
    if st.vms:
        grid = Table.grid(padding=(0, 2))
        for i in sorted(st.vms):
            v = st.vms[i]
            style, mark = VM_STYLES.get(v.state, ("", "?"))
            word = VM_WORDS.get(v.state, v.state)
            grid.add_row(Text(f"  VM {i}"), Text(f"{mark} {word}", style=style),
                         Text(f"{now - v.since:4.0f} s", style="dim"), Text(v.title or "", style=style))
        lines.append(grid)
    if st.run_counts:
        lines.append(Text("  runs of this commit: " + ", ".join(
            f"{n} {VM_WORDS.get(k, k)}" for k, n in st.run_counts.items()), style="dim"))
    if st.steps:
        t = Text("verdicts: ", style="dim")
        for rec in st.steps[-SHOWN_VERDICTS:]:
            style = {"bad": "red", "good": "green"}.get(rec.verdict, "yellow")
            t.append(f"#{rec.index + 1} {rec.commit[:8]} ", style="dim")
            t.append(rec.verdict, style=f"bold {style}")
            t.append("  ")
        lines.append(t)
    return Group(*lines)


class LiveView:
    """A rich live panel at the bottom of the terminal, log lines above it."""

    def __init__(self, title: str, *, console: Console | None = None,
                 describe: Callable[[str], str] | None = None) -> None:
        self.console = console or Console(file=sys.stdout, highlight=False)
        self.state = LiveState(title, time.monotonic())
        self.describe = describe
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __rich__(self) -> RenderableType:
        with self._lock:
            return render_state(self.state, time.monotonic())

    def __enter__(self) -> LiveView:
        self._live = Live(self, console=self.console, refresh_per_second=REFRESH_PER_SECOND,
                          redirect_stdout=True, redirect_stderr=sys.stderr.isatty())
        self._live.__enter__()
        # Log records go to the stderr stream their handler was made with;
        # point them at the live console's proxy so they scroll above the panel.
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in (sys.__stderr__, sys.__stdout__):
                self._handlers.append((h, h.stream))
                h.setStream(sys.stderr)
        return self

    def __exit__(self, *exc: object) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
        self._handlers.clear()
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def say(self, line: str) -> None:
        self.console.print(Text(line), soft_wrap=True)

    def note(self, line: str) -> None:
        # On stderr as ever; while the panel is up, rich redirects a
        # terminal's stderr above it.
        print(line, file=sys.stderr, flush=True)

    def build_progress(self, p: Progress) -> None:
        with self._lock:
            self.state.build = p

    def building(self, commit: str) -> None:
        subject = self._subject(commit)
        with self._lock:
            s = self.state
            s.phase, s.commit, s.subject, s.build = "building", commit, subject, None
            s.vms, s.run_counts = {}, {}

    def testing(self, commit: str, runs: int) -> None:
        subject = self._subject(commit) if commit != self.state.commit else self.state.subject
        with self._lock:
            s = self.state
            if commit != s.commit:
                s.run_counts = {}
            s.phase, s.commit, s.subject, s.runs_asked = "testing", commit, subject, runs
            s.vms = {}

    def vm(self, commit: str, ev: VMEvent) -> None:
        with self._lock:
            s = self.state
            s.vms[ev.vm] = _VM(ev.state, time.monotonic(), ev.title)
            if ev.state not in ("booting", "running", "starting"):
                s.run_counts[ev.state] = s.run_counts.get(ev.state, 0) + 1

    def step(self, rec: StepRecord) -> None:
        with self._lock:
            self.state.steps.append(rec)

    def _subject(self, commit: str) -> str:
        if self.describe is None:
            return ""
        try:
            return self.describe(commit)
        except Exception:  # a subject is decoration: never fail the job for it
            return ""


def wants_live(stream: IO[str] | None = None) -> bool:
    """Whether to draw a live view: stdout is a terminal (and not a dumb one)."""
    s = stream or sys.stdout
    try:
        return s.isatty() and Console(file=s).is_terminal and not Console(file=s).is_dumb_terminal
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_view(title: str, *, describe: Callable[[str], str] | None = None,
                  live: bool | None = None) -> Iterator[PlainView | LiveView]:
    """A :class:`LiveView` on a terminal, else a :class:`PlainView`."""
    if live if live is not None else wants_live():
        with LiveView(title, describe=describe) as v:
            yield v
    else:
        yield PlainView()


def _clock(seconds: float) -> str:
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
