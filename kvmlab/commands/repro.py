"""``kvmlab repro``: does this reproducer crash this kernel, how often, and how?"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from kvmlab import oops
from kvmlab.bisect.repository import GitRepository
from kvmlab.commands.kernel import config_request
from kvmlab.commands.live import View, progress_view
from kvmlab.config import Config, cache_dir, load_config
from kvmlab.errors import MissingFileError, UnknownCommitError, UserError
from kvmlab.images.recipe import with_recipe_path
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.outcome import BuildStatus, RunOutcome, RunStatus
from kvmlab.repro import bugdir, syz
from kvmlab.repro.reproducer import CProgram, Reproducer, ShellCommand, SyzProgram
from kvmlab.repro.runner import ReproOptions, run_line, run_repro, summary_lines
from kvmlab.show import repro_report
from kvmlab.show.meta import JobMeta
from kvmlab.vmm.factory import close_backend, make_backend, prepare, resolve_root

log = logging.getLogger(__name__)


def add_vm_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that boot VMs (repro, bisect, demo)."""
    p.add_argument("--conf", type=Path, help="kvmlab YAML config file")
    p.add_argument("--root", help="guest root: initramfs (default) or an image recipe")
    p.add_argument("--count", type=int, help="VMs / runs per test (default: vm.count)")
    p.add_argument("--cpus", type=int, help="vCPUs per VM (default: vm.cpus)")
    p.add_argument("--memory-mb", type=int, help="RAM per VM in MiB (default: vm.memory_mb)")
    p.add_argument("--run-time", type=float, help="seconds a reproducer may run (default: repro.run_time)")
    p.add_argument("--backend", choices=("qemu", "libvirt"), help="default: vm.backend")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="default: vm.accel")


def add_repro_options(p: argparse.ArgumentParser, *, bug_dir: bool = True) -> None:
    p.add_argument("repro", nargs="?", type=Path, help="C reproducer (.c)")
    p.add_argument("--command", help="shell command to run in the guest instead of a program")
    p.add_argument("--syz-prog", type=Path, help="syzkaller program (repro.syz), run by the real "
                                                  "syz-execprog/syz-executor of --syz-dir")
    p.add_argument("--syz-dir", type=Path, help="directory with syz-execprog and syz-executor "
                                                 "(or syzkaller's bin/linux_amd64/; default: syzkaller.dir)")
    p.add_argument("--syz-execprog", type=Path, help="your syz-execprog binary (instead of --syz-dir's)")
    p.add_argument("--syz-executor", type=Path, help="your syz-executor binary (instead of --syz-dir's)")
    p.add_argument("--syz-opt", action="append", default=[], metavar="K=V",
                   help="syz-execprog flag over the program's options line, e.g. procs=6, "
                        "sandbox=none, enable=tun,cgroups")
    if bug_dir:
        p.add_argument("--bug", dest="bug_dir", type=Path, metavar="DIR",
                       help="a syzbot bug directory (title, commit, .config, repro.syz and/or repro.c, "
                            "console.log, cmdline; see README)")


def add_build_options(p: argparse.ArgumentParser) -> None:
    """Kernel build options shared by repro and bisect."""
    p.add_argument("--kernel-config", type=Path, help="a complete .config (e.g. syzbot's) as the base "
                                                       "instead of fragments; --config fragments go on top")
    p.add_argument("--compiler", help="compiler instead of the compiler table's (gcc-12, clang-15: LLVM=1)")


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
    add_repro_options(p)
    add_vm_options(p)
    p.add_argument("--stop-when-decided", action="store_true",
                   help="end all runs once the first (expected) crash decides the verdict")
    p.add_argument("--expect", help="title of the bug looked for (other crashes are marked)")
    p.add_argument("--expect-report", type=Path, help="a console log or report whose crash is looked for")
    p.add_argument("--json", type=Path, help="write the structured result here")
    p.add_argument("--workdir", type=Path, help="where console logs and reports are kept")
    p.set_defaults(func=run)


def syz_binaries(args: argparse.Namespace, cfg: Config) -> tuple[Path, Path] | None:
    """syz-execprog and syz-executor: the explicit paths, else --syz-dir's, else
    the config's syzkaller.dir; None when none is given."""
    syz_dir = args.syz_dir or (Path(cfg.syzkaller.dir) if cfg.syzkaller.dir else None)
    found = syz.find_binaries(syz_dir) if syz_dir is not None else (None, None)
    execprog = args.syz_execprog or found[0]
    executor = args.syz_executor or found[1]
    if execprog is None or executor is None:
        return None
    return execprog, executor


def reproducer_from_args(args: argparse.Namespace, cfg: Config | None = None) -> Reproducer:
    cfg = cfg or config_from_args(args)
    kinds = [k for k in (args.repro, args.command, args.syz_prog) if k]
    if len(kinds) != 1:
        raise UserError("give exactly one reproducer: a .c file, --command, --syz-prog (or --bug DIR)")
    if args.command:
        return ShellCommand(args.command)
    if args.syz_prog:
        bins = syz_binaries(args, cfg)
        if bins is None:
            raise UserError("--syz-prog needs syz-execprog and syz-executor: give --syz-dir DIR "
                            "(or syzkaller.dir in the config, or --syz-execprog and --syz-executor)")
        return SyzProgram(args.syz_prog, bins[0], bins[1], syz.parse_overrides(args.syz_opt))
    path: Path = args.repro
    if path.suffix != ".c":
        raise UserError(f"reproducer {path}: expected a .c file (or --command / --syz-prog)")
    return CProgram(path)


def apply_bug_dir(args: argparse.Namespace, *, commit_dest: str, say: Any = print) -> bugdir.BugDir | None:
    """Fill in what ``--bug DIR`` provides (the command line wins): the commit
    (into ``commit_dest``: ``commit`` for repro, ``bad`` for bisect), the
    kernel config (``--config`` fragments go on top of it), the title as
    ``expect``, the reproducer (repro.syz when syz binaries are known, else
    repro.c) and the kernel command line. The commit must be in ``--tree``."""
    path: Path | None = getattr(args, "bug_dir", None)
    if path is None:
        return None
    bug = bugdir.load(path)
    if args.tree is None:
        where = f" (a clone of {bug.tree})" if bug.tree else ""
        raise UserError(f"--bug {path}: give --tree, a local kernel git tree{where} "
                        f"with commit {bug.commit}")
    try:
        GitRepository(args.tree).resolve(bug.commit)
    except UnknownCommitError:
        fetch = f"; fetch it from {bug.tree}" if bug.tree else ""
        raise UserError(f"--bug {path}: commit {bug.commit} is not in --tree {args.tree}"
                        f"{fetch}") from None
    if getattr(args, commit_dest) is None:
        setattr(args, commit_dest, bug.commit)
    if args.kernel_config is None:
        args.kernel_config = bug.config
    if args.expect is None:
        args.expect = bug.title
    if not (args.repro or args.command or args.syz_prog):
        have_syz = syz_binaries(args, config_from_args(args)) is not None
        if bug.repro_syz is not None and (have_syz or bug.repro_c is None):
            args.syz_prog = bug.repro_syz
        else:
            args.repro = bug.repro_c
        if bug.repro_syz is not None and bug.repro_c is not None:
            chosen = "repro.syz" if args.syz_prog else "repro.c (no syz binaries: --syz-dir)"
            say(f"kvmlab: bug {path}: using {chosen}")
    args.bug_cmdline = bug.cmdline
    return bug


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = load_config(args.conf)
    vm: dict[str, Any] = {k: v for k, v in (("count", args.count), ("backend", args.backend),
                                            ("accel", args.accel), ("cpus", args.cpus),
                                            ("memory_mb", args.memory_mb)) if v is not None}
    extra = tuple(getattr(args, "bug_cmdline", ()) or ())
    if extra:
        vm["cmdline"] = (*cfg.vm.cmdline, *extra)
    rp = {k: v for k, v in (("run_time", args.run_time), ("root", args.root)) if v is not None}
    return with_recipe_path(dataclasses.replace(cfg, vm=dataclasses.replace(cfg.vm, **vm),
                                                repro=dataclasses.replace(cfg.repro, **rp)))


def _expected_title(args: argparse.Namespace) -> str | None:
    if args.expect_report is not None:
        try:
            text = args.expect_report.read_text(errors="replace")
        except OSError as e:
            raise MissingFileError(f"report {args.expect_report}: {e.strerror}") from None
        rep = oops.parse(text)
        if rep is None:
            raise UserError(f"report {args.expect_report}: no crash found in it")
        return rep.title
    title: str | None = args.expect
    return title


def run(args: argparse.Namespace) -> int:
    apply_bug_dir(args, commit_dest="commit")
    with progress_view("kvmlab repro") as view:
        return _run(args, view)


def _run(args: argparse.Namespace, view: View) -> int:
    started = time.time()
    cfg = config_from_args(args)
    repro = reproducer_from_args(args, cfg)
    expect = _expected_title(args)
    workdir = args.workdir or cache_dir() / "runs" / time.strftime("repro-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    prepared = repro.prepare(workdir)  # compile / check before anything builds or boots
    vmlinux = args.vmlinux
    frags: list[str] = []
    built: str | None = None
    kernel_config: Path | None = args.kernel_config if args.kernel is not None else None
    if args.tree is not None:
        if args.kernel is not None or not args.commit:
            raise UserError("give either --kernel, or --tree with --commit")
        request = config_request(args.config, args.kernel_config)
        frags = list(request.fragments)
        view.building(args.commit)
        builder = KernelBuilder(compiler=args.compiler, fragments_dir=cfg.kernel.fragments_path)
        outcome = builder.build(args.tree, args.commit, request, progress=view.build_progress, argv=sys.argv)
        print(f"kvmlab: kernel {outcome.commit[:12]} ({request.describe()}) built with {outcome.compiler}",
              file=sys.stderr)
        if outcome.status is BuildStatus.FAILED:
            print(f"kernel build failed at {outcome.commit[:12]}: {outcome.error}")
            return 1
        kernel, built = Path(outcome.artifacts["bzImage"]), outcome.commit
        vmlinux = vmlinux or Path(outcome.artifacts["vmlinux"])
        kernel_config = Path(outcome.artifacts["config"])
    elif args.kernel is not None:
        kernel = args.kernel
    else:
        raise UserError("give --kernel bzImage, or --tree and --commit (or --tree and --bug DIR)")
    root = resolve_root(cfg.repro.root, kernel)
    prep = prepare(cfg, kernel, root)
    opts = ReproOptions(count=cfg.vm.count, run_time=cfg.repro.run_time,
                        stop_when_decided=args.stop_when_decided, expect=expect)
    print(f"reproducing {prepared.description} on {kernel} in {opts.count} VMs "
          f"({cfg.vm.backend}, {prep.accel.accel.value}); logs in {workdir}", file=sys.stderr)
    JobMeta(kind="repro", tree=str(args.tree.resolve()) if args.tree else None, commit=built, config=frags,
            kernel=str(kernel), reproducer=prepared.description, expect=expect, vms=opts.count,
            accel=prep.accel.accel.value, started=started).write(workdir)

    def on_run(o: RunOutcome, expected: bool | None) -> None:
        note = " (a different bug)" if expected is False else ""
        view.say(run_line(o) + note)

    view.testing(args.commit or "", opts.count)
    backend = make_backend(cfg.vm)
    try:
        result = run_repro(prep.spec, prepared, backend=backend, timeouts=prep.timeouts,
                           options=opts, workdir=workdir, ready_marker=prep.ready_marker, vmlinux=vmlinux,
                           on_run=on_run, on_vm=functools.partial(view.vm, args.commit or ""),
                           kernel_config=kernel_config)
    finally:
        close_backend(backend)
    for line in summary_lines(result):
        view.say(line)
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=1))
    try:
        print(f"kvmlab: report {repro_report(workdir)}", file=sys.stderr, flush=True)
    except Exception as e:  # a by-product: the result is printed and in result.json
        log.warning("report.html not written: %s", e)
    # A reproducer that could not run tested nothing: not a success.
    return 1 if any(o.status is RunStatus.REPRO_FAILED for o in result.outcomes) else 0
