"""The engine on a real-size range: a synthetic release cycle of ~20,000 commits
with 1,000+ merged topic branches (like a Linux merge window), bisected by the
adaptive policy with a simulated flaky reproducer.

Prints the time of every decision (belief + ranking of the next tests) — the
target is <= 1 s each — and the process's peak memory (target <= 500 MB),
against the same figures for the 1,000-commit histories of flaky_bisect.py.

    .venv/bin/python benchmarks/engine_scale.py
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence

from kvmlab.bisect import AdaptivePolicy, CommitGraph, bisect
from kvmlab.bisect.adaptive import AdaptiveBisection
from kvmlab.bisect.simulate import MemoryRepo
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus

GOOD = "f" * 40
TITLE = "KASAN: slab-out-of-bounds Read in scaled"


def release_cycle(rng: random.Random, merges: int, mainline_between: int) -> list[tuple[str, list[str], str]]:
    """Topic branches of 1..40 commits forked from the mainline of a few weeks
    back and merged in, with mainline commits between merges."""
    rows: list[tuple[str, list[str], str]] = []
    mainline = [GOOD]

    def new(parents: list[str]) -> str:
        h = f"{len(rows) + 1:040x}"
        rows.append((h, parents, f"commit {len(rows) + 1}"))
        return h

    for _ in range(merges):
        fork = mainline[max(0, len(mainline) - rng.randint(1, 200))]
        tip = fork
        for _ in range(rng.randint(1, 40)):
            tip = new([tip])
        mainline.append(new([mainline[-1], tip]))
        for _ in range(rng.randint(0, 2 * mainline_between)):
            mainline.append(new([mainline[-1]]))
    return rows


class Flaky:
    def __init__(self, g: CommitGraph, culprit: str, p: float, seed: int) -> None:
        self.g, self.bit, self.p, self.seed = g, 1 << g.index[culprit], p, seed
        self.n: dict[str, int] = {}

    def build(self, commit: str) -> BuildOutcome:
        return BuildOutcome(commit, BuildStatus.OK, compiler="gcc (GCC) 12.2.0")

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        bad = bool(self.g.closure_of(build.commit) & self.bit)
        out = []
        for _ in range(runs):
            k = self.n.get(build.commit, 0)
            self.n[build.commit] = k + 1
            hit = bad and random.Random(f"{self.seed}/{build.commit}/{k}").random() < self.p
            out.append(RunOutcome(k, RunStatus.CRASHED, title=TITLE) if hit else RunOutcome(k, RunStatus.OK))
        return out


def run(rows: list[tuple[str, list[str], str]], seed: int, p: float) -> tuple[list[float], bool, int, float]:
    t0 = time.perf_counter()
    g = CommitGraph.from_parents(rows, tip=rows[-1][0], boundary=[GOOD])
    graph_s = time.perf_counter() - t0
    rng = random.Random(seed)
    culprit = g.commits[rng.randrange(len(g) - 1)].hash
    timings: list[float] = []
    original = AdaptiveBisection.options

    def timed(self: AdaptiveBisection, b: object, current: str | None = None) -> object:
        t = time.perf_counter()
        out = original(self, b, current)  # type: ignore[arg-type]
        timings.append(time.perf_counter() - t)
        return out

    AdaptiveBisection.options = timed  # type: ignore[method-assign,assignment]
    original_belief = AdaptiveBisection.belief

    def timed_belief(self: AdaptiveBisection) -> object:
        t = time.perf_counter()
        out = original_belief(self)
        timings.append(time.perf_counter() - t)
        return out

    AdaptiveBisection.belief = timed_belief  # type: ignore[method-assign,assignment]
    try:
        res = bisect(MemoryRepo(g, GOOD), Flaky(g, culprit, p, seed), bad=g.tip, good=GOOD,
                     policy=AdaptivePolicy(chunk=4), verify=False, is_target=lambda r: r.title == TITLE)
    finally:
        AdaptiveBisection.options = original  # type: ignore[method-assign]
        AdaptiveBisection.belief = original_belief  # type: ignore[method-assign]
    return timings, res.culprit == culprit, res.vm_runs, graph_s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--merges", type=int, default=1100)
    ap.add_argument("--bisections", type=int, default=3)
    ap.add_argument("--p", type=float, default=0.5)
    args = ap.parse_args(argv)
    for label, merges, between in (("baseline (~1,000 commits)", 50, 1), ("release cycle", args.merges, 1)):
        rows = release_cycle(random.Random(7), merges, between)
        n_merges = sum(1 for _, ps, _ in rows if len(ps) > 1)
        print(f"{label}: {len(rows)} commits, {n_merges} merges")
        for i in range(args.bisections):
            timings, exact, runs, graph_s = run(rows, 100 + i, args.p)
            print(f"  bisection {i}: graph {graph_s:.2f} s, {len(timings)} belief/ranking steps: "
                  f"median {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.0f} ms "
                  f"(target <= 1000 ms); culprit {'right' if exact else 'WRONG'}, {runs} VM runs")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of the process: {peak:.0f} MB (target <= 500 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
