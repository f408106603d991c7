"""The bisection log: pure line formatting, and a writer that emits lines as they happen.

The shapes follow syzbot's bisection logs (``testing commit H with gcc ...``,
``# git bisect good H``, ``Bisecting: N revisions left ...``, the closing block);
kvmlab's own lines start with ``kvmlab:`` and warnings with ``warning:``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from kvmlab.bisect.result import Verdict
from kvmlab.bisect.seams import CommitInfo, cc_list
from kvmlab.bisect.timing import TimeSplit
from kvmlab.outcome import RunOutcome, RunStatus
from kvmlab.text import counted


def start_line(commit: str, *, fix: bool) -> str:
    return f"bisecting {'fix' if fix else 'cause'} commit starting from {commit}"


def crashes_in_runs(crashes: int, runs: int) -> str:
    return f"{counted(crashes, 'crash', 'crashes')} in {counted(runs, 'run')}"


def rate_batch_line(commit: str, crashes: int, runs: int) -> str:
    """Why the bad commit gets more runs after it reproduced the crash."""
    return (f"kvmlab: {commit[:12]}: {counted(crashes, 'crash', 'crashes')} with the title and no clean run: "
            f"{counted(runs, 'more run')} there, to learn how reliably the bug shows before bisecting")


def testing_release_line(tag: str) -> str:
    return f"testing release {tag}"


def clean_runs(n: int) -> str:
    return counted(n, "clean run")


def release_again_line(tag: str, oks: int, confidence: float) -> str:
    return (f"testing release {tag} again: {clean_runs(oks)} before the bisection; with the bug's rate the "
            f"bisection saw, up to P(it has the bug) <= {1 - confidence:.2f}")


def testing_line(commit: str, compiler: str) -> str:
    return f"testing commit {commit} with {compiler}" if compiler else f"testing commit {commit}"


def build_failed_line(error: str) -> str:
    return f"kernel build failed: {error or 'unknown error'}"


def run_lines(runs: Sequence[RunOutcome], target: Sequence[bool], *, counted_all: bool = False) -> list[str]:
    """Lines for runs of one commit. ``target[i]`` says whether run i's crash is the
    target bug; other crashes are marked as not counted unless ``counted_all``
    (the syzbot policy counts every crash)."""
    if not runs:
        return []
    if all(r.status is RunStatus.OK for r in runs):
        return ["all runs: OK"]
    titles = {r.title for r in runs}
    if all(r.crashed for r in runs) and len(titles) == 1 and (counted_all or all(target)):
        return [f"all runs: crashed: {runs[0].title}"]
    out = []
    for r, t in zip(runs, target, strict=True):
        if r.status is RunStatus.OK:
            out.append(f"run #{r.index}: OK")
        elif r.crashed:
            note = "" if t or counted_all else " (another bug: not counted)"
            out.append(f"run #{r.index}: crashed: {r.title}{note}")
        elif r.status is RunStatus.BOOT_FAILED:
            out.append(f"run #{r.index}: boot failed: {r.title or r.detail or 'no output'}")
        elif r.status is RunStatus.REPRO_FAILED:
            out.append(f"run #{r.index}: reproducer failed: {r.detail or 'unknown'}")
        elif r.status is RunStatus.GUEST_STOPPED:
            out.append(f"run #{r.index}: the guest stopped itself, not counted: {r.detail or 'no crash'}")
        else:
            out.append(f"run #{r.index}: infrastructure error, not counted: {r.detail or 'unknown'}")
    return out


def bisect_terms(fix: bool) -> tuple[str, str]:
    """(old, new) terms of ``git bisect``: good/bad, or broken/fixed for a fix bisection."""
    return ("broken", "fixed") if fix else ("good", "bad")


def bisect_start_line(bad: str, good: str, *, fix: bool) -> str:
    if fix:
        return f"# git bisect start --term-old=broken --term-new=fixed {good} {bad}"
    return f"# git bisect start {bad} {good}"


def mark_line(verdict: Verdict, commit: str, *, fix: bool) -> str:
    """``# git bisect good|bad|skip H``; for a fix bisection GOOD (no crash) is
    ``fixed`` and BAD (crash) is ``broken``."""
    if verdict is Verdict.SKIP:
        return f"# git bisect skip {commit}"
    if fix:
        return f"# git bisect {'fixed' if verdict is Verdict.GOOD else 'broken'} {commit}"
    return f"# git bisect {verdict.value} {commit}"


def estimate_steps(remaining: int) -> int:
    """How many more tests a plain bisection of ``remaining`` candidates needs
    (the estimate ``git bisect`` prints)."""
    if remaining < 3:
        return 0
    n = int(math.log2(remaining))
    e = 1 << n
    return n if e < 3 * (remaining - e) else n - 1


def bisecting_line(left: int, steps: int) -> str:
    return (f"Bisecting: {counted(left, 'revision')} left to test after this "
            f"(roughly {counted(steps, 'step')})")


def next_line(commit: str, subject: str) -> str:
    return f"[{commit}] {subject}"


def format_duration(seconds: float) -> str:
    """Go-style duration: ``4h32m25.077s``, ``8m0s``, ``1.5s``."""
    ms = round(max(seconds, 0.0) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    sec = f"{s}.{frac:03d}".rstrip("0").rstrip(".") if frac else str(s)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def commit_block(info: CommitInfo) -> list[str]:
    """The commit as ``git show -s`` prints it."""
    out = [f"commit {info.hash}"]
    if info.is_merge:
        out.append("Merge: " + " ".join(p[:12] for p in info.parents))
    out += [f"Author: {info.author_name} <{info.author_email}>", f"Date:   {info.date}", ""]
    out += [f"    {line}".rstrip() if line else "    " for line in info.message.splitlines()]
    return out


def totals_line(tested: int, time: TimeSplit) -> str:
    """syzbot's totals line: ``total time`` is the job's wall time; kvmlab adds
    the parts syzbot's sequential runs do not have (they sum to the total)."""
    return (f"revisions tested: {tested}, total time: {format_duration(time.total)} "
            f"(build: {format_duration(time.build)}, test: {format_duration(time.test)}, "
            f"VM idle: {format_duration(time.vm_idle)}, waiting: {format_duration(time.waiting)})")


def cc_line(emails: Sequence[str]) -> str:
    return "cc: [" + " ".join(f'"{e}"' for e in emails) + "]"


def culprit_lines(info: CommitInfo, *, fix: bool) -> list[str]:
    """``H is the first bad commit``, the commit, then (after the totals, which the
    caller puts in between) see :func:`first_commit_lines`."""
    word = "fixed" if fix else "bad"
    return [f"{info.hash} is the first {word} commit", *commit_block(info), ""]


def first_commit_lines(info: CommitInfo, *, fix: bool, maintainers: Sequence[str] = ()) -> list[str]:
    word = "fixed" if fix else "bad"
    emails = sorted(set(cc_list(info)) | {m.lower() for m in maintainers})
    return [f"first {word} commit: {info.hash} {info.subject}", cc_line(emails)]


def crash_lines(title: str | None, report: str) -> list[str]:
    if not title:
        return []
    return [f"crash: {title}", *report.rstrip("\n").splitlines()]


def candidates_lines(candidates: Sequence[tuple[str, str]], *, fix: bool) -> list[str]:
    word = "fixed" if fix else "bad"
    return [f"the first {word} commit could be any of:", *(f"{h} {s}" for h, s in candidates)]


def probability_lines(probabilities: dict[str, float], limit: int = 10) -> list[str]:
    """The most probable candidates of an inconclusive range, with their probability."""
    if not probabilities:
        return []
    best = sorted(probabilities.items(), key=lambda t: -t[1])[:limit]
    return ["kvmlab: probability of being the culprit: "
            + ", ".join(f"{h[:12]} {p:.3f}" for h, p in best)
            + (f" (and {len(probabilities) - limit} more)" if len(probabilities) > limit else "")]


def kvmlab_lines(
    *, policy: str, confidence: float | None, vm_runs: int, builds: int,
    uncounted: Sequence[tuple[str, str]], counted_all: bool,
) -> list[str]:
    conf = f"{confidence:.4f}" if confidence is not None else "not estimated"
    out = [f"kvmlab: policy: {policy}, confidence: {conf}", f"kvmlab: VM runs: {vm_runs}, builds: {builds}"]
    what = "crashes of other bugs (counted as bad by this policy)" if counted_all else \
        "crashes seen but not counted (another bug)"
    out.append(f"kvmlab: {what}: {len(uncounted)}")
    counts: dict[tuple[str, str], int] = {}
    for key in uncounted:
        counts[key] = counts.get(key, 0) + 1
    for (commit, title), n in counts.items():
        out.append(f"kvmlab:   {commit[:12]}: {title}" + (f" (x{n})" if n > 1 else ""))
    return out


LogSink = Callable[[str], None]


class LogWriter:
    """Emits each line as it happens to a callback and/or appends it to a file."""

    def __init__(self, sink: LogSink | None = None, path: Path | None = None) -> None:
        self.sink = sink
        self.path = path
        self.lines: list[str] = []
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.sink is not None:
            self.sink(line)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def many(self, lines: Sequence[str]) -> None:
        for line in lines:
            self(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
