"""Time from "guest ready" to "reproducer files in place" for syzkaller's
binaries (syz-execprog ~67 MB, syz-executor ~4 MB): kvmlab's way (the files
ride in the initramfs as an appended cpio: the guest only links them) against
the baseline measured in the same run (SFTP over the guest's SSH, what kvmlab
did before, and still does for disk-image roots).

    .venv/bin/python benchmarks/syz_files.py --kernel bzImage [--syz-dir ../shared/syzkaller]

One TCG VM per way, one after the other. Figures: seconds to boot, seconds
to get the files in place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.initramfs import EXTRA_DIR, READY_MARKER, build_initramfs, with_files
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.spec import Accel, VMSpec


def _one(spec: VMSpec, step: object) -> tuple[float, float]:
    times: dict[str, float] = {}

    def run(m: Machine) -> None:
        t0 = time.monotonic()
        assert m.wait_ready().ok, "guest did not boot"
        times["boot"] = time.monotonic() - t0
        t1 = time.monotonic()
        step(m)  # type: ignore[operator]
        times["files"] = time.monotonic() - t1

    with tempfile.TemporaryDirectory() as d, Pool(spec, 1, backend=QemuBackend(),
                                                  timeouts=Timeouts().scaled(TCG_SCALE), workdir=Path(d),
                                                  ready_marker=READY_MARKER) as pool:
        pool.map(run)
    return times["boot"], times["files"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", type=Path, required=True, help="a bzImage with virtio built in")
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "syzkaller"
    ap.add_argument("--syz-dir", type=Path, default=shared,
                    help="syz-execprog and syz-executor (default: ../shared/syzkaller)")
    args = ap.parse_args()
    files = [(args.syz_dir / n, n, 0o755) for n in ("syz-execprog", "syz-executor")]
    size = sum(f.stat().st_size for f, _n, _m in files) / 1024**2
    root = build_initramfs(Path(tempfile.gettempdir()) / "kvmlab-bench-initramfs", kernel=args.kernel)
    spec = VMSpec(kernel=args.kernel, root=root, cpus=1, memory_mb=1024, accel=Accel.TCG, name="bench-files")

    def sftp(m: Machine) -> None:
        m.run("mkdir -p /tmp/r")
        for host, name, mode in files:
            m.copy_in(host, f"/tmp/r/{name}", mode=mode)

    def linked(m: Machine) -> None:
        links = " && ".join(f"ln -sf {EXTRA_DIR}/{n} /tmp/r/{n}" for _h, n, _m in files)
        assert m.run(f"mkdir -p /tmp/r && {links} && /tmp/r/syz-executor; true").exit_status == 0

    t0 = time.monotonic()
    spec_in = VMSpec(**{**spec.__dict__, "root": with_files(root, files)})
    build = time.monotonic() - t0
    boot_b, files_b = _one(spec, sftp)
    boot_i, files_i = _one(spec_in, linked)
    print(f"{size:.0f} MiB of syzkaller binaries into a TCG guest")
    print(f"baseline  SFTP:      boot {boot_b:5.1f} s, files {files_b:5.1f} s")
    print(f"kvmlab    initramfs: boot {boot_i:5.1f} s, files {files_i:5.1f} s "
          f"(+{build:.1f} s on the host to append the cpio, once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
