"""``kvmlab repro``: does this reproducer crash this kernel, how often, and how?"""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmlab import exitcodes
from kvmlab.commands.options import (
    _path,
    add_build_options,
    add_job_option,
    add_patch_option,
    add_repro_options,
    add_vm_options,
    build_fields,
    given,
    make_job,
    nested,
    repro_fields,
    vm_fields,
)
from kvmlab.jobs.model import ReproJob
from kvmlab.jobs.reproduction import ReproRun, run_reproduction
from kvmlab.outcome import RunStatus
from kvmlab.repro.patchtest import PatchStatus
from kvmlab.ui.live import progress_view


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("repro", help="run a reproducer on a pool of VMs")
    src = p.add_argument_group("kernel (a bzImage, or a tree and commit to build)")
    src.add_argument("--kernel", type=Path, help="bzImage to boot")
    src.add_argument("--vmlinux", type=Path, help="vmlinux for symbolized reports")
    src.add_argument("--tree", type=Path, help="kernel git tree to build from")
    src.add_argument("--commit", help="revision to build (with --tree)")
    src.add_argument("--config", help="config fragments for the build (default: base; with "
                                      "--kernel-config: none)")
    add_build_options(p)
    add_patch_option(p)
    add_repro_options(p)
    add_vm_options(p)
    p.add_argument("--stop-when-decided", action="store_true", default=None,
                   help="end all runs once the first (expected) crash decides the verdict")
    p.add_argument("--expect", help="title of the bug looked for (other crashes are marked)")
    p.add_argument("--expect-report", type=Path, help="a console log or report whose crash is looked for")
    p.add_argument("--json", type=Path, help="write the structured result here")
    p.add_argument("--workdir", type=Path, help="where console logs and reports are kept")
    add_job_option(p)
    p.set_defaults(func=run)


def job_from_args(args: argparse.Namespace) -> ReproJob:
    fields = given(kernel=_path(args.kernel), vmlinux=_path(args.vmlinux), tree=_path(args.tree),
                   commit=args.commit, bug=_path(args.bug_dir), syzbot=args.syzbot, expect=args.expect,
                   expect_report=_path(args.expect_report), stop_when_decided=args.stop_when_decided,
                   workdir=_path(args.workdir), json=_path(args.json))
    fields |= nested(build=build_fields(args), reproducer=repro_fields(args), vms=vm_fields(args))
    job = make_job(ReproJob.KIND, fields, args.job)
    assert isinstance(job, ReproJob)
    return job


def run(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    with progress_view("kvmlab repro") as view:
        done = run_reproduction(job, view)
    return exit_status(done)


def exit_status(done: ReproRun) -> int:
    """0 when runs tested the kernel (crashed or not: the output says); 1 when
    none did because of the kernel or the reproducer (it did not build or
    boot, the reproducer could not run or stopped the guest), or a patch test
    found the crash still there; 3 when every run failed on kvmlab's or the
    host's side."""
    if done.patch is not None:
        return exitcodes.OK if done.patch.status is PatchStatus.GONE else exitcodes.VERDICT
    if done.build_failed or done.result is None:
        return exitcodes.VERDICT
    # A reproducer that could not run tested nothing: not a success.
    if done.repro_failed():
        return exitcodes.VERDICT
    outs = done.result.outcomes
    if done.result.tested() or not outs:
        return exitcodes.OK
    if all(o.status is RunStatus.INFRA for o in outs):
        return exitcodes.OURS
    return exitcodes.VERDICT
