"""Guest disk image build and boot times, in one run.

1. A cold build of a recipe (debootstrap and all) into a fresh cache, then the
   same build again, which must be a cache hit (baseline: the cold build).
2. Boot-to-SSH-ready under TCG of the disk image (through a qcow2 overlay) and
   of the VM manager's initramfs (baseline), with the same kernel: the Debian
   cloud kernel, which for the disk image gets kvmlab's virtio-module initrd.

    .venv/bin/python benchmarks/image_build.py [--recipe bookworm] [--boots 1] [--no-boot]

Needs root (debootstrap), the host's Debian mirror and qemu-system-x86_64.
The fresh cache is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kvmlab.errors import KvmlabError
from kvmlab.images import build_cached, load_recipe
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.disk_initrd import build_modules_initrd
from kvmlab.vmm.root import GuestRoot


def boot_seconds(kernel: Path, root: GuestRoot, extra_args: tuple[str, ...], workdir: Path) -> float:
    """Seconds from VM start until SSH answers (one VM, TCG)."""
    from kvmlab.vmm.pool import Pool
    from kvmlab.vmm.qemu_backend import QemuBackend
    from kvmlab.vmm.spec import Accel, VMSpec

    spec = VMSpec(kernel=kernel, root=root, accel=Accel.TCG, memory_mb=1024, extra_args=extra_args)
    with Pool(spec, 1, backend=QemuBackend(), timeouts=Timeouts().scaled(TCG_SCALE), workdir=workdir) as pool:
        m = pool.machines[0]
        boot = m.wait_ready()
        if not boot.ok:
            raise SystemExit(f"boot failed: {boot.reason}")
        r = m.run("true", timeout=60)
        if not r.ok:
            raise SystemExit(f"ssh command failed: {r.output}")
        return boot.seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="bookworm")
    ap.add_argument("--boots", type=int, default=1, help="boots per root kind (median is shown)")
    ap.add_argument("--no-boot", action="store_true", help="only time the builds")
    ap.add_argument("--keep", action="store_true", help="keep the fresh cache and print its path")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    # paramiko logs every refused connection while a guest is still booting.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

    work = Path(tempfile.mkdtemp(prefix="kvmlab-bench-img-"))
    try:
        recipe = load_recipe(args.recipe)
        t = time.monotonic()
        cold = build_cached(recipe, work / "cache")
        cold_s = time.monotonic() - t
        t = time.monotonic()
        hit = build_cached(recipe, work / "cache")
        hit_s = time.monotonic() - t
        m = cold.entry.manifest
        print(
            f"recipe {recipe.name} ({m.recipe_hash[:12]}): {len(m.packages)} packages, "
            f"qcow2 {m.qcow2_bytes / 2**20:.0f} MiB, rootfs {m.rootfs_bytes / 2**20:.0f} MiB"
        )
        print(f"{'build':<28}{'seconds':>10}")
        print(f"{'cold (baseline)':<28}{cold_s:>10.1f}")
        for phase, secs in m.phases.items():
            print(f"{'  ' + phase:<28}{secs:>10.1f}")
        label = "cached" if hit.cached else "cached (MISS!)"
        print(f"{label:<28}{hit_s:>10.3f}   ({hit_s * 1000:.1f} ms against {cold_s:.0f} s cold)")
        if not hit.cached:
            print("FAIL: the second build was not a cache hit")
            return 1

        if args.no_boot:
            return 0
        try:
            from kvmlab.vmm.initramfs import build_initramfs
        except ImportError as e:
            print(f"boot: skipped, VM manager not available ({e})")
            return 0
        kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))
        if not kernels:
            print("boot: skipped, no Debian cloud kernel in /boot")
            return 0
        kernel = kernels[-1]
        release = kernel.name.removeprefix("vmlinuz-")
        initrd = build_modules_initrd(release, work / "virtio-initrd.cpio")
        initramfs_root = build_initramfs(work / "initramfs", kernel=kernel)
        disk: list[float] = []
        ram: list[float] = []
        for i in range(args.boots):
            ram.append(boot_seconds(kernel, initramfs_root, (), work / f"boot-ram-{i}"))
            disk.append(
                boot_seconds(kernel, cold.entry.root(), ("-initrd", str(initrd)), work / f"boot-disk-{i}")
            )
        r_med, d_med = statistics.median(ram), statistics.median(disk)
        print(f"\nboot to SSH ready, TCG, {kernel.name}, {args.boots} boot(s) each, median")
        print(f"{'initramfs (baseline)':<28}{r_med:>10.1f}")
        print(f"{'disk image via overlay':<28}{d_med:>10.1f}   ({d_med / r_med:.1f}x the initramfs)")
        return 0
    except KvmlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
