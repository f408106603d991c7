"""A kernel build's progress on stderr: one status line redrawn on a
terminal, one line per phase (and one a minute while compiling) in a log."""

from __future__ import annotations

import os
import sys
import time

from kvmlab.kernel.builder import Progress

#: Seconds between progress lines when stderr is not a terminal.
NON_TTY_EVERY = 60.0


class BuildTicker:
    """Call it with each :class:`Progress` of a build."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.phase = ""

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.tty:
            # A log file: one line per phase, and one a minute while compiling.
            if p.phase != self.phase or now - self.last >= NON_TTY_EVERY:
                what = f"{p.objects} objects, " if p.phase == "compile" and p.objects else ""
                print(f"kvmlab: {p.phase} ({what}{p.elapsed:.0f} s)", file=sys.stderr, flush=True)
                self.last = now
            self.phase = p.phase
            return
        self.phase = p.phase
        if now - self.last < 0.5 and p.phase == "compile":
            return
        self.last = now
        line = f"[{p.elapsed:5.0f}s] {p.phase}: {p.objects} objects  {p.line.strip()}"
        width = os.get_terminal_size(sys.stderr.fileno()).columns - 1
        end = "\n" if p.phase == "done" else ""
        print(f"\r{line[:width]:<{width}}", end=end, file=sys.stderr, flush=True)
