"""Running a :class:`~kvmlab.jobs.model.BootJob`: boot one commit (built
through the cache) or bzImage and work in it by hand.

The serial console comes to the foreground (Ctrl-A x quits, Ctrl-A c is the
QEMU monitor, Ctrl-A h help); a job with a ``command`` runs it instead and
returns its status. See :mod:`kvmlab.session.foreground` for the statuses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import owner, proc, signals
from kvmlab.config import Config, load_config
from kvmlab.errors import MissingFileError, UserError
from kvmlab.jobs import inputs
from kvmlab.jobs.guest import resolve_root
from kvmlab.jobs.model import BootJob
from kvmlab.jobs.validate import validate
from kvmlab.kernel.builder import GDB_LOADER, Progress
from kvmlab.kernel.config import ConfigRequest, parse_config
from kvmlab.outcome import BuildStatus
from kvmlab.repro.reproducer import GUEST_DIR, CProgram, StagedRepro, SyzProgram
from kvmlab.session.foreground import (
    EXIT_CRASH,
    EXIT_GUEST_STOPPED,
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
from kvmlab.vmm import sizing
from kvmlab.vmm.domain_xml import domain_xml
from kvmlab.vmm.factory import close_backend, make_backend, prepare
from kvmlab.vmm.modules import kernel_release
from kvmlab.vmm.overlay import make_overlay
from kvmlab.vmm.ports import PortAllocator
from kvmlab.vmm.qemu_argv import qemu_argv
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import Share, VMSpec

#: The fragments ``--share`` and ``--gdb`` add to a build.
SHARE_FRAGMENT = "share"
GDB_FRAGMENT = "gdb"


# -- pure helpers --------------------------------------------------------------


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


def fragments_for(config: tuple[str, ...], *, share: bool, gdb: bool) -> tuple[str, ...]:
    """The build's fragments: the user's (default base), then what --share and
    --gdb need, in a fixed order so that the same request hits the cache."""
    frags = [f.strip() for f in (config or ("base",)) if f.strip()]
    for need, name in ((share, SHARE_FRAGMENT), (gdb, GDB_FRAGMENT)):
        if need and name not in frags:
            frags.append(name)
    return tuple(frags)


def build_request(job: BootJob) -> ConfigRequest:
    """The build's config: fragments (:func:`fragments_for`), or a full
    config (a bug's) with the user's fragments and what --share and --gdb
    need on top."""
    if job.build.kernel_config is None:
        return ConfigRequest.from_fragments(fragments_for(job.build.config, share=bool(job.shares),
                                                          gdb=job.gdb))
    frags = [f.strip() for f in job.build.config if f.strip()]
    for need, name in ((bool(job.shares), SHARE_FRAGMENT), (job.gdb, GDB_FRAGMENT)):
        if need and name not in frags:
            frags.append(name)
    return ConfigRequest.from_file(job.build.kernel_config, frags)


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


def check_job(job: BootJob) -> None:
    """Bad combinations, before anything is built or booted."""
    if job.tree is not None and not job.commit:
        raise UserError("--tree needs a COMMIT to build")
    if job.commit and job.tree is None:
        raise UserError(f"{job.commit}: a commit needs --tree (or boot a --kernel bzImage)")
    if job.tree is not None and job.kernel is not None:
        raise UserError("give either --tree T COMMIT or --kernel bzImage, not both")
    if job.tree is None and job.kernel is None and not job.resume:
        raise UserError("give --tree T COMMIT or --kernel bzImage (or --resume NAME)")
    if job.gdb_run and not job.gdb:
        raise UserError("--gdb-run needs --gdb")
    if job.gdb_run and job.command:
        raise UserError("--gdb-run and -- CMD: pick one for the foreground")
    if job.resume and (job.name or job.vms.root):
        raise UserError("--resume boots the kept session's own disk: no --name or --root")
    if job.timeout is not None and not job.command:
        raise UserError("--timeout is for -- CMD")
    if job.timeout is not None and job.timeout <= 0:
        raise UserError(f"--timeout {job.timeout}: must be positive")
    if job.name:
        check_name(job.name)
    if job.build.config and job.kernel is not None:
        raise UserError("--config is for builds (--tree); a --kernel is booted as it is")
    if job.vms.cpus is not None and job.vms.cpus < 1:
        raise UserError(f"--cpus {job.vms.cpus}: at least 1")


def _config(job: BootJob, resumed: SessionRecord | None) -> Config:
    cfg = load_config(job.vms.conf)
    vm: dict[str, Any] = {}
    if resumed is not None:
        vm.update(backend=resumed.backend, cpus=resumed.vm.get("cpus", cfg.vm.cpus),
                  memory_mb=resumed.vm.get("memory_mb", cfg.vm.memory_mb))
    vm.update({k: v for k, v in (("backend", job.vms.backend), ("accel", job.vms.accel),
                                 ("cpus", job.vms.cpus), ("memory_mb", job.vms.memory_mb)) if v is not None})
    return dataclasses.replace(cfg, vm=sizing.resolve_auto(dataclasses.replace(cfg.vm, count=1, **vm)))


def _kernel(job: BootJob, resumed: SessionRecord | None, cfg: Config, *, build: bool,
            progress: Callable[[Progress], None] | None, say: Callable[[str], None]) -> KernelChoice | None:
    """The kernel to boot (built through the cache when asked to); None when
    it would need a build and ``build`` is False."""
    if job.tree is not None:
        assert job.commit is not None
        commit = job.commit
        request = build_request(job)
        frags = request.fragments
        if job.build.patches:
            patched = inputs.patched_commit(job.tree, commit, job.build.patches)
            if patched.commit is None:
                raise UserError(f"patch does not apply: {patched.failed}: {patched.failure} (on {commit})")
            say(f"{patched.commit[:12]} = {commit} + {', '.join(map(str, job.build.patches))}")
            commit = patched.commit
        builder = inputs.kernel_builder(cfg, job.build)
        if not build:
            outcome = builder.lookup(job.tree, commit, request)
            if outcome is None:
                return None
        else:
            say(f"kernel {commit} with {request.describe()}: from the build cache, or built now")
            outcome = builder.build(job.tree, commit, request, progress=progress, argv=sys.argv)
        if outcome.status is BuildStatus.FAILED:
            raise _BuildFailed(f"kernel build failed at {outcome.commit[:12]}: {outcome.error}")
        vml = Path(outcome.artifacts["vmlinux"])
        return KernelChoice(Path(outcome.artifacts["bzImage"]), job.vmlinux or vml, outcome.commit,
                            str(job.tree.resolve()), request.describe() if job.build.kernel_config else
                            ",".join(frags))
    if job.kernel is not None:
        if not job.kernel.is_file():
            raise MissingFileError(f"kernel {job.kernel}: no such file")
        kernel = job.kernel.resolve()
        return KernelChoice(kernel, job.vmlinux or find_vmlinux(kernel))
    assert resumed is not None
    return KernelChoice(Path(resumed.kernel), Path(resumed.vmlinux) if resumed.vmlinux else None,
                        resumed.commit, resumed.tree, resumed.config)


class _BuildFailed(Exception):
    """A kernel build failed: a result (exit 1 with its first error), not ours."""


def staged_reproducer(job: BootJob, workdir: Path) -> StagedRepro | None:
    """The job's reproducer, ready to stage in the guest (a C program is
    compiled here: one that does not compile stops the job before the boot)."""
    path: Path | None = job.repro
    if path is None:
        if job.syz_execprog or job.syz_executor:
            raise UserError("--syz-execprog/--syz-executor go with --repro PROGRAM")
        return None
    if not path.is_file():
        raise MissingFileError(f"--repro {path}: no such file")
    if path.suffix == ".c":
        return CProgram(path).prepare(workdir)
    if job.syz_execprog or job.syz_executor:
        if not (job.syz_execprog and job.syz_executor):
            raise UserError("a syz program needs both --syz-execprog and --syz-executor")
        return SyzProgram(path, job.syz_execprog, job.syz_executor, {}).prepare(workdir)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    return StagedRepro(((path.resolve(), f"{GUEST_DIR}/{name}", 0o755),), f"cd {GUEST_DIR} && ./{name}",
                    f"script {path.name}")


def _dry_run(spec: VMSpec, backend: str, name: str, store: SessionStore, screen: Screen) -> int:
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
                         owner=owner.me()), end="")
    screen.note(f"dry run: the SSH port ({port} here; libvirt: QEMU picks it), the session directory "
                f"({where}) and the host's volume paths are chosen when the VM starts")
    return 0


def _interruption(e: BaseException) -> str:
    """How an exception ended a session, for its record and its last line
    ('' for kvmlab's own errors, which say so themselves)."""
    if isinstance(e, signals.Terminated):
        return f"ended by {signal.Signals(e.signum).name}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return f"error: {e}" if not isinstance(e, SystemExit) else ""


def run_boot(job: BootJob, *, progress: Callable[[Progress], None] | None = None) -> int:
    """Run the boot session ``job`` describes and return its exit status
    (:mod:`kvmlab.session.foreground`); ``progress`` hears a kernel build.
    A bug (``bug``, ``syzbot``) gives the commit, config, compiler, cmdline
    and the reproducer staged in the guest."""
    quiet = Screen(1, 2, raw=False, color=False, console=False)

    def say(line: str) -> None:
        quiet.note(line.removeprefix("kvmlab: "))  # the screen says whose line it is

    job, _ = inputs.with_syzbot(job, say=say)
    job = inputs.with_bug(job, say=say)
    check_job(job)
    validate(job)
    command = list(job.command)
    store = SessionStore()
    resumed: SessionRecord | None = None
    if job.resume:
        sd = store.get(job.resume)
        resumed = sd.read()
        if sd.running():
            raise UserError(f"session {job.resume} is running")
        if not sd.kept_disk.is_file():
            raise UserError(f"session {job.resume} has no kept disk (boot it with --keep to keep one)")
    cfg = _config(job, resumed)
    inputs.check_fits_host(dataclasses.replace(cfg.vm, count=1))
    try:
        choice = _kernel(job, resumed, cfg, build=not job.dry_run, progress=progress, say=quiet.note)
    except _BuildFailed as e:
        quiet.note(str(e))
        return 1
    if choice is None:
        raise UserError(f"{job.commit} is not built yet with {build_request(job).describe()}: "
                        "boot it once without --dry-run (or kvmlab kernel build)")
    release = kernel_release(choice.kernel)
    if release is None:
        raise UserError(f"kernel {choice.kernel}: not a bootable x86 bzImage")
    if job.gdb and (choice.vmlinux is None or not choice.vmlinux.is_file()):
        raise UserError("--gdb needs the kernel's vmlinux: give --vmlinux PATH")
    root_name = resumed.root if resumed is not None else (job.vms.root or cfg.repro.root)
    root = resolve_root(root_name, choice.kernel, modules_dir=job.modules)
    if (job.keep or resumed is not None) and root.kind is not RootKind.DISK:
        raise UserError("--keep needs a disk root (--root RECIPE): an initramfs lives in RAM")
    shares, mounts = parse_shares(list(job.shares))
    # Only for --cpus: the default of 2 on a base (UP) kernel is not news.
    config_text = _kernel_config(choice) if job.vms.cpus is not None else None
    warning = cpu_warning(config_text, cfg.vm.cpus) if config_text else None
    if warning:
        quiet.note(f"warning: {warning}")
    name = resumed.name if resumed is not None else (job.name or default_name(choice.commit, release,
                                                                                choice.kernel))
    prep = prepare(cfg, choice.kernel, root, name=name)
    extra = tuple(job.vms.cmdline)
    resumed_cmdline = tuple(resumed.vm.get("cmdline", ())) if resumed is not None else ()
    gdb_words = ("nokaslr",) if job.gdb else ()
    spec = dataclasses.replace(prep.spec, cmdline=(*prep.spec.cmdline, *resumed_cmdline, *extra, *gdb_words),
                               paused=job.gdb, shares=shares)
    timeouts = prep.timeouts
    if job.gdb:
        # The kernel runs when gdb says so: no boot deadline.
        timeouts = dataclasses.replace(timeouts, boot=float("inf"))
    if job.dry_run:
        if resumed is not None:
            root = dataclasses.replace(root, path=store.root / name / "disk.qcow2", persistent=True)
            spec = dataclasses.replace(spec, root=root)
        return _dry_run(spec, cfg.vm.backend, name, store, quiet)

    with owner.tempdir("boot") as tmp:
        repro = staged_reproducer(job, Path(tmp))  # a reproducer that does not compile stops us here
        backend = make_backend(cfg.vm)
        try:
            sdir = store.reopen(name) if resumed is not None else store.create(name, explicit=bool(job.name))
        except BaseException:
            close_backend(backend)
            raise
        if sdir.kept_as:
            quiet.note(f"the ended session {name}'s files are kept as session {sdir.kept_as} "
                       f"({store.root / sdir.kept_as}; kvmlab kill --rm {sdir.kept_as} drops them)")
        try:
            if resumed is None:
                rec = SessionRecord(
                    name=sdir.name, pid=os.getpid(), started=time.time(), backend=cfg.vm.backend,
                    kernel=str(choice.kernel), release=release, commit=choice.commit, tree=choice.tree,
                    config=choice.config, vmlinux=str(choice.vmlinux or ""), root=root_name,
                    ssh_user=root.ssh_user, ssh_key=str(root.ssh_key), uri=cfg.vm.uri if cfg.vm.backend ==
                    "libvirt" else "", keep=job.keep,
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
            if job.keep or resumed is not None:
                if resumed is None:
                    make_overlay(root.path, sdir.kept_disk)
                spec = dataclasses.replace(spec, root=dataclasses.replace(
                    root, path=sdir.kept_disk, persistent=True))
            spec = dataclasses.replace(spec, name=sdir.name)
            return _session(job, sdir, spec, backend, timeouts, prep.ready_marker, choice, command,
                            GuestSetup(mounts, repro), keep=rec.keep, accel=prep.accel.accel.value)
        finally:
            # The backend's leftovers on its host (a libvirt host's uploaded
            # volumes) go before the session is released: `kvmlab kill`
            # returns when nothing is left.
            with signals.cleanup_window():
                close_backend(backend)
            sdir.release()


def _session(job: BootJob, sdir: SessionDir, spec: VMSpec, backend: Any, timeouts: Any,
             ready_marker: str | None, choice: KernelChoice, command: list[str], setup: GuestSetup,
             *, keep: bool, accel: str) -> int:
    interactive = not command and not job.gdb_run
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
              screen.showing(),
              (logs_on(screen) if raw else contextlib.nullcontext())):
            escape = "; Ctrl-A x quits, Ctrl-A c monitor, Ctrl-A h help" if interactive else ""
            screen.note(f"session {sdir.name}: booting {what} ({backend.name}, {accel}, {spec.cpus} cpus, "
                        f"{spec.memory_mb} MiB); files in {sdir.path}{escape}")
            svm.start()
            if job.gdb:
                port = svm.open_gdbstub()
                assert choice.vmlinux is not None
                gdb = gdb_argv(choice.vmlinux, port)
                screen.note(f"kernel paused for gdb on 127.0.0.1:{port}: {shlex.join(gdb)}")
                if job.gdb_run:
                    screen.note(f"console: {sdir.console_log}")
                    proc.run_foreground(gdb)
                    outcome = SessionEnd(Ending.GDB_ENDED, 0)
            if outcome is None:
                if interactive:
                    outcome = Foreground(svm, screen, 0, setup).run()
                else:
                    limit = job.timeout if job.timeout is not None else timeouts.command
                    outcome = run_command(svm, inputs.guest_command(command), setup, screen, limit)
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
    elif outcome.status == EXIT_GUEST_STOPPED and not (interactive or job.gdb_run):
        screen.note(outcome.detail, alert=True)
    if interactive or job.gdb_run:
        kept = f"; disk kept: kvmlab boot --resume {sdir.name}" if keep else ""
        screen.note(f"session {sdir.name} ended ({outcome.describe()}); files in {sdir.path}{kept}")
    return outcome.status
