"""Overlapping builds with tests, on a simulated clock: wall time of adaptive
bisections with and without background builds, on machines of three sizes.

Each bisection is a simulated history (``flaky_bisect.py``'s constant-rate
scenario, 1,000 commits) run twice from the same random outcomes: once with
builds only in the foreground, once with :class:`~kvmlab.jobs.tester.VMTester`'s
background builds (the same scheduler, on a simulated clock,
:class:`kvmlab.bisect.simulate.ClockedTester`). A build takes the given
seconds on the whole machine; a batch of up to ``vms`` runs takes the run
seconds; background builds get the cores the VMs leave free.

    .venv/bin/python benchmarks/overlap.py --trials 40
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from flaky_bisect import GOOD, SCENARIOS, SimTester, is_target, make_history

from kvmlab.bisect import AdaptivePolicy, bisect
from kvmlab.bisect.simulate import ClockedTester, MemoryRepo


@dataclass(frozen=True)
class Machine:
    name: str
    cores: int
    vms: int
    vm_cores: int
    build_seconds: float
    run_seconds: float


MACHINES = (
    Machine("2-core workstation, incremental builds", 2, 2, 1, 30.0, 60.0),
    Machine("2-core workstation, clean builds", 2, 2, 1, 600.0, 60.0),
    Machine("64-core lab host, incremental builds", 64, 10, 2, 30.0, 60.0),
    Machine("64-core lab host, clean builds", 64, 10, 2, 300.0, 60.0),
    Machine("syzbot-like: 64 cores, 6-min builds, 5-min runs", 64, 10, 2, 360.0, 300.0),
)


def trial(m: Machine, p: float, seed: int, overlap: bool) -> tuple[float, bool, int]:
    sc = SCENARIOS["constant"]
    h = make_history(random.Random(seed), 1000, sc, p)
    t = ClockedTester(SimTester(h, sc, seed), build_seconds=m.build_seconds, run_seconds=m.run_seconds,
                      cores=m.cores, vms=m.vms, vm_cores=m.vm_cores, overlap=overlap)
    res = bisect(MemoryRepo(h.graph, GOOD), t, bad=h.bad, good=GOOD, policy=AdaptivePolicy(chunk=m.vms),
                 is_target=is_target, verify=False)
    return t.now, res.culprit == h.culprit, res.vm_runs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--p", type=float, default=0.3)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"{args.trials} bisections per machine, p = {args.p}, 1,000 commits")
    print(f"{'machine':<50} {'plain h':>8} {'overlap h':>9} {'ratio':>6} {'exact':>11} {'runs':>11}")
    for m in MACHINES:
        rows = {ov: [trial(m, args.p, 5000 + s, ov) for s in range(args.trials)] for ov in (False, True)}
        plain, over = (statistics.mean(t for t, _, _ in rows[ov]) for ov in (False, True))
        exact = [sum(ok for _, ok, _ in rows[ov]) for ov in (False, True)]
        runs = [statistics.mean(r for _, _, r in rows[ov]) for ov in (False, True)]
        print(f"{m.name:<50} {plain / 3600:>8.2f} {over / 3600:>9.2f} {over / plain:>6.3f} "
              f"{exact[0]:>5}/{exact[1]:<5} {runs[0]:>5.0f}/{runs[1]:<5.0f}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
