"""Measure kvmlab.oops against a directory of console logs with expected titles.

Usage: python benchmarks/report_corpus.py DIR [--misses N]

Each file: header lines (``TITLE:``, ``ALT:``, ``CORRUPTED: Y``, ...), a blank
line, the console text (optionally followed by a blank line, ``REPORT:`` and the
expected report). Prints exact-title accuracy (the expected title, or one of its
``ALT:`` titles), crashed / not-crashed accuracy, corrupted accuracy, throughput
of :func:`kvmlab.oops.parse` and of :func:`kvmlab.oops.crash_start`, and the
misses. The baseline printed next to the throughput is a plain line-by-line
scan of the same text (split + a ``"BUG:" in line`` test per line), measured in
the same run, so the figure can be compared across machines.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvmlab.oops import crash_start, parse


@dataclass
class Case:
    name: str
    titles: list[str]
    alts: list[str]
    corrupted: bool
    text: str


def load(path: Path) -> Case:
    raw = path.read_bytes().decode("utf-8", errors="replace")
    head, _, body = raw.partition("\n\n")
    titles: list[str] = []
    alts: list[str] = []
    corrupted = False
    for line in head.splitlines():
        key, _, value = line.partition(": ")
        if key == "TITLE":
            titles.append(value.strip())
        elif key == "ALT":
            alts.append(value.strip())
        elif key.startswith("CORRUPTED"):
            corrupted = True
    i = body.find("\nREPORT:\n")
    if i >= 0:
        body = body[:i]
    return Case(path.name, titles, alts, corrupted, body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeat", type=int, default=5, help="timed passes; the best counts")
    ap.add_argument("--misses", type=int, default=100, help="list at most this many misses")
    args = ap.parse_args()
    cases = [load(p) for p in sorted(args.dir.iterdir()) if p.is_file() and not p.name.startswith("README")]
    if not cases:
        print(f"{args.dir}: no logs", file=sys.stderr)
        return 2
    total_bytes = sum(len(c.text.encode()) for c in cases)

    results = [parse(c.text) for c in cases]  # also warms the caches

    def best(f: Callable[[str], object]) -> float:
        """Best of --repeat passes, in CPU seconds of this process: on a shared
        machine other jobs stretch the wall clock but not our CPU time."""
        runs = []
        for _ in range(args.repeat):
            t0 = time.process_time()
            for c in cases:
                f(c.text)
            runs.append(time.process_time() - t0)
        return min(runs)

    t_parse = best(parse)
    t_start = best(crash_start)
    t_base = best(lambda text: sum(1 for line in text.split("\n") if "BUG:" in line))

    crashing = [(c, r) for c, r in zip(cases, results, strict=True) if c.titles]
    title_ok = crashed_ok = corrupted_ok = 0
    misses: list[str] = []
    for c, r in zip(cases, results, strict=True):
        crashed_ok += (r is not None) == bool(c.titles)
        if c.titles:
            got = r.title if r else None
            if got in c.titles or got in c.alts:
                title_ok += 1
            else:
                misses.append(f"  {c.name}: want {c.titles[0]!r}, got {got!r}")
            if r is not None and r.corrupted == c.corrupted:
                corrupted_ok += 1
            elif r is not None:
                misses.append(
                    f"  {c.name}: corrupted want {c.corrupted}, got {r.corrupted} "
                    f"({r.corrupted_reason}) [{r.title}]"
                )
        elif r is not None:
            misses.append(f"  {c.name}: want no crash, got {r.title!r}")

    mb = total_bytes / 1e6
    n = len(cases)
    print(f"logs: {n} ({len(crashing)} with a crash), {mb:.2f} MB")
    pct = 100 * title_ok / max(1, len(crashing))
    print(f"exact title (ALT counts): {title_ok}/{len(crashing)} = {pct:.1f}%")
    print(f"crashed / not crashed:    {crashed_ok}/{n} = {100 * crashed_ok / n:.1f}%")
    print(
        f"corrupted flag:           {corrupted_ok}/{len(crashing)} = "
        f"{100 * corrupted_ok / max(1, len(crashing)):.1f}%"
    )
    print(f"parse throughput:         {mb / t_parse:.1f} MB/s (CPU time)")
    print(f"crash_start throughput:   {mb / t_start:.1f} MB/s (CPU time)")
    print(f"baseline (split + 'in' per line): {mb / t_base:.1f} MB/s (CPU time)")
    print(f"parse / baseline speed:   {t_base / t_parse:.3f} (machine-independent-ish)")
    if misses:
        print(f"misses ({len(misses)}):")
        for m in misses[: args.misses]:
            print(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
