"""The demo's reproducer, 4 runs on one libvirt host against the same 4 runs
spread over two (this machine plus a lab host reached over SSH), with the
bytes uploaded to each host; then the same kernel again on the same hosts
(expected: 0 bytes uploaded).

    flock /tmp/kvmlab-heavy.lock .venv/bin/python benchmarks/multi_host.py [--runs 4] [--capacity 2]

Needs root (the lab host runs in its own namespaces, see
tests/lab/harness.py). Builds the demo tree's head (the bad end its
bisection starts from) with the test suite's config (``base,nodwarf``)
through the test cache (``KVMLAB_TEST_CACHE``, default .test-cache), so the
build is the suite's own. Baseline: the one-host
run, measured in the same run. Both "hosts" share this machine's CPUs: spread
over two, the runs start at once instead of in waves, but TCG guests then
compete for the same cores, so the wall time says what the scheduling and
the remote path cost here, not what a second real machine would gain.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest
from kvmlab.kernel.demo_tree import DEFAULT_TARBALL, make_demo_tree
from kvmlab.outcome import RunStatus
from kvmlab.repro.reproducer import CProgram
from kvmlab.repro.runner import ReproOptions, ReproResult, run_repro
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.fleet import Fleet, Member
from kvmlab.vmm.host import Host
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.spec import Accel, VMSpec
from tests.fixtures_kernel import TEST_CONFIG
from tests.lab.harness import root_image, start_lab, unavailable_reason


def _fleet(hosts: list[Host]) -> Fleet:
    return Fleet([Member(h.label, LibvirtBackend(h, owns_host=True), h.capacity, h.health) for h in hosts])


def _run(fleet: Fleet, spec: VMSpec, prepared: object, runs: int,
         hosts: list[Host]) -> tuple[float, int, str]:
    sent0 = sum(h.storage.bytes_uploaded for h in hosts)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        res: ReproResult = run_repro(spec, prepared, backend=fleet,  # type: ignore[arg-type]
                                     timeouts=Timeouts().scaled(TCG_SCALE),
                                     options=ReproOptions(count=runs, run_time=60), workdir=Path(d),
                                     ready_marker=READY_MARKER)
    wall = time.monotonic() - t0
    sent = sum(h.storage.bytes_uploaded for h in hosts) - sent0
    crashed = sum(o.status is RunStatus.CRASHED for o in res.outcomes)
    titles = sorted({o.title or o.status.value for o in res.outcomes})
    return wall, sent, f"{crashed}/{len(res.outcomes)} crashed: {', '.join(titles)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--capacity", type=int, default=2, help="VMs at once per host")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", Path(__file__).resolve().parent.parent / ".test-cache"))
    demo = make_demo_tree(cache / "kernel" / "linux-demo", tarball=DEFAULT_TARBALL)
    build = KernelBuilder(cache / "kernel" / "work", jobs=os.cpu_count()).build(
        demo.path, demo.head, ConfigRequest.from_fragments(list(TEST_CONFIG)))
    kernel = Path(build.artifacts["bzImage"])
    root = build_initramfs(cache / "initramfs-bench", kernel=kernel)
    spec = VMSpec(kernel=kernel, root=root, cpus=1, memory_mb=512, accel=Accel.TCG, name="bench")
    lab = start_lab(root_image(cache))
    try:
        with tempfile.TemporaryDirectory() as d:
            prepared = CProgram(Path(demo.reproducers["culprit"])).prepare(Path(d))
            one = [Host("qemu:///system", capacity=args.capacity)]
            fleet = _fleet(one)
            try:
                w1, b1, v1 = _run(fleet, spec, prepared, args.runs, one)
            finally:
                fleet.close()
            two = [Host("qemu:///system", capacity=args.capacity), Host(lab.uri, capacity=args.capacity)]
            fleet = _fleet(two)
            try:
                w2, b2, v2 = _run(fleet, spec, prepared, args.runs, two)
                w3, b3, v3 = _run(fleet, spec, prepared, args.runs, two)
                per_host = {h.label: h.storage.bytes_uploaded for h in two}
            finally:
                fleet.close()
    finally:
        lab.stop()
    kb = kernel.stat().st_size + root.path.stat().st_size
    print(f"demo reproducer on the demo head ({demo.head[:12]}), {args.runs} runs, "
          f"capacity {args.capacity} per host, kernel+initramfs {kb / 1e6:.1f} MB")
    print(f"  one host (local)           : {w1:6.1f} s wall, {b1 / 1e6:6.1f} MB uploaded  (baseline; {v1})")
    print(f"  two hosts (local + lab)    : {w2:6.1f} s wall = {w2 / w1:.2f}x, "
          f"{b2 / 1e6:6.1f} MB uploaded ({v2})")
    print(f"  same kernel again, 2 hosts : {w3:6.1f} s wall = {w3 / w1:.2f}x, {b3:d} bytes uploaded ({v3})")
    print("  uploaded per host over both two-host runs: "
          + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in per_host.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
