"""A cold kernel build (no ccache, fresh object dir) of the demo head with the
compile spread over distcc vs plain, and where the time went.

    flock /tmp/kvmlab-build.lock .venv/bin/python benchmarks/distcc_build.py [--config base]

The compile host is a distccd on this same machine, in a network namespace
of its own (tests/lab/distccd.py), taking 2 compiles at once: on one 2-core
machine this shows distcc's overhead (preprocessing here, sending, compiling
there on the same cores), not a gain. From the measured per-object costs it
estimates the build on a lab of 2 hosts x 32 cores: the compiles spread over
64 slots, while preprocessing, sending and linking stay on this machine.
Needs root (the namespace) and distcc. About 2 cold builds' time (~20 min on
2 cores).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kvmlab.kernel.builder import BuildManifest, KernelBuilder  # noqa: E402
from kvmlab.kernel.config import ConfigRequest  # noqa: E402
from kvmlab.kernel.demo_tree import make_demo_tree  # noqa: E402
from kvmlab.outcome import BuildStatus  # noqa: E402
from tests.lab.distccd import distccd, unavailable_reason  # noqa: E402

#: distccd's summary of one job: ``... COMPILE_OK exit:0 sig:0 core:0 ret:0 time:123ms gcc x.c``.
_JOB_RE = re.compile(r"COMPILE_OK .*?time:(\d+)ms")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="base", help="fragments (default: base)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", REPO / ".test-cache")) / "kernel"
    demo = make_demo_tree(cache / "linux-demo")
    config = ConfigRequest.from_fragments(args.config.split(","))
    work = Path(tempfile.mkdtemp(prefix="kvmlab-bench-"))
    cores = os.cpu_count() or 1
    try:
        print(f"cold build of the demo head ({demo.head[:12]}), {args.config}, {cores} cores, no ccache",
              flush=True)
        plain = KernelBuilder(work / "plain", jobs=cores, ccache=False)
        t, cpu = time.monotonic(), _children_cpu()
        out = plain.build(demo.path, demo.head, config)
        plain_wall, plain_cpu = time.monotonic() - t, _children_cpu() - cpu
        assert out.status is BuildStatus.OK, out.error
        m = BuildManifest.load(Path(out.artifacts["manifest"]))
        print(f"  plain : {plain_wall:7.1f} s wall, {plain_cpu:7.1f} s CPU, {m.objects_compiled} objects, "
              f"make -j{cores}", flush=True)
        with distccd(work, slots=cores) as d:
            spread = KernelBuilder(work / "distcc", jobs=cores, ccache=False, distcc_hosts=(d.host,))
            t, cpu = time.monotonic(), _children_cpu()
            out = spread.build(demo.path, demo.head, config)
            wall, local_cpu = time.monotonic() - t, _children_cpu() - cpu
            jobs_ms = [int(x) for x in _JOB_RE.findall(d.log.read_text(errors="replace"))]
        assert out.status is BuildStatus.OK, out.error
        dm = BuildManifest.load(Path(out.artifacts["manifest"]))
        info = dm.extra.get("distcc", {})
        remote = sum(jobs_ms) / 1000
        n = dm.objects_compiled
        print(f"  distcc: {wall:7.1f} s wall = {wall / plain_wall:.2f}x, make -j{info.get('jobs')}, "
              f"{len(jobs_ms)} of {n} objects compiled on the distccd ({remote:.1f} s there, "
              f"{remote / max(1, len(jobs_ms)) * 1000:.0f} ms each), {local_cpu:.1f} s CPU here "
              f"(preprocessing, sending, the rest, linking), fallbacks {info.get('fallbacks')}")
        # Where it would go on 2 hosts x 32 cores: compiles over 64 slots;
        # this machine's share (its CPU per object) over its own cores; the
        # part of the plain build that does not parallelise (link, vmlinux,
        # bzImage: the wall time plain minus its CPU spread over the cores).
        per_obj_local = local_cpu / max(1, n)
        per_obj_remote = remote / max(1, len(jobs_ms))
        serial = max(0.0, plain_wall - plain_cpu / cores)
        lab = max(n * per_obj_local / cores, n * per_obj_remote / 64) + serial
        print(f"  per object: {per_obj_local * 1000:.0f} ms of this machine's CPU, "
              f"{per_obj_remote * 1000:.0f} ms on a compile host; serial part of the build ~{serial:.0f} s")
        print(f"  estimate, 2 x 32-core lab: ~{lab:.0f} s wall (compiles {n * per_obj_remote / 64:.0f} s "
              f"over 64 slots, this machine's share {n * per_obj_local / cores:.0f} s on {cores} cores, "
              f"+{serial:.0f} s serial) vs {plain_wall:.0f} s plain here")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
