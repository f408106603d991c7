"""The report's view of commits, builds and runs: plain data the templates draw."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmlab.show import gitinfo

#: Node colours by verdict (also used by the tests to check the screenshot).
VERDICT_COLOURS = {
    "bad": "#d62728",       # crashed with the bug
    "good": "#2ca02c",      # ran clean
    "skip": "#ff9f1c",      # could not be judged (does not boot)
    "undecided": "#ffd92f",  # left without a verdict (not enough evidence either way)
    "build-failed": "#7f7f7f",
    "pending": "#9ecae1",   # being tested now
    "untested": "#ffffff",
}

#: What a run came to, as the report names and colours it.
RUN_KINDS = {
    "target": ("crashed (the bug)", "#d62728"),
    "other": ("crashed (another bug)", "#9467bd"),
    "ok": ("OK", "#2ca02c"),
    "boot-failed": ("boot failed", "#ff9f1c"),
    "infra": ("infra error", "#7f7f7f"),
    "repro-failed": ("reproducer failed", "#8c564b"),
    "guest-stopped": ("guest stopped itself", "#17becf"),
}


@dataclass
class RunView:
    commit: str
    ordinal: int
    """This commit's n-th run (0-based), as the log numbers them."""
    vm: int
    """The VM's index in its pool."""
    status: str
    kind: str
    """A key of :data:`RUN_KINDS`."""
    title: str
    detail: str
    report: str
    duration: float
    console_log: str
    end: float = 0.0
    """Seconds since the job started (approximate: the journal stamps a batch of runs when it returns)."""
    start: float = 0.0

    @property
    def label(self) -> str:
        what = RUN_KINDS[self.kind][0]
        extra = self.title or self.detail
        return f"run #{self.ordinal}: {what}" + (f": {extra}" if extra else "")

    @property
    def colour(self) -> str:
        return RUN_KINDS[self.kind][1]


@dataclass
class BuildView:
    commit: str
    status: str
    kind: str
    """``cached``, ``incremental``, ``clean``, ``built`` (kind not recorded) or ``failed``."""
    duration: float
    compiler: str
    error: str
    objects: int | None
    end: float = 0.0
    start: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "cached":
            return "build: cached"
        what = f"{self.kind} build" if self.kind != "built" else "build"
        objs = f", {self.objects} objects compiled" if self.objects is not None else ""
        if self.status == "failed":
            return f"build failed after {self.duration:.0f} s{objs}: {self.error or 'unknown error'}"
        return f"{what}: {self.duration:.0f} s{objs}"


@dataclass
class CommitView:
    hash: str
    subject: str = ""
    author: str = ""
    date: str = ""
    tags: tuple[str, ...] = ()
    verdict: str = "untested"
    """A key of :data:`VERDICT_COLOURS`."""
    verdict_word: str = ""
    """As ``git bisect`` would say it (good / bad, or fixed / broken for a fix bisection)."""
    build: BuildView | None = None
    runs: list[RunView] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    """1-based numbers of the steps that ended on this commit."""
    roles: list[str] = field(default_factory=list)
    """``bad``, ``good``, ``culprit``, ``candidate``, ``release``."""
    hidden_below: int = 0
    """Untested commits between this one and the next drawn ones below it."""
    probability: float | None = None
    """Its probability of being the culprit after the last step (adaptive)."""
    p_crash: float | None = None
    """P(it has the bug) after its last step (adaptive)."""
    rate: float | None = None
    """The estimated crash rate of the bug on it, if it has the bug (adaptive)."""
    note: str = ""
    """The engine's note on its last step (why a re-test, why no verdict)."""

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def tested(self) -> bool:
        return self.build is not None

    @property
    def colour(self) -> str:
        return VERDICT_COLOURS[self.verdict]

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.kind for r in self.runs)
        return {k: c[k] for k in RUN_KINDS if c[k]}

    @property
    def summary(self) -> str:
        """One line for the tooltip."""
        parts = [f"{self.short} {self.subject}".strip(), self.verdict_word or self.verdict]
        if self.build is not None:
            parts.append(self.build.label)
        if self.p_crash is not None:
            parts.append(f"P(has the bug) {self.p_crash:.2f}")
        if self.runs:
            parts.append(f"{len(self.runs)} runs: " + ", ".join(
                f"{n} {RUN_KINDS[k][0]}" for k, n in self.counts.items()))
        return " · ".join(parts)


@dataclass
class TitleCount:
    title: str
    count: int
    target: bool
    commits: list[str]
    kind: str
    """``crash`` or ``boot`` (a crash while booting)."""


@dataclass
class ConfirmView:
    """One check of the culprit: it reverted (a fix applied) on a base, built and run."""

    status: str
    """``confirmed``, ``not-confirmed``, ``does-not-apply``, ``untestable`` (or ``log``:
    a line of the log, from a result that does not say)."""
    message: str
    base: str = ""
    commit: CommitView | None = None
    """The synthetic commit tested, with its build and runs."""

    @property
    def good(self) -> bool:
        return self.status == "confirmed" or self.message.startswith("confirmed")


@dataclass
class Culprit:
    commit: CommitView
    message: str
    cc: list[str]
    files: list[gitinfo.FileChange]
    confirmations: list[ConfirmView]
    crash_title: str
    crash_report: str
    warnings: list[str]


def build_kind(b: dict[str, Any]) -> tuple[str, int | None]:
    """(kind, objects compiled) of a journaled build; the kind of an uncached
    build comes from its manifest in the build cache when that is still there."""
    if b.get("status") == "failed":
        kind = "failed"
    elif b.get("cached"):
        return "cached", None
    else:
        kind = "built"
    manifest = (b.get("artifacts") or {}).get("manifest")
    objects = None
    if manifest:
        try:
            m = json.loads(Path(manifest).read_text())
            objects = int(m.get("objects_compiled", 0))
            inc = (m.get("extra") or {}).get("incremental")
            if kind != "failed" and inc is not None:
                kind = "incremental" if inc else "clean"
        except (OSError, ValueError, TypeError):
            pass
    return kind, objects
