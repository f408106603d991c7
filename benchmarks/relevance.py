"""Builds and VM runs of a bisection with and without relevance to the build.

A synthetic kernel history (a real throwaway git repository) where most
commits touch files the build never reads — drivers the config does not
build, other architectures, Documentation/, tools/ — and a few touch built
files or a Kconfig/Makefile; the culprit is one of those. A fake tester
(``tests/relevance_history.py``) builds kernels made of the built files only
(so commits that touch nothing built build the same binary) and crashes every
commit that contains the culprit. Each culprit is bisected by both policies,
with relevance (the default) and with ``relevance=False``; the culprit must be
exact either way. Prints builds and VM runs per case and the saving (issue 25
target: >= 40% fewer builds), for histories where 4%, 12% and 25% of the
commits are relevant: a bisection over N of M commits needs about log2(N)
instead of log2(M) builds (plus the bad commit's), so the saving depends on
that share and on the range's length.

    .venv/bin/python benchmarks/relevance.py [--commits 300] [--seed 1] [--share 0.04 --share 0.12] [--p 0.5]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.bisect import Outcome, bisect
from tests.relevance_history import BUILT, NOT_BUILT, RelevanceTester, make_path_history

#: Shares of commits that touch a built file, a Kconfig or a Makefile.
SHARES = (0.04, 0.12, 0.25)
KCONFIG_PATHS = ("drivers/gpu/drm/i915/Kconfig", "arch/x86/Makefile", "mm/Kconfig")


def history_plan(n: int, share: float, rng: random.Random) -> tuple[list[list[str]], list[int], list[int]]:
    """Per commit the paths it changes; the commits that touch built files;
    those that touch a Kconfig/Makefile."""
    commits: list[list[str]] = [[]]
    built: list[int] = []
    kconfig: list[int] = []
    for i in range(1, n + 1):
        roll = rng.random()
        if roll < share * 0.8:
            commits.append([rng.choice(BUILT)])
            built.append(i)
        elif roll < share:
            commits.append([rng.choice(KCONFIG_PATHS)])
            kconfig.append(i)
        else:
            # Some commits touch two unbuilt places (a driver and its documentation).
            k = 1 + (rng.random() < 0.3)
            commits.append(rng.sample(NOT_BUILT, k))
    return commits, built, kconfig


Totals = dict[tuple[str, bool], list[int]]


def run_share(n: int, share: float, seed: int, n_culprits: int, p: float) -> tuple[Totals, bool]:
    """Bisect each culprit of one history with both policies, with and
    without relevance; (total builds and VM runs per (policy, relevance),
    every culprit exact)."""
    rng = random.Random(seed)
    commits, built, kconfig = history_plan(n, share, rng)
    culprits = [str(i) for i in rng.sample(built, min(n_culprits, len(built)))]
    culprits += [str(rng.choice(kconfig))] if kconfig else []
    totals: Totals = {}
    all_exact = True
    with tempfile.TemporaryDirectory(prefix="kvmlab-relevance-") as tmp:
        hist = make_path_history(Path(tmp) / "repo", commits)
        n_rel = len(built) + len(kconfig)
        print(f"\nhistory: {n} commits, {len(built)} touch built files, {len(kconfig)} a Kconfig/Makefile "
              f"({n_rel} relevant, {100 * n_rel / n:.0f}%), the rest drivers not built, other architectures, "
              "Documentation/, tools/")
        print(f"{'policy':9} {'culprit':>7} {'kind':8} {'builds':>13} {'VM runs':>13} {'exact':>11}")
        for policy in ("adaptive", "syzbot"):
            for c in culprits:
                row: dict[bool, tuple[int, int, bool]] = {}
                for relevance in (False, True):
                    tester = RelevanceTester(hist, culprit=c, p=p, seed=seed)
                    res = bisect(hist.repo, tester, bad=hist.h[str(n)], good=hist.h["0"],
                                 policy=policy, verify=False, relevance=relevance)
                    exact = res.outcome is Outcome.FOUND and res.culprit == hist.h[c]
                    all_exact &= exact
                    row[relevance] = (res.builds, res.vm_runs, exact)
                    t = totals.setdefault((policy, relevance), [0, 0])
                    t[0] += res.builds
                    t[1] += res.vm_runs
                kind = "kconfig" if int(c) in kconfig else "built"
                print(f"{policy:9} {c:>7} {kind:8} {row[False][0]:>5} -> {row[True][0]:<5} "
                      f"{row[False][1]:>5} -> {row[True][1]:<5} {row[False][2]!s:>5}/{row[True][2]!s:5}")
        for policy in ("adaptive", "syzbot"):
            (b0, r0), (b1, r1) = totals[(policy, False)], totals[(policy, True)]
            print(f"{policy}: builds {b0} -> {b1} ({100 * (b0 - b1) / b0:.0f}% fewer), VM runs {r0} -> {r1} "
                  f"({100 * (r0 - r1) / r0:.0f}% fewer) over {len(culprits)} culprits")
    return totals, all_exact


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--share", type=float, action="append",
                    help=f"share of relevant commits (repeatable; default {', '.join(map(str, SHARES))})")
    ap.add_argument("--culprits", type=int, default=4, help="culprits in built files (plus one Kconfig)")
    ap.add_argument("--p", type=float, default=1.0, help="crash rate of a commit with the bug (default 1)")
    args = ap.parse_args()
    summary = []
    all_exact = True
    for share in args.share or SHARES:
        totals, exact = run_share(args.commits, share, args.seed, args.culprits, args.p)
        all_exact &= exact
        b0 = sum(totals[(p, False)][0] for p in ("adaptive", "syzbot"))
        b1 = sum(totals[(p, True)][0] for p in ("adaptive", "syzbot"))
        saved = 100 * (b0 - b1) / b0
        summary.append(f"{100 * share:.0f}% relevant: {b0} -> {b1} builds ({saved:.0f}% fewer)")
    print("\nsummary (both policies):")
    print("\n".join(summary))
    print(f"exact culprit in every case: {all_exact}")
    return 0 if all_exact else 1


if __name__ == "__main__":
    sys.exit(main())
