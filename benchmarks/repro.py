"""Wall time of a 4-VM repro on a crashing kernel with and without
--stop-when-decided, and the host CPU kvmlab itself (not qemu) spends per VM
while watching consoles.

    .venv/bin/python benchmarks/repro.py --kernel BAD_bzImage --repro repro.c [--idle-kernel bzImage]

Baseline for the first figure: the same repro without --stop-when-decided, in
the same run. The CPU figure runs a 30 s ``sleep`` in every VM (consoles
watched, nothing crashing) and divides kvmlab's own CPU time (this process's
user+system, children excluded) by wall time and VM count. Target: < 2% of a
core per VM.
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

from kvmlab.repro.reproducer import CProgram, ShellCommand
from kvmlab.repro.runner import ReproOptions, run_repro
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.spec import Accel, VMSpec


def _spec(kernel: Path) -> VMSpec:
    root = build_initramfs(Path(tempfile.gettempdir()) / "kvmlab-bench-initramfs", kernel=kernel)
    return VMSpec(kernel=kernel, root=root, cpus=1, memory_mb=512, accel=Accel.TCG, name="bench")


def _run(spec: VMSpec, prepared: object, count: int, stop: bool, run_time: float) -> tuple[float, float, str]:
    t0 = time.monotonic()
    c0 = os.times()
    with tempfile.TemporaryDirectory() as d:
        res = run_repro(spec, prepared, backend=QemuBackend(), timeouts=Timeouts().scaled(TCG_SCALE),  # type: ignore[arg-type]
                        options=ReproOptions(count=count, run_time=run_time, stop_when_decided=stop),
                        workdir=Path(d), ready_marker=READY_MARKER)
    c1 = os.times()
    wall = time.monotonic() - t0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    verdicts = ", ".join(o.status.value for o in res.outcomes) + (f" (+{res.cancelled} cancelled)"
                                                                  if res.cancelled else "")
    return wall, cpu, verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", type=Path, required=True, help="a kernel the reproducer crashes")
    ap.add_argument("--repro", type=Path, required=True, help="C reproducer")
    ap.add_argument("--idle-kernel", type=Path, help="kernel for the CPU figure (default: --kernel)")
    ap.add_argument("--count", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as d:
        prepared = CProgram(args.repro).prepare(Path(d))
        spec = _spec(args.kernel)
        base_wall, _, v0 = _run(spec, prepared, args.count, False, 60.0)
        stop_wall, _, v1 = _run(spec, prepared, args.count, True, 60.0)
    print(f"{args.count}-VM repro on {args.kernel}")
    print(f"  without --stop-when-decided: {base_wall:6.1f} s wall  (baseline; {v0})")
    print(f"  with    --stop-when-decided: {stop_wall:6.1f} s wall  = {stop_wall / base_wall:.2f}x ({v1})")
    idle = _spec(args.idle_kernel or args.kernel)
    wall, cpu, v2 = _run(idle, ShellCommand("sleep 30").prepare(Path(tempfile.gettempdir())), args.count,
                         False, 40.0)
    per_vm = 100 * cpu / wall / args.count
    print(f"  kvmlab's own CPU while {args.count} VMs run `sleep 30`: {cpu:.2f} s over {wall:.1f} s = "
          f"{per_vm:.2f}% of a core per VM (target < 2%; {v2})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
