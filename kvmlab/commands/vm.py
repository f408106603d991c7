"""``kvmlab vm run``: boot a kernel in a pool of VMs and run a command in each."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmlab.commands.options import (
    _path,
    add_job_option,
    add_memory_option,
    given,
    make_job,
    memory_mb,
    nested,
    pass_through,
)
from kvmlab.jobs.model import VMRunJob
from kvmlab.jobs.vmrun import run_vm_command
from kvmlab.ui.live import PlainView


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("vm", help="boot kernels in VMs")
    vsub = p.add_subparsers(dest="vm_command", metavar="ACTION", required=True)
    r = vsub.add_parser("run", help="boot KERNEL in N VMs, run COMMAND over SSH in each, stop them")
    r.add_argument("--kernel", type=Path, help="bzImage to boot")
    r.add_argument("--root", default=None, help="guest root: initramfs (default) or an image recipe")
    r.add_argument("--modules", type=Path, help="the kernel's modules dir (default: /lib/modules/<release>)")
    r.add_argument("--count", type=int, help="VMs in the pool (default: vm.count)")
    r.add_argument("--cpus", type=int, help="vCPUs per VM (default: vm.cpus)")
    add_memory_option(r)
    r.add_argument("--backend", choices=("qemu", "libvirt"), help="default: vm.backend")
    r.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="default: vm.accel")
    r.add_argument("--conf", type=Path, help="kvmlab YAML config file")
    r.add_argument("--workdir", type=Path, help="keep console logs here (default: a temp dir)")
    add_job_option(r)
    r.add_argument("command", nargs=argparse.REMAINDER, help="command to run in the guest (after --)")
    r.set_defaults(func=run)
    pass_through(r)


def run(args: argparse.Namespace) -> int:
    words = list(args.command)
    if words and words[0] == "--":
        words = words[1:]
    vms = given(conf=_path(args.conf), root=args.root, count=args.count, backend=args.backend,
                accel=args.accel, cpus=args.cpus, memory_mb=memory_mb(args))
    fields = given(kernel=_path(args.kernel), modules=_path(args.modules), workdir=_path(args.workdir),
                   command=words or None) | nested(vms=vms)
    job = make_job(VMRunJob.KIND, fields, args.job)
    assert isinstance(job, VMRunJob)
    return run_vm_command(job, PlainView()).status
