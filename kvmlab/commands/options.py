"""Options several commands share, and their translation into a job's fields.

Each ``*_fields`` function turns the options the user gave (only those) into
the nested mapping of :mod:`kvmlab.jobs.model`; :func:`make_job` builds the
typed job from it, on top of a ``--job`` file when one is given (the command
line wins). Nothing else in kvmlab sees an argparse namespace.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from kvmlab import exitcodes
from kvmlab.errors import UserError
from kvmlab.jobs.model import Job, job_from_mapping, load_job
from kvmlab.jobs.validate import MIN_MEMORY_MB


def add_job_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", type=Path, metavar="FILE",
                   help="a job file (YAML or JSON: kind and the job's fields, see kvmlab/jobs/model.py); "
                        "options given here win over it")


def add_vm_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that boot VMs (repro, bisect, demo)."""
    p.add_argument("--conf", type=Path, help="kvmlab YAML config file")
    p.add_argument("--root", help="guest root: initramfs (default) or an image recipe")
    p.add_argument("--count", type=int, help="VMs / runs per test (default: vm.count)")
    p.add_argument("--cpus", type=int, help="vCPUs per VM (default: vm.cpus)")
    add_memory_option(p)
    p.add_argument("--run-time", type=float, help="seconds a reproducer may run (default: repro.run_time)")
    p.add_argument("--backend", choices=("qemu", "libvirt"), help="default: vm.backend")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="default: vm.accel")


def pass_through(p: argparse.ArgumentParser) -> None:
    """Mark ``p``'s command as one that exits with a guest command's status:
    kvmlab's own outcomes (bad input, ours) then take the
    reserved statuses of :mod:`kvmlab.exitcodes`, usage errors too."""
    p.set_defaults(passthrough=True, bad_input_status=exitcodes.PASS_BAD_INPUT)
    vars(p)["bad_input_status"] = exitcodes.PASS_BAD_INPUT


def add_memory_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--memory 2G`` and ``--memory-mb 2048``: one option, both spellings, on
    every command that boots."""
    p.add_argument("--memory", "--memory-mb", dest="memory", metavar="SIZE",
                   help="RAM per VM: 2G, 512M, or a number of MiB (default: vm.memory_mb)")


def parse_memory(text: str) -> int:
    """``2G``, ``512M``, ``512`` (MiB) -> MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise UserError(f"--memory {text!r}: expected a size like 2G, 512M or a number of MiB")
    n, unit = int(m.group(1)), m.group(2).upper()
    mib = {"": n, "M": n, "G": n * 1024, "K": n // 1024}[unit]
    if mib < MIN_MEMORY_MB:
        raise UserError(f"--memory {text!r}: at least {MIN_MEMORY_MB} MiB")
    return mib


def memory_mb(args: argparse.Namespace) -> int | None:
    """The ``--memory`` given, in MiB."""
    text = getattr(args, "memory", None)
    return parse_memory(text) if text is not None else None


def add_repro_options(p: argparse.ArgumentParser, *, bug_dir: bool = True) -> None:
    p.add_argument("repro", nargs="?", type=Path, help="C reproducer (.c)")
    p.add_argument("--command", help="shell command to run in the guest instead of a program")
    p.add_argument("--syz-prog", type=Path, help="syzkaller program (repro.syz), run by the real "
                                                  "syz-execprog/syz-executor of --syz-dir")
    p.add_argument("--syz-dir", type=Path, help="directory with syz-execprog and syz-executor "
                                                 "(or syzkaller's bin/linux_amd64/; default: syzkaller.dir)")
    p.add_argument("--syz-execprog", type=Path, help="your syz-execprog binary (instead of --syz-dir's)")
    p.add_argument("--syz-executor", type=Path, help="your syz-executor binary (instead of --syz-dir's)")
    p.add_argument("--syz-opt", action="append", default=None, metavar="K=V",
                   help="syz-execprog flag over the program's options line, e.g. procs=6, "
                        "sandbox=none, enable=tun,cgroups")
    if bug_dir:
        p.add_argument("--bug", dest="bug_dir", type=Path, metavar="DIR",
                       help="a syzbot bug directory (title, commit, .config, repro.syz and/or repro.c, "
                            "console.log, cmdline, compiler; see README)")
        add_syzbot_option(p)


def add_syzbot_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--syzbot", metavar="BUG", help="a syzbot bug: its dashboard URL, syzbot+ID@ address or "
                   "id; downloaded once into a bug directory in the cache (then as --bug DIR)")


def add_patch_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--patch", action="append", default=None, type=Path, metavar="FILE",
                   help="apply this patch (git-format or plain diff; repeatable, in order) on top of the "
                        "commit in kvmlab's own worktree; repro: test it like syzbot's #syz test")


def add_build_options(p: argparse.ArgumentParser) -> None:
    """Kernel build options shared by repro and bisect."""
    p.add_argument("--kernel-config", type=Path, help="a complete .config (e.g. syzbot's) as the base "
                                                       "instead of fragments; --config fragments go on top "
                        "(repro --kernel: the booted kernel's .config, checked for a syz program's needs)")
    p.add_argument("--compiler", help="compiler instead of the compiler table's (gcc-12, clang-15: LLVM=1)")
    p.add_argument("--no-minimize", dest="minimize", action="store_false", default=None,
                   help="build a full --kernel-config (or a bug's .config) as given: by default the "
                        "sanitizers and debug checks the target crash cannot need, and DWARF, are dropped "
                        "(kernel_configs/minimize.yaml)")
    p.add_argument("--minimize-builds", type=int, metavar="N", default=None,
                   help="bisect: then find the least of the full config that still crashes, in at most N "
                        "candidate kernels built and run at the bad commit (default 6; 0: the rules only); "
                        "repro reuses that answer for the same bug and commit")


def given(**fields: Any) -> dict[str, Any]:
    """The fields that have a value (an option not given is left to the job)."""
    return {k: v for k, v in fields.items() if v is not None and v != () and v != []}


def fragments(text: str | None) -> tuple[str, ...] | None:
    """``--config a,b`` -> ``("a", "b")``."""
    if text is None:
        return None
    return tuple(f.strip() for f in text.split(",") if f.strip())


def _path(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def build_fields(args: argparse.Namespace) -> dict[str, Any]:
    frags = fragments(getattr(args, "config", None))
    patches = [str(p) for p in getattr(args, "patch", None) or []]
    return given(config=list(frags) if frags is not None else None,
                 kernel_config=_path(getattr(args, "kernel_config", None)),
                 compiler=getattr(args, "compiler", None), patches=patches or None,
                 minimize=getattr(args, "minimize", None),
                 minimize_builds=getattr(args, "minimize_builds", None))


def repro_fields(args: argparse.Namespace) -> dict[str, Any]:
    return given(c=_path(args.repro), command=args.command, syz_prog=_path(args.syz_prog),
                 syz_dir=_path(args.syz_dir), syz_execprog=_path(args.syz_execprog),
                 syz_executor=_path(args.syz_executor), syz_opts=list(args.syz_opt or []) or None)


def vm_fields(args: argparse.Namespace) -> dict[str, Any]:
    return given(conf=_path(args.conf), root=args.root, count=args.count, cpus=args.cpus,
                 memory_mb=memory_mb(args), run_time=args.run_time, backend=args.backend, accel=args.accel)


def nested(**parts: dict[str, Any]) -> dict[str, Any]:
    """Parts of a job mapping, the empty ones left out."""
    return {k: v for k, v in parts.items() if v}


def make_job(kind: str, fields: dict[str, Any], job_file: Path | None) -> Job:
    """The typed job of ``kind`` from the command line's ``fields`` (relative
    paths: to the working directory), on top of ``job_file`` when given."""
    if job_file is not None:
        return load_job(job_file, kind=kind, over=fields)
    return job_from_mapping(fields, where="the command line", base=Path.cwd(), kind=kind)
