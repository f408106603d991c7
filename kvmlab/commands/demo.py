"""``kvmlab demo``: the main job on an embedded default.

Makes the demo kernel history (Debian's linux-source-6.1 plus a chain of
commits, one of which plants a bug), then bisects the planted bug end to end
with its C reproducer — real builds, real VMs — and prints the log. Finally it
says whether the culprit found is the one planted (the bisection itself never
reads that answer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmlab.commands.bisect import add_bisect_arguments, run_bisection
from kvmlab.config import cache_dir
from kvmlab.errors import UserError
from kvmlab.kernel.demo_tree import make_demo_tree

BUGS = ("culprit", "flaky_culprit")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="build the demo kernel history and bisect its planted bug")
    p.add_argument("--dir", type=Path, help="where the demo tree goes (default: in the cache)")
    p.add_argument("--bug", choices=BUGS, default="culprit",
                   help="culprit: the deterministic bug; flaky_culprit: the one crashing on ~1/3 of runs")
    add_bisect_arguments(p, bug_dir=False)  # --bug here names a planted bug
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dest = args.dir or cache_dir() / "demo" / "linux-demo"
    dest.parent.mkdir(parents=True, exist_ok=True)
    demo = make_demo_tree(dest, progress=lambda m: print(f"kvmlab: {m}", flush=True))
    if args.bug not in demo.reproducers:
        raise UserError(f"demo tree {dest} plants no {args.bug!r} bug")
    args.tree = demo.path
    args.bad = args.bad or demo.head
    if args.repro is None and args.command is None and args.syz_prog is None:
        args.repro = Path(demo.reproducers[args.bug])
    if args.run_time is None:
        args.run_time = 20.0  # the demo reproducers crash at once or not at all
    # Small guests: many of them share the host's cores when KVM is missing.
    if args.cpus is None:
        args.cpus = 1
    if args.memory_mb is None:
        args.memory_mb = 512
    result = run_bisection(args)
    planted = getattr(demo, args.bug)
    if result.culprit == planted:
        print(f"kvmlab: demo: found the planted culprit {planted[:12]}")
        return 0
    print(f"kvmlab: demo: the planted culprit is {planted[:12]}, the bisection said "
          f"{(result.culprit or 'nothing')[:12]} ({result.outcome.value})")
    return 1
