"""VM runs of the demo's bisections, simulated on the demo's own history
(issue 26: the deterministic bug at <= 30 VM runs with the revert check).

The history is ``kvmlab/kernel/demo/history.yaml``: its commits in order, its
unbuildable range (``breaks`` .. ``fixes``), its two planted culprits and
their crash rates (``fraction``). The bisection is what ``kvmlab demo`` runs:
the release search from the tip (the release is the tarball's base commit),
2 VMs, the adaptive policy, the revert check. Only the runs are simulated:
the deterministic bug crashes every run of a commit that has it; the flaky
one crashes each run with its fraction, from a seeded stream per trial.

Each figure is paired: the shipped policy against ``--baseline`` (policy
fields, default the second batch on the bad commit switched off), the same
outcomes for both.

    .venv/bin/python benchmarks/demo_runs.py [--trials 200] [--baseline 'rate_batch=False']
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flaky_bisect import RevertingRepo, policy_overrides  # noqa: E402

from kvmlab.bisect import AdaptivePolicy, bisect  # noqa: E402
from kvmlab.bisect.graph import CommitGraph  # noqa: E402
from kvmlab.bisect.seams import Tag  # noqa: E402
from kvmlab.kernel.demo_tree import load_history  # noqa: E402
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus  # noqa: E402

BASE = "v6.1"
TITLE = "BUG: kernel NULL pointer dereference"
VMS = 2


@dataclasses.dataclass(frozen=True)
class Demo:
    graph: CommitGraph
    broken: frozenset[str]
    culprits: dict[str, str]
    """Bug name -> its planted commit."""
    rates: dict[str, float]


def demo_history() -> Demo:
    h = load_history()
    rows: list[tuple[str, list[str], str]] = []
    marked: dict[str, str] = {}
    prev = BASE
    for i, step in enumerate(h.steps, 1):
        sha = f"{i:040x}"
        rows.append((sha, [prev], step.title))
        for m in step.marks:
            marked[m] = sha
        prev = sha
    order = [r[0] for r in rows]
    broken = frozenset(order[order.index(marked["breaks"]):order.index(marked["fixes"])])
    graph = CommitGraph.from_parents(rows, tip=prev, boundary=[BASE])
    return Demo(graph, broken, {b: marked[b] for b in h.bugs}, {b: x.fraction for b, x in h.bugs.items()})


class DemoRepo(RevertingRepo):
    """The demo's history with its release (reverts always apply)."""

    def release_tags(self, tip: str, floor: str | None = None) -> list[Tag]:
        return [Tag(BASE, BASE)]


class DemoTester:
    """A commit crashes at the bug's rate when it has the planted culprit (a
    revert of the culprit never does); runs drawn per (seed, commit, run)."""

    def __init__(self, demo: Demo, bug: str, seed: int) -> None:
        self.demo, self.seed = demo, seed
        self.culprit, self.rate = demo.culprits[bug], demo.rates[bug]
        self.count: dict[str, int] = {}

    def build(self, commit: str) -> BuildOutcome:
        st = BuildStatus.FAILED if commit in self.demo.broken else BuildStatus.OK
        return BuildOutcome(commit, st, compiler="gcc (Debian 12.2.0-14) 12.2.0", error="error: broken")

    def _has_bug(self, commit: str) -> bool:
        if commit.startswith("r"):
            return False if commit.endswith(self.culprit) else self._has_bug(commit[1:].partition("-")[0])
        g = self.demo.graph
        return commit != BASE and bool(g.closure_of(commit) >> g.index[self.culprit] & 1)

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        c = build.commit
        out = []
        for _ in range(runs):
            k = self.count.get(c, 0)
            self.count[c] = k + 1
            x = random.Random(f"{self.seed}/{c}/{k}").random()
            crashed = self._has_bug(c) and x < self.rate
            out.append(RunOutcome(k, RunStatus.CRASHED, title=TITLE) if crashed
                       else RunOutcome(k, RunStatus.OK))
        return out


@dataclasses.dataclass(frozen=True)
class Row:
    runs: int
    confirm_runs: int
    exact: bool
    confidence: float


def trial(demo: Demo, bug: str, seed: int, policy: AdaptivePolicy) -> Row:
    tip = demo.graph.tip
    res = bisect(DemoRepo(demo.graph, BASE, tip), DemoTester(demo, bug, seed), bad=tip, good=None,
                 policy=policy, verify=True)
    confirm = sum(c.runs for c in res.confirmations)
    return Row(res.vm_runs, confirm, res.culprit == demo.culprits[bug], res.confidence or 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--trials", type=int, default=200,
                    help="flaky-bug bisections (the deterministic bug's is one)")
    ap.add_argument("--baseline", default="rate_batch=False",
                    help="policy fields of the baseline ('field=value;field=value')")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    demo = demo_history()
    shipped = AdaptivePolicy(chunk=VMS)
    try:
        base = dataclasses.replace(shipped, **policy_overrides(args.baseline))  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        ap.error(str(e))
    print(f"the demo's history: {len(demo.graph)} commits, {len(demo.broken)} unbuildable, {VMS} VMs, "
          f"release search and revert check; baseline: {args.baseline}")
    print(f"{'bug':>14} {'policy':>9} {'n':>4} {'exact':>7} {'VM runs':>8} {'median':>7} {'max':>4} "
          f"{'of them revert':>15} {'<= 30 runs':>10}")
    for bug, n in (("culprit", 1), ("flaky_culprit", args.trials)):
        for name, pol in (("baseline", base), ("shipped", shipped)):
            rows = [trial(demo, bug, seed, pol) for seed in range(n)]
            runs = [r.runs for r in rows]
            print(f"{bug:>14} {name:>9} {n:>4} {sum(r.exact for r in rows) / n:>7.1%} "
                  f"{statistics.mean(runs):>8.1f} {statistics.median(runs):>7.0f} {max(runs):>4} "
                  f"{statistics.mean(r.confirm_runs for r in rows):>15.1f} "
                  f"{sum(x <= 30 for x in runs) / n:>10.1%}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
