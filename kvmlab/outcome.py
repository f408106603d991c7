"""Results of testing a kernel: what one VM run gave, what one build gave.

These are values, never exceptions (a kernel crash is a result). The repro
runner produces them and the bisection consumes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class RunStatus(enum.Enum):
    """What one run of a reproducer in one VM came to."""

    CRASHED = "crashed"
    """The kernel crashed; ``title`` says how."""
    OK = "ok"
    """Ran for the whole run time without a crash."""
    BOOT_FAILED = "boot-failed"
    """The kernel never got to SSH; ``title`` is the boot crash or ``no output``."""
    INFRA = "infra"
    """kvmlab's side failed (qemu died, SSH broke without a crash, host OOM)."""
    GUEST_STOPPED = "guest-stopped"
    """The guest shut itself down (powered off, rebooted: the kernel's
    ``reboot: Power down`` / ``reboot: Restarting system``) with no crash on
    the console: the reproducer (or the command) asked for it. Never a crash
    of the kernel (syzkaller does not count it either) and never ours;
    ``detail`` says what the console said. A bisection does not count it."""
    REPRO_FAILED = "repro-failed"
    """The reproducer itself could not run (syz-execprog cannot parse the program,
    the executor fails to start, ``SYZFAIL``); ``detail`` is the line that says
    why. Never a verdict on the kernel: a bisection stops on it."""


@dataclass(frozen=True)
class RunOutcome:
    """One run in one VM."""

    index: int
    status: RunStatus
    title: str | None = None
    """Crash title (syzbot's words) for CRASHED and BOOT_FAILED."""
    alt_titles: tuple[str, ...] = ()
    """Other titles the same bug may show up under (for matching)."""
    crash_type: str | None = None
    report: str = ""
    """The crash report text (symbolized when a vmlinux was at hand)."""
    detail: str = ""
    """For INFRA, BOOT_FAILED and REPRO_FAILED: what happened, one line. For OK:
    how the reproducer ended when it did not run for the whole run time."""
    duration: float = 0.0
    """Seconds from VM start to the end of the run."""
    console_log: str | None = None
    """Path of this run's console log."""
    repro_log: str | None = None
    """Path of the reproducer's own output (stdout and stderr) in this run."""

    @property
    def crashed(self) -> bool:
        return self.status is RunStatus.CRASHED

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status.value,
            "title": self.title,
            "alt_titles": list(self.alt_titles),
            "crash_type": self.crash_type,
            "report": self.report,
            "detail": self.detail,
            "duration": round(self.duration, 3),
            "console_log": self.console_log,
            "repro_log": self.repro_log,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunOutcome:
        return cls(
            index=int(d["index"]),
            status=RunStatus(d["status"]),
            title=d.get("title"),
            alt_titles=tuple(d.get("alt_titles", ())),
            crash_type=d.get("crash_type"),
            report=d.get("report", ""),
            detail=d.get("detail", ""),
            duration=float(d.get("duration", 0.0)),
            console_log=d.get("console_log"),
            repro_log=d.get("repro_log"),
        )


class BuildStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class BuildOutcome:
    """A kernel build at one commit."""

    commit: str
    status: BuildStatus
    compiler: str = ""
    """The compiler's version string, e.g. ``gcc (Debian 12.2.0-14) 12.2.0``."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """Name (``bzImage``, ``vmlinux``, ``System.map``, ``config``, ``manifest``) to path."""
    error: str = ""
    """For FAILED: the first compiler error, one line."""
    log_tail: str = ""
    duration: float = 0.0
    cached: bool = False
    fixes: tuple[str, ...] = ()
    """Known build fixes applied on top of the commit to build it with this
    tool-chain (``hash subject`` each; :mod:`kvmlab.kernel.fixes`)."""
