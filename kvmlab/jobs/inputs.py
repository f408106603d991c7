"""From a job's fields to the pieces a run needs: the settings (the config
file with the job's VM options on top), the reproducer, the kernel config
request, and what a syzbot bug directory fills in. The one place these are
assembled, for every kind of job."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kvmlab import checks, oops
from kvmlab.bisect.repository import GitRepository
from kvmlab.config import Config, VMConfig, load_config
from kvmlab.errors import MissingFileError, UnknownCommitError, UserError
from kvmlab.host_uri import parse_host_uri
from kvmlab.images.recipe import with_recipe_path
from kvmlab.jobs.model import BisectJob, BuildOptions, ReproInput, ReproJob, VMOptions
from kvmlab.kernel.config import ConfigRequest
from kvmlab.repro import bugdir, syz
from kvmlab.repro.reproducer import CProgram, Reproducer, ShellCommand, SyzProgram


def settings(vms: VMOptions) -> Config:
    """The config file ``vms.conf`` (or the user's default one) with the
    job's VM options on top."""
    cfg = load_config(vms.conf)
    vm: dict[str, Any] = {k: v for k, v in (("count", vms.count), ("backend", vms.backend),
                                            ("accel", vms.accel), ("cpus", vms.cpus),
                                            ("memory_mb", vms.memory_mb)) if v is not None}
    if vms.cmdline:
        vm["cmdline"] = (*cfg.vm.cmdline, *(w for w in vms.cmdline if w not in cfg.vm.cmdline))
    rp: dict[str, Any] = {k: v for k, v in (("run_time", vms.run_time), ("root", vms.root)) if v is not None}
    merged = with_recipe_path(dataclasses.replace(cfg, vm=dataclasses.replace(cfg.vm, **vm),
                                                  repro=dataclasses.replace(cfg.repro, **rp)))
    check_fits_host(merged.vm)
    return merged


def check_fits_host(vm: VMConfig) -> None:
    """A pool that runs on this machine must fit its memory (checked before
    anything is launched; lab hosts check their own)."""
    if vm.backend == "qemu" or (not vm.hosts and parse_host_uri(vm.uri).local):
        checks.check_vm_memory(vm.count, vm.memory_mb)


def guest_command(words: Sequence[str]) -> str:
    """What the guest's shell runs for ``-- CMD``: one word is a shell command
    as it is (``-- 'echo $HOME; exit 4'``); several are quoted word by word,
    so that what the user's shell passed arrives unchanged
    (``-- sh -c 'echo "a  b"; exit 4'``)."""
    if len(words) == 1:
        return words[0]
    return shlex.join(words)


def syz_binaries(rin: ReproInput, cfg: Config) -> tuple[Path, Path] | None:
    """syz-execprog and syz-executor: the explicit paths, else the job's
    ``syz_dir``'s, else the config's ``syzkaller.dir``; None when none is given."""
    syz_dir = rin.syz_dir or (Path(cfg.syzkaller.dir) if cfg.syzkaller.dir else None)
    found = syz.find_binaries(syz_dir) if syz_dir is not None else (None, None)
    execprog = rin.syz_execprog or found[0]
    executor = rin.syz_executor or found[1]
    if execprog is None or executor is None:
        return None
    return execprog, executor


def reproducer(rin: ReproInput, cfg: Config) -> Reproducer:
    """The one reproducer ``rin`` names."""
    if rin.given() != 1:
        raise UserError("give exactly one reproducer: a .c file, --command, --syz-prog (or --bug DIR)")
    if rin.command is not None:
        return ShellCommand(rin.command)
    if rin.syz_prog is not None:
        bins = syz_binaries(rin, cfg)
        if bins is None:
            raise UserError("--syz-prog needs syz-execprog and syz-executor: give --syz-dir DIR "
                            "(or syzkaller.dir in the config, or --syz-execprog and --syz-executor)")
        return SyzProgram(rin.syz_prog, bins[0], bins[1], syz.parse_overrides(list(rin.syz_opts)))
    assert rin.c is not None
    if rin.c.suffix != ".c":
        raise UserError(f"reproducer {rin.c}: expected a .c file (or --command / --syz-prog)")
    return CProgram(rin.c)


def config_request(build: BuildOptions) -> ConfigRequest:
    """The build's kernel config: fragments (default ``base``), or a full
    config with the fragments, if any, on top."""
    names = [n.strip() for n in build.config if n.strip()]
    if build.kernel_config is not None:
        return ConfigRequest.from_file(build.kernel_config, names)
    return ConfigRequest.from_fragments(names or ["base"])


def expected_title(expect: str | None, report: Path | None) -> str | None:
    """The title of the bug looked for: given, or the crash in a report file."""
    if report is None:
        return expect
    try:
        text = report.read_text(errors="replace")
    except OSError as e:
        raise MissingFileError(f"report {report}: {e.strerror}") from None
    rep = oops.parse(text)
    if rep is None:
        raise UserError(f"report {report}: no crash found in it")
    return rep.title


BugJob = TypeVar("BugJob", ReproJob, BisectJob)


def with_bug(job: BugJob, *, say: Callable[[str], None]) -> BugJob:
    """``job`` with what its bug directory provides, where the job leaves it
    open (what the job gives wins): the commit (a bisection's bad one), the
    full kernel config (fragments go on top), the title as ``expect``, the
    reproducer (repro.syz when syz binaries are known, else repro.c) and the
    kernel command line. The commit must be in the job's tree."""
    if job.bug is None:
        return job
    path = job.bug
    found: bugdir.BugDir = bugdir.load(path)
    if job.tree is None:
        where = f" (a clone of {found.tree})" if found.tree else ""
        raise UserError(f"--bug {path}: give --tree, a local kernel git tree{where} "
                        f"with commit {found.commit}")
    try:
        GitRepository(job.tree).resolve(found.commit)
    except UnknownCommitError:
        fetch = f"; fetch it from {found.tree}" if found.tree else ""
        raise UserError(f"--bug {path}: commit {found.commit} is not in --tree {job.tree}{fetch}") from None
    changes: dict[str, Any] = {}
    if isinstance(job, BisectJob):
        if job.bad is None:
            changes["bad"] = found.commit
    elif job.commit is None and job.kernel is None:
        changes["commit"] = found.commit
    if job.build.kernel_config is None:
        changes["build"] = dataclasses.replace(job.build, kernel_config=found.config)
    if job.expect is None:
        changes["expect"] = found.title
    rin = job.reproducer
    if rin.given() == 0:
        have_syz = syz_binaries(rin, settings(job.vms)) is not None
        if found.repro_syz is not None and (have_syz or found.repro_c is None):
            rin = dataclasses.replace(rin, syz_prog=found.repro_syz)
        else:
            rin = dataclasses.replace(rin, c=found.repro_c)
        if found.repro_syz is not None and found.repro_c is not None:
            chosen = "repro.syz" if rin.syz_prog else "repro.c (no syz binaries: --syz-dir)"
            say(f"kvmlab: bug {path}: using {chosen}")
        changes["reproducer"] = rin
    if found.cmdline:
        words = (*found.cmdline, *(w for w in job.vms.cmdline if w not in found.cmdline))
        changes["vms"] = dataclasses.replace(job.vms, cmdline=words)
    return dataclasses.replace(job, **changes)
