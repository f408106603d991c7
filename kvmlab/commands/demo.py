"""``kvmlab demo``: the main job on an embedded default.

Makes the demo kernel history (Debian's linux-source-6.1 plus a chain of
commits, one of which plants a bug), then bisects the planted bug end to end
with its C reproducer — real builds, real VMs — and prints the log. Finally it
says whether the culprit found is the one planted (the bisection itself never
reads that answer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvmlab.bisect import GitRepository
from kvmlab.commands.bisect import add_bisect_arguments, bisect_fields
from kvmlab.commands.options import _path, given, make_job
from kvmlab.jobs.demo import demo_dir, run_demo
from kvmlab.jobs.model import DemoJob
from kvmlab.ui.live import progress_view

BUGS = ("culprit", "flaky_culprit")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="build the demo kernel history and bisect its planted bug")
    p.add_argument("--dir", type=Path, help="where the demo tree goes (default: in the cache)")
    p.add_argument("--planted", choices=BUGS, default=None,
                   help="which planted bug to bisect: culprit, the deterministic one (default); "
                        "flaky_culprit, the one crashing on ~1/3 of runs")
    # The old spelling: --bug means a bug directory in repro and bisect.
    p.add_argument("--bug", dest="planted_old", choices=BUGS, default=None, help=argparse.SUPPRESS)
    add_bisect_arguments(p, bug_dir=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.planted_old is not None:
        print("kvmlab: warning: demo --bug is now --planted (--bug names a bug directory in repro and "
              "bisect)", file=sys.stderr)
    fields = given(dir=_path(args.dir), planted=args.planted or args.planted_old)
    bisect = bisect_fields(args)
    if bisect:
        fields["bisect"] = bisect
    job = make_job(DemoJob.KIND, fields, args.job)
    assert isinstance(job, DemoJob)
    tree = demo_dir(job)

    def subject(h: str) -> str:
        return GitRepository(tree).commit_info(h).subject

    with progress_view("kvmlab bisect", describe=subject) as view:
        done = run_demo(job, view)
    if done.found:
        print(f"kvmlab: demo: found the planted culprit {done.planted[:12]}")
        return 0
    print(f"kvmlab: demo: the planted culprit is {done.planted[:12]}, the bisection said "
          f"{(done.result.culprit or 'nothing')[:12]} ({done.result.outcome.value})")
    return 1
