"""``kvmlab vm run``: boot a kernel in a pool of VMs and run a command in each."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kvmlab.config import load_config
from kvmlab.errors import UserError
from kvmlab.images.recipe import with_recipe_path
from kvmlab.vmm.factory import close_backend, make_backend, prepare, resolve_root
from kvmlab.vmm.fleet import Fleet
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.pool import Pool


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("vm", help="boot kernels in VMs")
    vsub = p.add_subparsers(dest="vm_command", metavar="ACTION", required=True)
    r = vsub.add_parser("run", help="boot KERNEL in N VMs, run COMMAND over SSH in each, stop them")
    r.add_argument("--kernel", type=Path, required=True, help="bzImage to boot")
    r.add_argument("--root", default=None, help="guest root: initramfs (default) or an image recipe")
    r.add_argument("--modules", type=Path, help="the kernel's modules dir (default: /lib/modules/<release>)")
    r.add_argument("--count", type=int, help="VMs in the pool (default: vm.count)")
    r.add_argument("--backend", choices=("qemu", "libvirt"), help="default: vm.backend")
    r.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="default: vm.accel")
    r.add_argument("--conf", type=Path, help="kvmlab YAML config file")
    r.add_argument("--workdir", type=Path, help="keep console logs here (default: a temp dir)")
    r.add_argument("command", nargs=argparse.REMAINDER, help="command to run in the guest (after --)")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.conf)
    vm = cfg.vm
    overrides = {k: v for k, v in (("count", args.count), ("backend", args.backend),
                                   ("accel", args.accel)) if v is not None}
    cfg = dataclasses.replace(cfg, vm=dataclasses.replace(vm, **overrides))
    if args.root is not None:
        cfg = dataclasses.replace(cfg, repro=dataclasses.replace(cfg.repro, root=args.root))
    cfg = with_recipe_path(cfg)
    command = " ".join(a for a in args.command if a != "--") or "uname -a"
    root = resolve_root(cfg.repro.root, args.kernel, modules_dir=args.modules)
    prep = prepare(cfg, args.kernel, root)
    backend = make_backend(cfg.vm)
    if isinstance(backend, Fleet) and cfg.vm.count > backend.capacity():
        close_backend(backend)
        raise UserError(f"vm.count: {cfg.vm.count} VMs at once, but vm.hosts can run {backend.capacity()}")
    print(f"booting {cfg.vm.count} VM(s) with {args.kernel} ({cfg.vm.backend}, {prep.accel.accel.value})",
          file=sys.stderr)

    def one(m: Machine) -> int:
        boot = m.wait_ready()
        if not boot.ok:
            print(f"vm {m.index}: boot failed: {boot.reason} (console: {m.console_log})")
            return 1
        print(f"vm {m.index}: ready for SSH in {boot.seconds:.1f}s", file=sys.stderr)
        res = m.run(command)
        for line in res.output.splitlines():
            print(f"vm {m.index}: {line}")
        if res.timed_out:
            print(f"vm {m.index}: command timed out")
            return 1
        return 0 if res.exit_status == 0 else 1

    try:
        with Pool(prep.spec, cfg.vm.count, backend=backend, timeouts=prep.timeouts,
                  workdir=args.workdir, ready_marker=prep.ready_marker) as pool:
            codes = pool.map(one)
    finally:
        close_backend(backend)
    return max(codes)
