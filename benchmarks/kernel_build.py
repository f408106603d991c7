"""Kernel build times on the demo tree, in one run: a clean build (no ccache),
then incremental builds in the same object dir for commits 1, 8 and 32 apart,
a cache hit, and a clean build in a fresh object dir with a warm ccache.

Target: a bisection step's build (commits tens apart) takes at most 15% of a
clean build. syzbot rebuilds every revision from ``make distclean``.

    .venv/bin/python benchmarks/kernel_build.py [--tree DEMO] [--config base]

Uses a fresh work directory (deleted at the end unless --keep), and the demo
tree from the test cache (made when missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kvmlab.kernel.builder import BuildManifest, KernelBuilder  # noqa: E402
from kvmlab.kernel.config import ConfigRequest  # noqa: E402
from kvmlab.kernel.demo_tree import DemoTree, make_demo_tree  # noqa: E402
from kvmlab.outcome import BuildOutcome, BuildStatus  # noqa: E402

TARGET = 0.15


def _row(label: str, outcome: BuildOutcome, wall: float, clean: float | None) -> str:
    m = BuildManifest.load(Path(outcome.artifacts["manifest"]))
    total = m.ccache_hits + m.ccache_misses
    rate = f"{100 * m.ccache_hits / total:5.1f}%" if total and not outcome.cached else "    -"
    ratio = f"{wall / clean:6.1%}" if clean else "     -"
    objs = "-" if outcome.cached else str(m.objects_compiled)
    return f"{label:<34} {wall:8.1f} s  {ratio}  {objs:>6} objs  ccache {rate}  {outcome.status.value}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=None, help="demo tree (default: the test cache's)")
    ap.add_argument("--config", default="base", help="fragments (default: base)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache")) / "kernel"
    tree_path = args.tree or cache / "linux-demo"
    demo = DemoTree.load(tree_path) if args.tree else make_demo_tree(tree_path)
    config = ConfigRequest.from_fragments(args.config.split(","))
    work = Path(tempfile.mkdtemp(prefix="kvmlab-bench-"))
    c = demo.commits
    broken = set(demo.broken)
    # Steps 4 -> 5 -> 13 -> 45 of the history: 1, 8 and 32 commits apart,
    # none in the broken range.
    a, b, d, e = c[3], c[4], c[12], c[44]
    assert not {a, b, d, e} & broken, "benchmark commits fall into the broken range"

    def timed(builder: KernelBuilder, commit: str) -> tuple[BuildOutcome, float]:
        t = time.monotonic()
        out = builder.build(demo.path, commit, config)
        wall = time.monotonic() - t
        if out.status is not BuildStatus.OK:
            raise SystemExit(f"build of {commit[:12]} failed: {out.error}")
        return out, wall

    try:
        print(f"kernel build benchmark: {args.config} config, {args.jobs} jobs, work dir {work}")
        cold = KernelBuilder(work / "nocache", jobs=args.jobs, ccache=False)
        out, clean = timed(cold, a)
        print(_row("clean build, no ccache", out, clean, None), flush=True)
        warm = KernelBuilder(work / "inc", jobs=args.jobs)
        out, wall = timed(warm, a)
        print(_row("clean build, ccache (fresh objdir)", out, wall, clean), flush=True)
        step_ratios = []
        for label, commit in (("incremental, 1 commit apart", b), ("incremental, 8 commits apart", d),
                              ("incremental, 32 commits apart", e)):
            out, wall = timed(warm, commit)
            step_ratios.append(wall / clean)
            print(_row(label, out, wall, clean), flush=True)
        out, wall = timed(warm, d)
        print(_row("cache hit (8-apart commit again)", out, wall, clean), flush=True)
        worst = max(step_ratios[1:])
        verdict = "meets" if worst <= TARGET else "MISSES"
        print(f"bisection step (8-32 commits apart): worst {worst:.1%} of a clean build; "
              f"target <= {TARGET:.0%}: {verdict}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
