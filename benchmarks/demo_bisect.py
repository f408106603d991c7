"""The demo's real bisections, end to end, with what each cost: the flaky bug
with the demo's own reproducer (a run crashes ~1/3 of the time: the full one the
test suite no longer runs), against baselines from the same run: the
deterministic bug, and the flaky bug with the test suite's reproducer (4 prctl
calls per run, p ~ 0.80).

Prints per bisection: the culprit found (and whether it is the planted one),
confidence, VM runs, builds, seconds building / testing, wall time; then the
flaky bisection's VM runs and wall time as multiples of each baseline's.

    flock /tmp/kvmlab-heavy.lock .venv/bin/python benchmarks/demo_bisect.py [--config base,nodwarf]

Builds go to the test cache's kernel work dir (``$KVMLAB_TEST_CACHE/kernel/work``)
and are shared with the test suite; the demo tree is the test cache's (made when
missing). Journals and logs go to a temporary directory, so every bisection
starts from scratch. A full run takes 20-45 min on 2 cores under TCG.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kvmlab.bisect import POLICIES  # noqa: E402
from kvmlab.cli import main as kvmlab_main  # noqa: E402
from kvmlab.kernel.demo_tree import make_demo_tree  # noqa: E402

X4_REPRO = REPO / "tests" / "fixtures" / "demo" / "repro_timerslack_hint_x4.c"

#: name -> (bug, reproducer or None for the demo's own); the first two are baselines.
RUNS: dict[str, tuple[str, Path | None]] = {
    "deterministic": ("culprit", None),
    "flaky, 4 calls/run": ("flaky_culprit", X4_REPRO),
    "flaky, demo's own": ("flaky_culprit", None),
}


def bisect(name: str, bug: str, repro: Path | None, tree: Path, args: argparse.Namespace,
           scratch: Path) -> dict[str, object]:
    out_json = scratch / f"{name.replace(' ', '_').replace('/', '')}.json"
    argv = ["demo", "--dir", str(tree), "--planted", bug, "--count", str(args.count), "--config", args.config,
            "--json", str(out_json), *([str(repro)] if repro else [])]
    log = io.StringIO()
    t = time.monotonic()
    with contextlib.redirect_stdout(log):
        rc = kvmlab_main(argv)
    wall = time.monotonic() - t
    (scratch / f"{out_json.stem}.log").write_text(log.getvalue())
    result = json.loads(out_json.read_text()) if out_json.is_file() else {}
    return {"rc": rc, "wall": wall, **result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="base,nodwarf", help="fragments (default: the test suite's)")
    ap.add_argument("--count", type=int, default=min(4, os.cpu_count() or 2), help="VMs per batch")
    ap.add_argument("--only", choices=list(RUNS), action="append", help="run only these (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the logs and journals")
    ap.add_argument("--single-run-plans", action="store_true",
                    help="the planner as before batch planning: plans of single runs, costed per run "
                         "(AdaptivePolicy.plan_in_batches=False), for a before/after comparison")
    ap.add_argument("--before", action="store_true",
                    help="the test phase's speed-ups switched off: single-run plans, a fresh boot per run "
                         "(vm.snapshot: off), the near-culprit rate prior in log rate and the release "
                         "settled at 0.95 before the bisection")
    args = ap.parse_args()
    if args.single_run_plans or args.before:
        POLICIES["adaptive"] = dataclasses.replace(POLICIES["adaptive"], plan_in_batches=False)
    if args.before:
        POLICIES["adaptive"] = dataclasses.replace(POLICIES["adaptive"], rate_near_mean_prior="log",
                                                   release_first_confidence=0.95)

    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache")) / "kernel"
    demo = make_demo_tree(cache / "linux-demo")
    scratch = Path(tempfile.mkdtemp(prefix="kvmlab-demo-bench-"))
    # The CLI's kernel work dir is $XDG_CACHE_HOME/kvmlab/kernel: share the tests'.
    xdg = scratch / "xdg-cache"
    (xdg / "kvmlab").mkdir(parents=True)
    (cache / "work").mkdir(parents=True, exist_ok=True)
    (xdg / "kvmlab" / "kernel").symlink_to(cache / "work")
    os.environ["XDG_CACHE_HOME"] = str(xdg)
    plans = "single-run plans" if args.single_run_plans else "plans in batches of the pool"
    if args.before:
        conf = scratch / "before.yaml"
        conf.write_text("vm:\n  snapshot: \"off\"\n")
        os.environ["KVMLAB_CONFIG"] = str(conf)
        plans = "before issue 26 (single-run plans, a boot per run, log near prior, release settled first)"
    print(f"demo bisection benchmark: config {args.config}, {args.count} VMs per batch, {plans}, "
          f"logs in {scratch}")
    print(f"{'bisection':<20} {'culprit':<14} {'planted':>7} {'conf':>5} {'runs':>5} {'builds':>6} "
          f"{'build s':>8} {'test s':>7} {'idle s':>6} {'wall s':>7}")
    results: dict[str, dict[str, object]] = {}
    try:
        for name, (bug, repro) in RUNS.items():
            if args.only and name not in args.only:
                continue
            r = bisect(name, bug, repro, demo.path, args, scratch)
            results[name] = r
            culprit = str(r.get("culprit") or "none")
            planted = "yes" if culprit == getattr(demo, bug) else "NO"
            conf = r.get("confidence")
            print(f"{name:<20} {culprit[:12]:<14} {planted:>7} "
                  f"{(f'{conf:.3f}' if isinstance(conf, float) else '-'):>5} {r.get('vm_runs', '-'):>5} "
                  f"{r.get('builds', '-'):>6} {float(str(r.get('build_seconds', 0))):>8.0f} "
                  f"{float(str(r.get('test_seconds', 0))):>7.0f} "
                  f"{float(str(r.get('vm_idle_seconds', 0))):>6.0f} {float(str(r['wall'])):>7.0f}",
                  flush=True)
        full = results.get("flaky, demo's own")
        if full is not None:
            for base in ("deterministic", "flaky, 4 calls/run"):
                b = results.get(base)
                if b and b.get("vm_runs") and full.get("vm_runs"):
                    runs = float(str(full["vm_runs"])) / float(str(b["vm_runs"]))
                    wall = float(str(full["wall"])) / float(str(b["wall"]))
                    print(f"flaky, demo's own vs {base}: {runs:.1f}x the VM runs, {wall:.1f}x the wall time")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r.get("rc") == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
