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

Measured here (base, 1172 objects, 2 cores shared with other jobs, load ~8):
plain 781 s wall / 793 s CPU at -j2; distcc 401 s wall at -j4 (665 objects
compiled on the distccd, 945 ms each there; 450 s CPU here), 0 fallbacks.
The wall ratio (0.51x) is the busy machine giving -j4 a larger share, not
a gain. Per object: compile 677 ms CPU, sending one ~160 ms of the client's
CPU; on 2 x 32 cores that is ~13 s of compiles and ~94 s of preprocessing
on a 2-core client (+ the link): the client becomes the bottleneck.
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
        # Where it would go on 2 hosts x 32 cores. This machine's CPU in the
        # distcc build also compiled the objects kept here (localhost slots):
        # take those out at the plain build's CPU per object, and what is left
        # is the cost of sending one (preprocessing, distcc). The compiles go
        # to 64 slots at the plain build's CPU per object; the link (vmlinux,
        # bzImage) is not measured apart and comes on top. Wall times on a
        # shared machine say more about its load than about distcc.
        sent = max(1, len(jobs_ms))
        plain_per_obj = plain_cpu / max(1, n)
        send_cost = max(0.0, local_cpu - (n - len(jobs_ms)) * plain_per_obj) / sent
        client = n * send_cost / cores
        compiles = n * plain_per_obj / 64
        print(f"  per object: compile {plain_per_obj * 1000:.0f} ms CPU (plain build), sending one "
              f"{send_cost * 1000:.0f} ms of this machine's CPU, "
              f"{remote / sent * 1000:.0f} ms wall on the distccd")
        print(f"  estimate, 2 x 32-core lab: ~{max(client, compiles):.0f} s + the link (compiles "
              f"{compiles:.0f} s over 64 slots; preprocessing and sending {client:.0f} s on this machine's "
              f"{cores} cores: the client is the bottleneck) vs {plain_cpu / cores:.0f} s of compiling "
              f"on {cores} cores plain")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
