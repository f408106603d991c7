"""Boot-to-SSH-ready time under TCG, beside the kernel's own time to reach
userspace, and the wall time of a pool of 4 against a pool of 1.

    .venv/bin/python benchmarks/vm_boot.py [--kernel bzImage] [--backend qemu|libvirt]

The kernel's own time is the printk stamp of ``Run /init`` on the console (guest
seconds since the kernel started); boot-to-SSH is host wall time from starting
the VM until SSH answers. Target: SSH-ready within 1.5x the kernel's own time
to userspace (syzkaller sleeps 5 s, then polls SSH every 5 s).
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.config import VMConfig
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.factory import make_backend
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.spec import Accel, VMSpec

RUN_INIT = re.compile(r"\[\s*(\d+\.\d+)\]\s+Run /init as init process")


def _pool(spec: VMSpec, n: int, backend: str) -> tuple[float, list[float], list[float]]:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as d, Pool(
        spec, n, backend=make_backend(VMConfig(backend=backend)), timeouts=Timeouts().scaled(TCG_SCALE),
        workdir=Path(d), ready_marker=READY_MARKER,
    ) as pool:
        boots = pool.map(lambda m: m.wait_ready())
        if not all(b.ok for b in boots):
            raise SystemExit(f"boot failed: {[b.reason for b in boots]}")
        to_init = []
        for m in pool.machines:
            match = RUN_INIT.search(m.watcher.text())
            to_init.append(float(match.group(1)) if match else float("nan"))
        wall = time.monotonic() - t0
    return wall, [b.seconds for b in boots], to_init


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", type=Path, default=next(iter(sorted(Path("/boot").glob("vmlinuz-*"))), None))
    ap.add_argument("--backend", default="qemu", choices=("qemu", "libvirt"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    if args.kernel is None:
        raise SystemExit("no kernel: pass --kernel bzImage")
    root = build_initramfs(Path(tempfile.gettempdir()) / "kvmlab-bench-initramfs", kernel=args.kernel)
    spec = VMSpec(kernel=args.kernel, root=root, cpus=1, memory_mb=512, accel=Accel.TCG, name="bench")
    ssh, init = [], []
    for _ in range(args.repeat):
        _, s, i = _pool(spec, 1, args.backend)
        ssh += s
        init += i
    wall1 = statistics.median(ssh)
    k_init = statistics.median(init)
    print(f"kernel {args.kernel} ({args.backend}, TCG), {args.repeat} boots")
    print(f"  kernel's own time to userspace (Run /init): {k_init:6.2f} s  (baseline)")
    print(f"  boot to SSH-ready (host wall time):          {wall1:6.2f} s  = {wall1 / k_init:.2f}x baseline "
          f"(target <= 1.5x)")
    wall4, s4, _ = _pool(spec, 4, args.backend)
    wall1p, _, _ = _pool(spec, 1, args.backend)
    print(f"  pool of 1: {wall1p:6.2f} s wall;  pool of 4: {wall4:6.2f} s wall = {wall4 / wall1p:.2f}x "
          f"(SSH-ready per VM: {', '.join(f'{x:.1f}' for x in s4)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
