"""``kvmlab boot``: boot one commit (or bzImage) and work in it by hand.

The serial console comes to the foreground (Ctrl-A x quits, Ctrl-A c is the
QEMU monitor, Ctrl-A h help); ``-- CMD`` runs a command instead and exits
with its status. See :mod:`kvmlab.jobs.boot` for the job and
:mod:`kvmlab.session.foreground` for the exit statuses.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from kvmlab import exitcodes
from kvmlab.commands.options import (
    _path,
    add_job_option,
    add_memory_option,
    add_patch_option,
    add_syzbot_option,
    fragments,
    given,
    make_job,
    memory_mb,
    nested,
    pass_through,
)
from kvmlab.errors import UserError
from kvmlab.jobs.boot import run_boot
from kvmlab.jobs.model import BootJob
from kvmlab.repro.reproducer import GUEST_DIR
from kvmlab.session.foreground import EXIT_BOOT_FAILED, EXIT_CRASH, EXIT_GUEST_STOPPED, EXIT_TIMEOUT
from kvmlab.ui.ticker import BuildTicker


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "boot", help="boot a commit or bzImage and work in it (console, ssh, gdb)",
        description="Boot one VM and put its serial console in the foreground (Ctrl-A x quits and "
        "stops the VM, Ctrl-A c toggles the QEMU monitor, Ctrl-A h help), or with -- CMD run CMD "
        "in it and exit with its status. Exit statuses: the command's own (0-255; one of kvmlab's "
        f"below, or 129, 130, 143, is {exitcodes.PASS_OWN_STATUS_RESERVED} with the real one on stderr); "
        f"kvmlab's: {EXIT_GUEST_STOPPED} the guest shut itself down before CMD ended; "
        f"{exitcodes.PASS_BAD_INPUT} bad input; {exitcodes.PASS_OURS} kvmlab's or the host's failure; "
        f"{EXIT_BOOT_FAILED} boot failed; {EXIT_CRASH} kernel crash (title on stderr); "
        f"{EXIT_TIMEOUT} --timeout; 130/143/129 interrupted (Ctrl-C, SIGTERM, SIGHUP).",
    )
    src = p.add_argument_group("kernel (a tree and commit to build, or a bzImage)")
    src.add_argument("--tree", nargs="+", metavar=("TREE", "COMMIT"),
                     help="kernel git tree (only read: your checkout is not touched) and the revision to "
                     "build")
    src.add_argument("--commit", help="the revision, when not given after --tree")
    src.add_argument("--kernel", type=Path, help="bzImage to boot")
    src.add_argument("--vmlinux", type=Path, help="its vmlinux (symbolized reports, gdb)")
    src.add_argument("--config", help="config fragments for the build (default: base; with a bug: none on "
                     "top of its config)")
    src.add_argument("--bug", dest="bug_dir", type=Path, metavar="DIR",
                     help="a syzbot bug directory: boot its commit (with --tree) with its config, compiler "
                     f"and cmdline, its reproducer staged in {GUEST_DIR}")
    add_syzbot_option(src)
    add_patch_option(src)
    vm = p.add_argument_group("the VM")
    vm.add_argument("--root", help="guest root: initramfs (default) or an image recipe")
    vm.add_argument("--modules", type=Path, help="the kernel's modules dir, for an initramfs root "
                    "(default: /lib/modules/<release>)")
    vm.add_argument("--name", help="session name (default: the commit's short hash or the kernel release)")
    vm.add_argument("--cpus", type=int, help="vCPUs (default: vm.cpus; build with the smp fragment)")
    add_memory_option(vm)
    vm.add_argument("--cmdline", action="append", default=[], metavar="WORDS",
                    help="extra kernel command-line words")
    vm.add_argument("--backend", choices=("qemu", "libvirt"), help="default: vm.backend")
    vm.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="default: vm.accel")
    vm.add_argument("--conf", type=Path, help="kvmlab YAML config file")
    g = p.add_argument_group("in the guest")
    g.add_argument("--repro", type=Path, help="reproducer staged in the guest: a .c file, a syz program "
                   f"(with --syz-execprog/--syz-executor) or a script; goes to {GUEST_DIR}")
    g.add_argument("--syz-execprog", type=Path, help="your syz-execprog binary")
    g.add_argument("--syz-executor", type=Path, help="your syz-executor binary")
    g.add_argument("--share", action="append", default=[], metavar="DIR[:GUESTDIR]",
                   help="host directory mounted in the guest over 9p (at the same path unless GUESTDIR "
                   "is given); builds add the 'share' fragment")
    d = p.add_argument_group("debugging")
    d.add_argument("--gdb", action="store_true", help="gdbstub on a free 127.0.0.1 port, kernel paused "
                   "with nokaslr; builds add the 'gdb' fragment (full debug info, GDB_SCRIPTS)")
    d.add_argument("--gdb-run", action="store_true", help="with --gdb: run gdb here (the console goes "
                   "to the session's console.log)")
    s = p.add_argument_group("session")
    s.add_argument("--keep", action="store_true", help="keep the disk (an image root) for boot --resume")
    s.add_argument("--resume", metavar="NAME", help="boot a kept session's disk again")
    s.add_argument("--dry-run", action="store_true", help="print the qemu command line or domain XML, exit")
    s.add_argument("--timeout", type=float, help="seconds CMD may run (default: timeouts.command)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD: run CMD in the guest, no console")
    add_job_option(p)
    p.set_defaults(func=run)
    pass_through(p)


def command_words(remainder: list[str]) -> list[str]:
    words = list(remainder)
    if words and words[0] == "--":
        words = words[1:]
    return words



def job_from_args(args: argparse.Namespace) -> BootJob:
    """The boot job the command line describes (``--tree T [COMMIT]``)."""
    tree: Path | None = None
    commit = args.commit
    if args.tree is not None:
        if len(args.tree) > 2:
            raise UserError(f"--tree {' '.join(args.tree)}: give a tree and one COMMIT")
        if len(args.tree) == 2 and args.commit:
            raise UserError("give the commit once (--tree T COMMIT, or --commit)")
        commit = args.tree[1] if len(args.tree) == 2 else args.commit
        tree = Path(args.tree[0])
    cmdline = tuple(w for words in args.cmdline for w in shlex.split(words))
    vms: dict[str, Any] = given(conf=_path(args.conf), backend=args.backend, accel=args.accel, cpus=args.cpus,
                                memory_mb=memory_mb(args),
                                root=args.root, cmdline=list(cmdline) or None)
    frags = fragments(args.config)
    fields = given(tree=_path(tree), commit=commit, kernel=_path(args.kernel), vmlinux=_path(args.vmlinux),
                   modules=_path(args.modules), name=args.name, repro=_path(args.repro),
                   syz_execprog=_path(args.syz_execprog), syz_executor=_path(args.syz_executor),
                   shares=list(args.share) or None, gdb=args.gdb or None, gdb_run=args.gdb_run or None,
                   keep=args.keep or None, resume=args.resume, dry_run=args.dry_run or None,
                   timeout=args.timeout, command=command_words(args.command) or None,
                   bug=_path(args.bug_dir), syzbot=args.syzbot)
    patches = [str(p) for p in args.patch or []] or None
    fields |= nested(build=given(config=list(frags) if frags is not None else None, patches=patches), vms=vms)
    job = make_job(BootJob.KIND, fields, args.job)
    assert isinstance(job, BootJob)
    return job


def run(args: argparse.Namespace) -> int:
    return run_boot(job_from_args(args), progress=BuildTicker())
