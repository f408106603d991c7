"""Planning in batches of the pool (issue 26 point 1): wall time, VM runs and
idle VM time of adaptive bisections that plan whole batches of the pool,
against plans of single runs, on a simulated clock.

Each bisection is a simulated history from ``flaky_bisect.py`` (its scenario
classes, 300 commits) run twice from the same random outcomes: once with
``plan_in_batches=False`` (the planner counts the cost of a plan in runs and
often asks for one run, so the other VMs wait), once as shipped (a plan is
whole batches of ``vms`` runs and costs the batches' wall time). A build takes
``build_seconds`` on the whole machine, a batch of up to ``vms`` runs takes
``run_seconds`` (:class:`kvmlab.bisect.simulate.ClockedTester`). Idle VM time
is the VM-seconds of batches that held fewer runs than the pool has VMs.

Printed per class and pool size: mean wall hours, VM runs, idle VM hours,
exact culprits and culprits named wrong with confidence >= 0.95, for both.

    .venv/bin/python benchmarks/batch_plans.py --trials 30
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from flaky_bisect import GOOD, SCENARIOS, SimTester, is_target, make_history

from kvmlab.bisect import AdaptivePolicy, bisect
from kvmlab.bisect.simulate import ClockedTester, MemoryRepo

BUILD_SECONDS = 30.0
"""An incremental build with a warm cache (the demo's steps)."""
RUN_SECONDS = 48.0
"""One syz-program run under TCG on the demo (issue 26's measurement)."""


@dataclass(frozen=True)
class Row:
    wall: float
    runs: int
    idle: float
    exact: bool
    wrong_confident: bool


def trial(args: tuple[str, float, float, int, int, bool]) -> Row:
    name, p, bg, vms, seed, batches = args
    sc = SCENARIOS[name]
    h = make_history(random.Random(seed), 300, sc, p, bg)
    t = ClockedTester(SimTester(h, sc, seed), build_seconds=BUILD_SECONDS, run_seconds=RUN_SECONDS,
                      cores=2, vms=vms)
    pol = AdaptivePolicy(chunk=vms, plan_in_batches=batches)
    res = bisect(MemoryRepo(h.graph, GOOD), t, bad=h.bad, good=GOOD, policy=pol, is_target=is_target,
                 verify=False)
    idle = t.idle_vm_seconds()
    right = res.culprit == h.culprit
    return Row(t.now, res.vm_runs, idle, right,
               res.culprit is not None and not right and res.confidence >= 0.95)


CASES = (("constant", 1.0, 0.0), ("constant", 0.3, 0.0), ("drift", 0.3, 0.0), ("jitter", 0.1, 0.0),
         ("bg", 0.3, 0.02))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--vms", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=7000)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"{args.trials} bisections per row, 300 commits, build {BUILD_SECONDS:.0f} s, "
          f"run {RUN_SECONDS:.0f} s; each figure single-run plans -> batch plans")
    print(f"{'class':<10} {'p':>4} {'bg':>4} {'VMs':>3}  {'wall h':>13} {'ratio':>5}  {'VM runs':>11}  "
          f"{'idle VM h':>11}  {'exact':>9}  {'wrong>=.95':>9}")
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, p, bg in CASES:
            for vms in args.vms:
                rows: dict[bool, list[Row]] = {}
                for batches in (False, True):
                    work = [(name, p, bg, vms, args.seed + s, batches) for s in range(args.trials)]
                    rows[batches] = list(pool.map(trial, work, chunksize=2))
                a, b = rows[False], rows[True]

                def mean(rs: list[Row], f: str) -> float:
                    return statistics.mean(float(getattr(r, f)) for r in rs)

                wa, wb = mean(a, "wall"), mean(b, "wall")
                print(f"{name:<10} {p:>4.2g} {bg:>4.2g} {vms:>3}  {wa / 3600:>5.2f} -> {wb / 3600:<5.2f} "
                      f"{wb / wa:>5.2f}  {mean(a, 'runs'):>4.0f} -> {mean(b, 'runs'):<4.0f}  "
                      f"{mean(a, 'idle') / 3600:>4.2f} -> {mean(b, 'idle') / 3600:<4.2f}  "
                      f"{sum(r.exact for r in a):>3} -> {sum(r.exact for r in b):<3}  "
                      f"{sum(r.wrong_confident for r in a):>3} -> {sum(r.wrong_confident for r in b):<3}",
                      flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
