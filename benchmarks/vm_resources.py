"""What each QEMU of a pool costs the host: CPU and resident memory, sampled
with psutil while the pool boots, idles and runs a busy guest command.

    .venv/bin/python benchmarks/vm_resources.py [--kernel bzImage] [--count 2] [--memory-mb 512]

Per VM and phase it prints the mean and peak CPU (percent of one host core)
and the peak RSS of its QEMU process, against the guest memory it was given
(the baseline: a QEMU whose RSS is far above it is the host's problem, one far
below it has most of the guest's memory untouched). The same figures tell how
many VMs a host can take at once (``vm.count: auto`` sizes from free cores and
memory) and what an idle VM costs while it waits for work.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.config import VMConfig
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.factory import make_backend
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.spec import Accel, VMSpec

#: Seconds between samples.
INTERVAL = 0.5
#: A guest command that keeps one guest CPU busy for a while.
BUSY = "i=0; end=$(( $(date +%s) + {secs} )); while [ $(date +%s) -lt $end ]; do i=$((i+1)); done; echo $i"


@dataclass
class Samples:
    """CPU percent and RSS (bytes) of one QEMU, per phase."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[int]] = field(default_factory=dict)


class Sampler:
    """Samples the given QEMU processes every :data:`INTERVAL` s in a thread,
    filing each sample under the phase current at the time."""

    def __init__(self) -> None:
        self.phase = "boot"
        self.procs: dict[int, psutil.Process] = {}
        self.samples: dict[int, Samples] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, vm: int, pid: int) -> None:
        proc = psutil.Process(pid)
        proc.cpu_percent(None)  # the first call only starts the interval
        self.procs[vm] = proc
        self.samples.setdefault(vm, Samples())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            for vm, proc in list(self.procs.items()):
                try:
                    with proc.oneshot():
                        cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
                except psutil.Error:
                    continue
                s = self.samples[vm]
                s.cpu.setdefault(self.phase, []).append(cpu)
                s.rss.setdefault(self.phase, []).append(rss)


def measure(spec: VMSpec, count: int, busy_s: int, idle_s: float) -> tuple[Sampler, float]:
    sampler = Sampler()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d, Pool(
        spec, count, backend=make_backend(VMConfig(backend="qemu")), timeouts=Timeouts().scaled(TCG_SCALE),
        workdir=Path(d), ready_marker=READY_MARKER,
    ) as pool:
        for i, m in enumerate(pool.machines):
            pid = m.qemu_pid()
            if pid is None:
                raise SystemExit(f"VM {i}: no QEMU process to sample")
            sampler.watch(i, pid)
        sampler.start()
        boots = pool.map(lambda m: m.wait_ready())
        if not all(b.ok for b in boots):
            sampler.stop()
            raise SystemExit(f"boot failed: {[b.reason for b in boots]}")
        sampler.phase = "idle"
        time.sleep(idle_s)
        sampler.phase = "busy"
        pool.map(lambda m: m.run(BUSY.format(secs=busy_s), timeout=busy_s * 4 + 60))
        sampler.stop()
    return sampler, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", type=Path, default=next(iter(sorted(Path("/boot").glob("vmlinuz-*"))), None))
    ap.add_argument("--count", type=int, default=2)
    ap.add_argument("--memory-mb", type=int, default=512)
    ap.add_argument("--busy", type=int, default=10, help="seconds of a busy guest command")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds the booted pool waits")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    if args.kernel is None:
        raise SystemExit("no kernel: pass --kernel bzImage")
    root = build_initramfs(Path(tempfile.gettempdir()) / "kvmlab-bench-initramfs", kernel=args.kernel)
    spec = VMSpec(kernel=args.kernel, root=root, cpus=1, memory_mb=args.memory_mb, accel=Accel.TCG,
                  name="bench")
    sampler, wall = measure(spec, args.count, args.busy, args.idle)
    host_cores = psutil.cpu_count() or 1
    print(f"kernel {args.kernel} (qemu, TCG), {args.count} VMs x 1 CPU x {args.memory_mb} MiB, "
          f"host {host_cores} cores; {wall:.0f} s, samples every {INTERVAL} s")
    header = ("VM", "phase", "n", "CPU mean", "CPU max", "RSS max MiB", "of guest")
    print("{:>3} {:<5} {:>4} {:>9} {:>8} {:>12} {:>9}".format(*header))
    for vm, s in sorted(sampler.samples.items()):
        for phase in ("boot", "idle", "busy"):
            cpu, rss = s.cpu.get(phase, []), s.rss.get(phase, [])
            if not cpu:
                print(f"{vm:>3} {phase:<5} {0:>4}  (no samples)")
                continue
            peak = max(rss) / 2**20
            print(f"{vm:>3} {phase:<5} {len(cpu):>4} {statistics.mean(cpu):>8.0f}% {max(cpu):>7.0f}% "
                  f"{peak:>12.0f} {peak / args.memory_mb:>8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
