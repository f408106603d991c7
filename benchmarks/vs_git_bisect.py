"""kvmlab bisect against the plain way, on the demo tree's planted bug.

The plain way is what a kernel developer scripts without kvmlab: ``git bisect
run`` in a checkout of the tree, each step a clean build (``make distclean``,
the same .config, ``olddefconfig``, ``make -j$(nproc) bzImage``; no ccache)
and a fixed 10 runs of the reproducer in the same VMs kvmlab uses (``kvmlab
repro --kernel``, ``--count`` VMs at a time); any crash is bad. kvmlab runs
``kvmlab bisect`` on the same range and bug. Both start from cold caches:
kvmlab gets an empty cache directory and an empty ccache.

Prints wall time split into build and test for both, the culprits, and the
ratio (target: kvmlab >= 5x faster, same culprit). The real run takes long
(an hour or more on 2 cores); ``--simulate`` re-prints the comparison from a
recorded run (``--record FILE`` writes one) or, without one, estimates it from
step times measured on this machine (figures in STEP_TIMES).

    .venv/bin/python benchmarks/vs_git_bisect.py --workdir /tmp/vs --record vs.json
    .venv/bin/python benchmarks/vs_git_bisect.py --simulate vs.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KVMLAB = Path(sys.executable).parent / "kvmlab"

#: Seconds measured on this 2-core machine without KVM (TCG) in the real
#: one-invocation run of 2026-12-04 (demo tree, planted culprit, kvmlab's
#: ``base`` config both ways, 1,172 objects), used by --simulate without a
#: recording. Plain way: a clean in-tree build without ccache (243-262 s), a
#: step whose build fails (the demo's planted broken commits: 58-61 s), the
#: 10 reproducer runs of one commit (27-31 s bad, 54-56 s good). kvmlab: its
#: first build with a cold ccache (294 s, checkout and config included), the
#: 9 other builds (94 s: incremental, failing and the revert) and its whole
#: test phase (25 VM runs restored from snapshots, 103 s). That run: plain
#: 1,896 s, kvmlab 502 s, 3.8x. (The run of 2026-11-26 had a larger config:
#: clean builds of 491-550 s, kvmlab's test phase 386 s for 39 VM runs.)
STEP_TIMES = {"clean_build": 254.0, "failed_build": 59.0, "plain_test": 41.0, "cold_build": 294.0,
              "incremental_build": 10.5, "kvmlab_test": 103.0}

STEP_SCRIPT = """#!/bin/bash
# One step of the plain bisection: clean build, then {runs} runs; bad if any crashed.
set -u
cd "$(git rev-parse --show-toplevel)"
t0=$(date +%s.%N)
make distclean >/dev/null 2>&1
cp {config} .config
if ! make olddefconfig >/dev/null 2>&1 || ! make -j{jobs} bzImage >/dev/null 2>&1; then
  echo "build $(git rev-parse HEAD) failed $(echo "$(date +%s.%N) - $t0" | bc)" >> {log}
  exit 125
fi
t1=$(date +%s.%N)
crashed=0
for i in $(seq 1 {batches}); do
  out=$({kvmlab} repro --kernel arch/x86/boot/bzImage {repro} --count {vms} --cpus 1 --memory-mb 512 \\
        --run-time 20 2>&1)
  echo "$out" | grep -q 'crashed:' && crashed=1
done
t2=$(date +%s.%N)
echo "step $(git rev-parse HEAD) build $(echo "$t1 - $t0" | bc)" \
     "test $(echo "$t2 - $t1" | bc) crashed $crashed" >> {log}
exit $crashed
"""


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    print("+", shlex.join(argv), flush=True)
    return subprocess.run(argv, check=True, text=True, **kw)


def plain(demo: Path, work: Path, repro: Path, config: Path, runs: int, vms: int, env: dict[str, str]
          ) -> dict[str, Any]:
    checkout = work / "plain-checkout"
    if not checkout.exists():
        sh(["git", "clone", "-q", str(demo), str(checkout)])
    log = work / "plain-steps.log"
    log.unlink(missing_ok=True)
    step = work / "step.sh"
    step.write_text(STEP_SCRIPT.format(runs=runs, config=config, jobs=os.cpu_count() or 2, log=log,
                                       batches=-(-runs // vms), kvmlab=KVMLAB, repro=repro, vms=vms))
    step.chmod(0o755)
    info = json.loads((demo.parent / f"{demo.name}.demo.json").read_text())
    t0 = time.monotonic()
    sh(["git", "-C", str(checkout), "bisect", "reset"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sh(["git", "-C", str(checkout), "bisect", "start", info["head"], info["base"]])
    done = sh(["git", "-C", str(checkout), "bisect", "run", str(step)], capture_output=True, env=env)
    wall = time.monotonic() - t0
    culprit = next((ln.split()[0] for ln in done.stdout.splitlines() if "is the first bad commit" in ln),
                   None)
    sh(["git", "-C", str(checkout), "bisect", "reset"], stdout=subprocess.DEVNULL)
    build = test = 0.0
    steps = 0
    for line in log.read_text().splitlines():
        f = line.split()
        if f[0] == "step":
            build, test, steps = build + float(f[3]), test + float(f[5]), steps + 1
        else:
            build, steps = build + float(f[-1]), steps + 1
    return {"wall": wall, "build": build, "test": test, "steps": steps, "culprit": culprit}


def kvmlab(demo: Path, work: Path, repro: Path, vms: int, env: dict[str, str]) -> dict[str, Any]:
    info = json.loads((demo.parent / f"{demo.name}.demo.json").read_text())
    out = work / "kvmlab-result.json"
    t0 = time.monotonic()
    sh([str(KVMLAB), "bisect", "--tree", str(demo), "--bad", info["head"], "--good", info["base"], str(repro),
        "--count", str(vms), "--cpus", "1", "--memory-mb", "512", "--run-time", "20",
        "--workdir", str(work / "kvmlab-work"), "--json", str(out)], env=env)
    wall = time.monotonic() - t0
    r = json.loads(out.read_text())
    return {"wall": wall, "build": r["build_seconds"], "test": r["test_seconds"],
            "steps": r["commits_tested"], "culprit": r["culprit"], "vm_runs": r["vm_runs"]}


def report(rec: dict[str, Any]) -> None:
    p, k = rec["plain"], rec["kvmlab"]
    for name, r in (("plain git bisect run", p), ("kvmlab bisect", k)):
        print(f"{name:>22}: {r['wall'] / 60:6.1f} min wall (build {r['build'] / 60:5.1f} min, "
              f"test {r['test'] / 60:5.1f} min), {r['steps']} commits, culprit {(r['culprit'] or '-')[:12]}")
    ratio = p["wall"] / k["wall"]
    same = p["culprit"] == k["culprit"] == rec.get("planted", k["culprit"])
    verdict = "yes" if same else "NO"
    if p["culprit"] is None and k["culprit"] is None:
        verdict = "not known (an estimate runs no bisection)"
    print(f"kvmlab is {ratio:.1f}x faster (target >= 5x: {'met' if ratio >= 5 else 'MISSED'}); "
          f"same culprit{' (the planted one)' if 'planted' in rec else ''}: {verdict}")


def estimate(plain_built: int = 6, plain_failed: int = 2, kvmlab_builds: int = 10) -> dict[str, Any]:
    """The real run's shape (the plain path: 6 commits built and tested, 2
    whose build failed and were skipped; kvmlab: 10 builds) at STEP_TIMES."""
    t = STEP_TIMES
    plain_build = plain_built * t["clean_build"] + plain_failed * t["failed_build"]
    plain_test = plain_built * t["plain_test"]
    k_build = t["cold_build"] + (kvmlab_builds - 1) * t["incremental_build"]
    k_test = t["kvmlab_test"]
    return {"plain": {"wall": plain_build + plain_test, "build": plain_build, "test": plain_test,
                      "steps": plain_built + plain_failed, "culprit": None},
            "kvmlab": {"wall": k_build + k_test, "build": k_build, "test": k_test, "steps": kvmlab_builds,
                       "culprit": None}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/kvmlab-vs-git-bisect"))
    ap.add_argument("--demo", type=Path, help="demo tree (default: made in the workdir)")
    ap.add_argument("--runs", type=int, default=10, help="plain way: runs per commit (default 10)")
    ap.add_argument("--vms", type=int, default=2)
    ap.add_argument("--record", type=Path, help="write the measured figures here")
    ap.add_argument("--simulate", nargs="?", const="", help="no builds or VMs: re-print a recorded run "
                                                            "(FILE) or estimate from STEP_TIMES")
    args = ap.parse_args(argv)
    if args.simulate is not None:
        rec = json.loads(Path(args.simulate).read_text()) if args.simulate else estimate()
        print("simulated from " + (args.simulate or f"step times {STEP_TIMES}"))
        report(rec)
        return 0
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cold = work / "cold"
    shutil.rmtree(cold, ignore_errors=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(cold / "xdg"), "CCACHE_DIR": str(cold / "ccache")}
    demo = args.demo or work / "linux-demo"
    if not demo.exists():
        sh([str(KVMLAB), "demo-tree", str(demo)], env=env)
    info = json.loads((demo.parent / f"{demo.name}.demo.json").read_text())
    repro = Path(info.get("reproducers", {}).get("culprit")
                 or REPO / "kvmlab/kernel/demo/repro_comm_digest.c")
    config = work / "base.config"
    # The same .config both ways: the one kvmlab makes from its base fragments at the base commit.
    # Not timed, so with the user's own (possibly warm) ccache.
    sh([str(KVMLAB), "kernel", "build", "--tree", str(demo), "--commit", info["base"], "--config", "base",
        "--output", str(work / "base-build")], env={**os.environ, "XDG_CACHE_HOME": str(cold / "xdg")})
    shutil.copy(work / "base-build" / "config", config)
    shutil.rmtree(cold, ignore_errors=True)  # cold again for the timed runs
    rec = {"planted": info["culprit"]}
    rec["kvmlab"] = kvmlab(demo, work, repro, args.vms, env)
    plain_env = {k: v for k, v in env.items() if not k.startswith("CCACHE")}
    rec["plain"] = plain(demo, work, repro, config, args.runs, args.vms, plain_env)
    report(rec)
    if args.record:
        args.record.write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
