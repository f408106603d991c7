"""The demo's reproducer, 4 runs on one libvirt host against the same 4 runs
spread over two (this machine plus a lab host reached over SSH), with the
bytes uploaded to each host; then the same command again, as a new process
would run it (new connections; the first command's job volumes removed):
the hosts' caches of uploaded content hold the kernel and initramfs, so it
uploads 0 bytes. (This machine's kvmlab pool is collected first, so the first
command's upload is a cold one: volumes no running job leases are removed.)

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
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest
from kvmlab.kernel.demo_tree import DEFAULT_TARBALL, make_demo_tree
from kvmlab.outcome import RunStatus
from kvmlab.repro.reproducer import CProgram, ShellCommand
from kvmlab.repro.runner import ReproOptions, ReproResult, run_repro
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.fleet import Fleet, Member
from kvmlab.vmm.host import Host
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.spec import Accel, VMSpec
from tests.fixtures_kernel import TEST_CONFIG
from tests.fixtures_vm import _find_cloud_kernel
from tests.lab.harness import root_image, start_lab, unavailable_reason


def _fleet(hosts: list[Host]) -> Fleet:
    return Fleet([Member(h.label, LibvirtBackend(h, owns_host=True), h.capacity, h.health) for h in hosts])


def _command(uris: list[str], capacity: int, spec: VMSpec, prepared: object,
             runs: int) -> tuple[float, dict[str, int], str]:
    """One command's worth: new Host objects (as a new kvmlab process has),
    the runs, then everything of the job removed from the hosts (the
    content cache stays). Wall time, bytes uploaded per host, verdicts."""
    hosts = [Host(u, capacity=capacity) for u in uris]
    fleet = _fleet(hosts)
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as d:
            res: ReproResult = run_repro(spec, prepared, backend=fleet,  # type: ignore[arg-type]
                                         timeouts=Timeouts().scaled(TCG_SCALE),
                                         options=ReproOptions(count=runs, run_time=60), workdir=Path(d),
                                         ready_marker=READY_MARKER)
    finally:
        sent = {h.label: h.storage.bytes_uploaded for h in hosts}
        fleet.close()
    wall = time.monotonic() - t0
    crashed = sum(o.status is RunStatus.CRASHED for o in res.outcomes)
    titles = sorted({o.title or o.status.value for o in res.outcomes})
    return wall, sent, f"{crashed}/{len(res.outcomes)} crashed: {', '.join(titles)}"


def _sent(per_host: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:d} B" for k, v in per_host.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--capacity", type=int, default=2, help="VMs at once per host")
    ap.add_argument("--cloud", action="store_true",
                    help="Debian's cloud kernel and a sysrq crash instead of the demo head and its "
                    "reproducer (no kernel build)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    cache = Path(os.environ.get("KVMLAB_TEST_CACHE", Path(__file__).resolve().parent.parent / ".test-cache"))
    work = Path(tempfile.mkdtemp(prefix="kvmlab-bench-"))
    if args.cloud:
        cloud = _find_cloud_kernel()
        if cloud is None:
            print("cannot run: no Debian cloud kernel (bash scripts/setup.sh installs it)")
            return 1
        kernel, what = cloud.bzimage, f"Debian's cloud kernel {cloud.release}, a sysrq crash"
        root = build_initramfs(cache / "initramfs-cloud", kernel=kernel, modules_dir=cloud.modules)
        prepared: object = ShellCommand("sleep 2; echo c > /proc/sysrq-trigger").prepare(work)
    else:
        demo = make_demo_tree(cache / "kernel" / "linux-demo", tarball=DEFAULT_TARBALL)
        build = KernelBuilder(cache / "kernel" / "work", jobs=os.cpu_count()).build(
            demo.path, demo.head, ConfigRequest.from_fragments(list(TEST_CONFIG)))
        kernel = Path(build.artifacts["bzImage"])
        what = f"demo reproducer on the demo head ({demo.head[:12]})"
        root = build_initramfs(cache / "initramfs-bench", kernel=kernel)
        prepared = CProgram(Path(demo.reproducers["culprit"])).prepare(work)
    spec = VMSpec(kernel=kernel, root=root, cpus=1, memory_mb=512, accel=Accel.TCG, name="bench")
    lab = start_lab(root_image(cache))
    local = "qemu:///system"
    try:
        # The lab starts empty (its root is a RAM overlay); this machine's
        # pool may keep the kernel from an earlier run: emptied first, so the
        # first command's bytes are a cold upload.
        h = Host(local)
        try:
            h.storage.cache(gc=True, max_bytes=0, max_age=0)
        finally:
            h.close()
        w1, b1, v1 = _command([local], args.capacity, spec, prepared, args.runs)
        w2, b2, v2 = _command([local, lab.uri], args.capacity, spec, prepared, args.runs)
        w3, b3, v3 = _command([local, lab.uri], args.capacity, spec, prepared, args.runs)
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)
    kb = kernel.stat().st_size + root.path.stat().st_size
    print(f"{what}, {args.runs} runs, "
          f"capacity {args.capacity} per host, kernel+initramfs {kb:d} B ({kb / 1e6:.1f} MB)")
    print(f"  command 1, one host (local)       : {w1:6.1f} s wall; uploaded {_sent(b1)} (baseline; {v1})")
    print(f"  command 2, two hosts (local + lab): {w2:6.1f} s wall = {w2 / w1:.2f}x; "
          f"uploaded {_sent(b2)} ({v2})")
    print(f"  command 3, the same again         : {w3:6.1f} s wall = {w3 / w1:.2f}x; "
          f"uploaded {_sent(b3)} ({v3})")
    print(f"  bytes uploaded by the two two-host commands in a row: {sum(b2.values())}, "
          f"then {sum(b3.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
