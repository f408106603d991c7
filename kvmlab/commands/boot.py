"""``kvmlab boot``: boot one commit (or bzImage) and work in it by hand.

The serial console comes to the foreground (Ctrl-A x quits, Ctrl-A c is the
QEMU monitor, Ctrl-A h help); ``-- CMD`` runs a command instead and exits
with its status. See :mod:`kvmlab.session.foreground` for the exit statuses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import proc, signals
from kvmlab.commands.kernel import _Ticker
from kvmlab.config import Config, load_config
from kvmlab.errors import MissingFileError, UserError
from kvmlab.kernel.builder import GDB_LOADER, KernelBuilder
from kvmlab.kernel.config import ConfigRequest, parse_config
from kvmlab.outcome import BuildStatus
from kvmlab.repro.reproducer import GUEST_DIR, CProgram, StagedRepro, SyzProgram
from kvmlab.session.foreground import (
    EXIT_BOOT_FAILED,
    EXIT_CRASH,
    EXIT_TIMEOUT,
    Ending,
    Foreground,
    GuestSetup,
    Screen,
    SessionEnd,
    crash_line,
    logs_on,
    run_command,
)
from kvmlab.session.store import SessionDir, SessionRecord, SessionStore, check_name, default_name
from kvmlab.session.terminal import RawTerminal, is_terminal
from kvmlab.session.vm import MountPoint, SessionVM
from kvmlab.vmm.domain_xml import Owner, domain_xml
from kvmlab.vmm.factory import close_backend, make_backend, prepare, resolve_root
from kvmlab.vmm.modules import kernel_release
from kvmlab.vmm.overlay import make_overlay
from kvmlab.vmm.ports import PortAllocator
from kvmlab.vmm.qemu_argv import qemu_argv
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import Share, VMSpec

#: The fragments ``--share`` and ``--gdb`` add to a build.
SHARE_FRAGMENT = "share"
GDB_FRAGMENT = "gdb"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "boot", help="boot a commit or bzImage and work in it (console, ssh, gdb)",
        description="Boot one VM and put its serial console in the foreground (Ctrl-A x quits and "
        "stops the VM, Ctrl-A c toggles the QEMU monitor, Ctrl-A h help), or with -- CMD run CMD "
        "in it and exit with its status. Exit statuses: the command's; "
        f"{EXIT_BOOT_FAILED} boot failed; {EXIT_CRASH} kernel crash (title on stderr); "
        f"{EXIT_TIMEOUT} --timeout; 2 bad input; 3 kvmlab's or the host's failure.",
    )
    src = p.add_argument_group("kernel (a tree and commit to build, or a bzImage)")
    src.add_argument("--tree", nargs="+", metavar=("TREE", "COMMIT"),
                     help="kernel git tree (only read: your checkout is not touched) and the revision to "
                     "build")
    src.add_argument("--commit", help="the revision, when not given after --tree")
    src.add_argument("--kernel", type=Path, help="bzImage to boot")
    src.add_argument("--vmlinux", type=Path, help="its vmlinux (symbolized reports, gdb)")
    src.add_argument("--config", help="config fragments for the build (default: base)")
    vm = p.add_argument_group("the VM")
    vm.add_argument("--root", help="guest root: initramfs (default) or an image recipe")
    vm.add_argument("--modules", type=Path, help="the kernel's modules dir, for an initramfs root "
                    "(default: /lib/modules/<release>)")
    vm.add_argument("--name", help="session name (default: the commit's short hash or the kernel release)")
    vm.add_argument("--cpus", type=int, help="vCPUs (default: vm.cpus; build with the smp fragment)")
    vm.add_argument("--memory", help="RAM: 2G, 512M or MiB (default: vm.memory_mb)")
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
    p.set_defaults(func=run)


# -- pure helpers --------------------------------------------------------------


def parse_memory(text: str) -> int:
    """``2G``, ``512M``, ``512`` (MiB) -> MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise UserError(f"--memory {text!r}: expected a size like 2G, 512M or a number of MiB")
    n, unit = int(m.group(1)), m.group(2).upper()
    mib = {"": n, "M": n, "G": n * 1024, "K": n // 1024}[unit]
    if mib < 64:
        raise UserError(f"--memory {text!r}: at least 64 MiB")
    return mib


def parse_shares(words: list[str]) -> tuple[tuple[Share, ...], tuple[MountPoint, ...]]:
    """``--share DIR[:GUESTDIR]`` values -> the VM's shares and their mount points."""
    shares, mounts = [], []
    for i, word in enumerate(words):
        host, sep, guest = word.partition(":")
        path = Path(host).expanduser().resolve()
        if not path.is_dir():
            raise MissingFileError(f"--share {host}: no such directory")
        guest_dir = guest if sep and guest else str(path)
        if not guest_dir.startswith("/"):
            raise UserError(f"--share {word}: the guest directory must be absolute")
        tag = f"kvmlab{i}"
        shares.append(Share(tag, path))
        mounts.append(MountPoint(tag, guest_dir))
    return tuple(shares), tuple(mounts)


def fragments_for(config: str | None, *, share: bool, gdb: bool) -> tuple[str, ...]:
    """The build's fragments: the user's (default base), then what --share and
    --gdb need, in a fixed order so that the same request hits the cache."""
    frags = [f.strip() for f in (config or "base").split(",") if f.strip()]
    for need, name in ((share, SHARE_FRAGMENT), (gdb, GDB_FRAGMENT)):
        if need and name not in frags:
            frags.append(name)
    return tuple(frags)


def find_vmlinux(kernel: Path) -> Path | None:
    """The vmlinux belonging to a bzImage: next to it (kvmlab's build cache)
    or at the top of a Kbuild output dir (``arch/x86/boot/bzImage``)."""
    for cand in (kernel.parent / "vmlinux", kernel.parent.parent.parent.parent / "vmlinux"):
        if cand.is_file():
            return cand
    return None


def gdb_argv(vmlinux: Path, port: int) -> list[str]:
    """The gdb command for a session's gdbstub. With the kernel's gdb scripts
    next to vmlinux (the ``gdb`` fragment) gdb may load them, and
    ``lx-symbols`` loads the symbols where the kernel put them."""
    argv = ["gdb"]
    scripts = (vmlinux.parent / GDB_LOADER).is_file()
    if scripts:
        argv += ["-iex", f"add-auto-load-safe-path {vmlinux.parent}"]
    argv += [str(vmlinux), "-ex", f"target remote 127.0.0.1:{port}"]
    if scripts:
        argv += ["-ex", "lx-symbols"]
    return argv


def cpu_warning(config_text: str, cpus: int) -> str | None:
    """Why a kernel of this .config would use fewer than ``cpus`` CPUs, or None.
    Such a kernel boots fine on one CPU and says nothing, so say it here."""
    if cpus <= 1:
        return None
    cfg = parse_config(config_text, source="kernel .config")
    if cfg.get("CONFIG_SMP", "n") != "y":
        return (f"the kernel is built without SMP: the guest will use 1 of its {cpus} CPUs "
                "(add the smp fragment)")
    if cfg.get("CONFIG_ACPI", "n") != "y" and cfg.get("CONFIG_X86_MPPARSE", "n") != "y":
        return (f"the kernel has neither ACPI nor MPPARSE: it can't find the other CPUs and will use 1 of "
                f"{cpus}")
    limit = cfg.get("CONFIG_NR_CPUS", "")
    if limit.isdigit() and int(limit) < cpus:
        return f"the kernel is built for at most {limit} CPUs (CONFIG_NR_CPUS): the guest will use {limit}"
    return None


def _kernel_config(choice: KernelChoice) -> str | None:
    """The .config a kernel was built with, when kvmlab can find it."""
    for cand in (choice.kernel.parent / "config", choice.kernel.parent.parent.parent.parent / ".config"):
        if cand.is_file():
            return cand.read_text(errors="replace")
    return None


def command_words(remainder: list[str]) -> list[str]:
    words = list(remainder)
    if words and words[0] == "--":
        words = words[1:]
    return words


def _color_ok(fd: int) -> bool:
    return is_terminal(fd) and os.environ.get("TERM", "") != "dumb" and "NO_COLOR" not in os.environ


# -- the steps -------------------------------------------------------------------


@dataclass(frozen=True)
class KernelChoice:
    kernel: Path
    vmlinux: Path | None
    commit: str = ""
    tree: str = ""
    config: str = ""


def _check_args(args: argparse.Namespace, command: list[str]) -> None:
    """Bad combinations, before anything is built or booted. Leaves
    ``args.tree`` a Path (or None) and ``args.commit`` the revision."""
    if args.tree is not None:
        if len(args.tree) > 2:
            raise UserError(f"--tree {' '.join(args.tree)}: give a tree and one COMMIT")
        if len(args.tree) == 2 and args.commit:
            raise UserError("give the commit once (--tree T COMMIT, or --commit)")
        args.commit = args.tree[1] if len(args.tree) == 2 else args.commit
        args.tree = Path(args.tree[0])
    commit = args.commit
    if args.tree is not None and not commit:
        raise UserError("--tree needs a COMMIT to build")
    if commit and args.tree is None:
        raise UserError(f"{commit}: a commit needs --tree (or boot a --kernel bzImage)")
    if args.tree is not None and args.kernel is not None:
        raise UserError("give either --tree T COMMIT or --kernel bzImage, not both")
    if args.tree is None and args.kernel is None and not args.resume:
        raise UserError("give --tree T COMMIT or --kernel bzImage (or --resume NAME)")
    if args.gdb_run and not args.gdb:
        raise UserError("--gdb-run needs --gdb")
    if args.gdb_run and command:
        raise UserError("--gdb-run and -- CMD: pick one for the foreground")
    if args.resume and (args.name or args.root):
        raise UserError("--resume boots the kept session's own disk: no --name or --root")
    if args.timeout is not None and not command:
        raise UserError("--timeout is for -- CMD")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout}: must be positive")
    if args.name:
        check_name(args.name)
    if args.config and args.kernel is not None:
        raise UserError("--config is for builds (--tree); a --kernel is booted as it is")


def _config(args: argparse.Namespace, resumed: SessionRecord | None) -> Config:
    cfg = load_config(args.conf)
    vm: dict[str, Any] = {}
    if resumed is not None:
        vm.update(backend=resumed.backend, cpus=resumed.vm.get("cpus", cfg.vm.cpus),
                  memory_mb=resumed.vm.get("memory_mb", cfg.vm.memory_mb))
    vm.update({k: v for k, v in (("backend", args.backend), ("accel", args.accel), ("cpus", args.cpus))
               if v is not None})
    if args.memory is not None:
        vm["memory_mb"] = parse_memory(args.memory)
    if args.cpus is not None and args.cpus < 1:
        raise UserError(f"--cpus {args.cpus}: at least 1")
    return dataclasses.replace(cfg, vm=dataclasses.replace(cfg.vm, **vm))


def _kernel(args: argparse.Namespace, resumed: SessionRecord | None, *, build: bool) -> KernelChoice | None:
    """The kernel to boot (built through the cache when asked to); None when
    it would need a build and ``build`` is False."""
    if args.tree is not None:
        commit = args.commit
        frags = fragments_for(args.config, share=bool(args.share), gdb=args.gdb)
        builder = KernelBuilder()
        request = ConfigRequest.from_fragments(frags)
        if not build:
            outcome = builder.lookup(args.tree, commit, request)
            if outcome is None:
                return None
        else:
            print(f"kvmlab: kernel {commit} with {','.join(frags)}: from the build cache, or built now",
                  file=sys.stderr)
            outcome = builder.build(args.tree, commit, request, progress=_Ticker(), argv=sys.argv)
        if outcome.status is BuildStatus.FAILED:
            raise _BuildFailed(f"kernel build failed at {outcome.commit[:12]}: {outcome.error}")
        vml = Path(outcome.artifacts["vmlinux"])
        return KernelChoice(Path(outcome.artifacts["bzImage"]), args.vmlinux or vml, outcome.commit,
                            str(args.tree.resolve()), ",".join(frags))
    if args.kernel is not None:
        if not args.kernel.is_file():
            raise MissingFileError(f"kernel {args.kernel}: no such file")
        kernel = args.kernel.resolve()
        return KernelChoice(kernel, args.vmlinux or find_vmlinux(kernel))
    assert resumed is not None
    return KernelChoice(Path(resumed.kernel), Path(resumed.vmlinux) if resumed.vmlinux else None,
                        resumed.commit, resumed.tree, resumed.config)


class _BuildFailed(Exception):
    """A kernel build failed: a result (exit 1 with its first error), not ours."""


def _reproducer(args: argparse.Namespace, workdir: Path) -> StagedRepro | None:
    path: Path | None = args.repro
    if path is None:
        if args.syz_execprog or args.syz_executor:
            raise UserError("--syz-execprog/--syz-executor go with --repro PROGRAM")
        return None
    if not path.is_file():
        raise MissingFileError(f"--repro {path}: no such file")
    if path.suffix == ".c":
        return CProgram(path).prepare(workdir)
    if args.syz_execprog or args.syz_executor:
        if not (args.syz_execprog and args.syz_executor):
            raise UserError("a syz program needs both --syz-execprog and --syz-executor")
        return SyzProgram(path, args.syz_execprog, args.syz_executor, {}).prepare(workdir)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    return StagedRepro(((path.resolve(), f"{GUEST_DIR}/{name}", 0o755),), f"cd {GUEST_DIR} && ./{name}",
                    f"script {path.name}")


def _dry_run(spec: VMSpec, backend: str, name: str, store: SessionStore) -> int:
    port = PortAllocator().reserve()
    where = store.root / name
    disk = where / "overlay.qcow2" if spec.root.kind is RootKind.DISK else None
    if spec.root.persistent:
        disk = spec.root.path
    if backend == "qemu":
        argv = qemu_argv(dataclasses.replace(spec, name=f"{name}-0"), ssh_port=port, disk=disk,
                         qmp=where / "qmp.sock")
        print(shlex.join(argv))
    else:
        # The host's paths are storage volumes named when the VM starts: shown
        # here as the files they are made from.
        initrd = spec.root.path if spec.root.kind is RootKind.INITRAMFS else spec.initrd
        print(domain_xml(spec, name=f"kvmlab-{os.getpid()}-{name}-0", kernel=str(spec.kernel),
                         initrd=str(initrd) if initrd else None, disk=str(disk) if disk else None,
                         console_log=str(where / "console.log"),
                         owner=Owner(os.getpid(), socket.gethostname())), end="")
    print(f"kvmlab: dry run: the SSH port ({port} here; libvirt: QEMU picks it), the session directory "
          f"({where}) and the host's volume paths are chosen when the VM starts", file=sys.stderr)
    return 0


def _interruption(e: BaseException) -> str:
    """How an exception ended a session, for its record and its last line
    ('' for kvmlab's own errors, which say so themselves)."""
    if isinstance(e, signals.Terminated):
        return f"ended by {signal.Signals(e.signum).name}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return f"error: {e}" if not isinstance(e, SystemExit) else ""


def run(args: argparse.Namespace) -> int:
    command = command_words(args.command)
    _check_args(args, command)
    store = SessionStore()
    resumed: SessionRecord | None = None
    if args.resume:
        sd = store.get(args.resume)
        resumed = sd.read()
        if sd.running():
            raise UserError(f"session {args.resume} is running")
        if not sd.kept_disk.is_file():
            raise UserError(f"session {args.resume} has no kept disk (boot it with --keep to keep one)")
    cfg = _config(args, resumed)
    try:
        choice = _kernel(args, resumed, build=not args.dry_run)
    except _BuildFailed as e:
        print(f"kvmlab: {e}", file=sys.stderr)
        return 1
    if choice is None:
        raise UserError(f"{args.commit} is not built yet with "
                        f"{','.join(fragments_for(args.config, share=bool(args.share), gdb=args.gdb))}: "
                        "boot it once without --dry-run (or kvmlab kernel build)")
    release = kernel_release(choice.kernel)
    if release is None:
        raise UserError(f"kernel {choice.kernel}: not a bootable x86 bzImage")
    if args.gdb and (choice.vmlinux is None or not choice.vmlinux.is_file()):
        raise UserError("--gdb needs the kernel's vmlinux: give --vmlinux PATH")
    root_name = resumed.root if resumed is not None else (args.root or cfg.repro.root)
    root = resolve_root(root_name, choice.kernel, modules_dir=args.modules)
    if (args.keep or resumed is not None) and root.kind is not RootKind.DISK:
        raise UserError("--keep needs a disk root (--root RECIPE): an initramfs lives in RAM")
    shares, mounts = parse_shares(args.share)
    # Only for --cpus: the default of 2 on a base (UP) kernel is not news.
    config_text = _kernel_config(choice) if args.cpus is not None else None
    warning = cpu_warning(config_text, cfg.vm.cpus) if config_text else None
    if warning:
        print(f"kvmlab: warning: {warning}", file=sys.stderr)
    name = resumed.name if resumed is not None else (args.name or default_name(choice.commit, release,
                                                                                 choice.kernel))
    prep = prepare(cfg, choice.kernel, root, name=name)
    extra = tuple(w for words in args.cmdline for w in shlex.split(words))
    resumed_cmdline = tuple(resumed.vm.get("cmdline", ())) if resumed is not None else ()
    gdb_words = ("nokaslr",) if args.gdb else ()
    spec = dataclasses.replace(prep.spec, cmdline=(*prep.spec.cmdline, *resumed_cmdline, *extra, *gdb_words),
                               paused=args.gdb, shares=shares)
    timeouts = prep.timeouts
    if args.gdb:
        # The kernel runs when gdb says so: no boot deadline.
        timeouts = dataclasses.replace(timeouts, boot=float("inf"))
    if args.dry_run:
        if resumed is not None:
            root = dataclasses.replace(root, path=store.root / name / "disk.qcow2", persistent=True)
            spec = dataclasses.replace(spec, root=root)
        return _dry_run(spec, cfg.vm.backend, name, store)

    with tempfile.TemporaryDirectory(prefix="kvmlab-boot-") as tmp:
        repro = _reproducer(args, Path(tmp))  # a reproducer that does not compile stops us here
        backend = make_backend(cfg.vm)
        try:
            sdir = store.reopen(name) if resumed is not None else store.create(name, explicit=bool(args.name))
        except BaseException:
            close_backend(backend)
            raise
        try:
            if resumed is None:
                rec = SessionRecord(
                    name=sdir.name, pid=os.getpid(), started=time.time(), backend=cfg.vm.backend,
                    kernel=str(choice.kernel), release=release, commit=choice.commit, tree=choice.tree,
                    config=choice.config, vmlinux=str(choice.vmlinux or ""), root=root_name,
                    ssh_user=root.ssh_user, ssh_key=str(root.ssh_key), uri=cfg.vm.uri if cfg.vm.backend ==
                    "libvirt" else "", keep=args.keep,
                    vm={"cpus": spec.cpus, "memory_mb": spec.memory_mb, "cmdline": list(extra)},
                )
            else:
                rec = dataclasses.replace(
                    resumed, pid=os.getpid(), started=time.time(), backend=cfg.vm.backend,
                    kernel=str(choice.kernel), release=release, commit=choice.commit, tree=choice.tree,
                    config=choice.config, vmlinux=str(choice.vmlinux or ""), state="starting", ssh_port=0,
                    gdb_port=0, qemu_pid=0, domain="", crashes=(), ended=0.0, result="", keep=True,
                    vm={**resumed.vm, "cpus": spec.cpus, "memory_mb": spec.memory_mb},
                )
            sdir.write(rec)
            if args.keep or resumed is not None:
                if resumed is None:
                    make_overlay(root.path, sdir.kept_disk)
                spec = dataclasses.replace(spec, root=dataclasses.replace(
                    root, path=sdir.kept_disk, persistent=True))
            spec = dataclasses.replace(spec, name=sdir.name)
            return _session(args, sdir, spec, backend, timeouts, prep.ready_marker, choice, command,
                            GuestSetup(mounts, repro), keep=rec.keep, accel=prep.accel.accel.value)
        finally:
            # The backend's leftovers on its host (a libvirt host's uploaded
            # volumes) go before the session is released: `kvmlab kill`
            # returns when nothing is left.
            with signals.cleanup_window():
                close_backend(backend)
            sdir.release()


def _session(args: argparse.Namespace, sdir: SessionDir, spec: VMSpec, backend: Any, timeouts: Any,
             ready_marker: str | None, choice: KernelChoice, command: list[str], setup: GuestSetup,
             *, keep: bool, accel: str) -> int:
    interactive = not command and not args.gdb_run
    raw = interactive and is_terminal(0) and is_terminal(1)
    screen = Screen(1, 2, raw=raw, color=_color_ok(1 if raw else 2), console=interactive)
    svm = SessionVM(sdir, spec, backend, timeouts, ready_marker=ready_marker, vmlinux=choice.vmlinux,
                    on_output=screen.console, on_crash=lambda c: screen.note(crash_line(c), alert=True))
    outcome: SessionEnd | None = None
    interrupted = ""
    what = choice.commit[:12] if choice.commit else str(choice.kernel)
    try:
        with (signals.unwinding((signal.SIGTERM, signal.SIGHUP), drop_after_stop=True),
              (RawTerminal(0) if raw else contextlib.nullcontext()),
              (logs_on(screen) if raw else contextlib.nullcontext())):
            escape = "; Ctrl-A x quits, Ctrl-A c monitor, Ctrl-A h help" if interactive else ""
            screen.note(f"session {sdir.name}: booting {what} ({backend.name}, {accel}, {spec.cpus} cpus, "
                        f"{spec.memory_mb} MiB); files in {sdir.path}{escape}")
            svm.start()
            if args.gdb:
                port = svm.open_gdbstub()
                assert choice.vmlinux is not None
                gdb = gdb_argv(choice.vmlinux, port)
                screen.note(f"kernel paused for gdb on 127.0.0.1:{port}: {shlex.join(gdb)}")
                if args.gdb_run:
                    screen.note(f"console: {sdir.console_log}")
                    proc.run_foreground(gdb)
                    outcome = SessionEnd(Ending.GDB_ENDED, 0)
            if outcome is None:
                if interactive:
                    outcome = Foreground(svm, screen, 0, setup).run()
                else:
                    limit = args.timeout if args.timeout is not None else timeouts.command
                    outcome = run_command(svm, " ".join(command), setup, screen, limit)
    except BaseException as e:
        interrupted = _interruption(e)
        raise
    finally:
        screen.raw_off()
        with signals.cleanup_window():
            result = outcome.describe() if outcome is not None else interrupted
            try:
                svm.close(sync=keep)
            except BaseException as e:
                # The record still says the session ended, and how its
                # teardown failed (stderr may be a terminal that is gone).
                result = f"{result}; teardown failed: {type(e).__name__}: {e}".lstrip("; ")
                raise
            finally:
                with contextlib.suppress(OSError, UserError):
                    sdir.update(state="ended", ended=time.time(), result=result, ssh_port=0, gdb_port=0)
        if outcome is None and interrupted.startswith(("ended by", "interrupted")):
            screen.note(f"session {sdir.name} ended ({interrupted}); files in {sdir.path}")
    assert outcome is not None  # an exception above would have left already
    if outcome.status == EXIT_CRASH and not svm.crashes:  # a crash the flagger did not title
        screen.note(f"crash: {outcome.detail}", alert=True)
    if outcome.ending is Ending.BOOT_FAILED:
        screen.note(f"boot failed: {outcome.detail}", alert=True)
    elif outcome.status == EXIT_TIMEOUT:
        screen.note(f"timeout: {outcome.detail}", alert=True)
    if interactive or args.gdb_run:
        kept = f"; disk kept: kvmlab boot --resume {sdir.name}" if keep else ""
        screen.note(f"session {sdir.name} ended ({outcome.describe()}); files in {sdir.path}{kept}")
    return outcome.status
