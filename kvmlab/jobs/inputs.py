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
from kvmlab.config import Config, VMConfig, cache_dir, load_config
from kvmlab.errors import MissingFileError, UnknownCommitError, UserError
from kvmlab.git import PatchedCommit, Repo
from kvmlab.host_uri import parse_host_uri
from kvmlab.images.recipe import with_recipe_path
from kvmlab.jobs.model import BisectJob, BootJob, BuildOptions, ReproInput, ReproJob, VMOptions
from kvmlab.kernel import compilers, distcc, minimize
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest, find_data_file, fragment_dirs
from kvmlab.kernel.minimize import Minimized
from kvmlab.repro import bugdir, syz
from kvmlab.repro.reproducer import CProgram, Reproducer, ShellCommand, SyzProgram
from kvmlab.syzbot.client import Dashboard
from kvmlab.syzbot.fetch import FetchedBug, fetch_bug
from kvmlab.syzbot.model import compiler_name, parse_ref
from kvmlab.vmm import sizing


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
    # vm.count / capacity: auto become numbers here, once per job.
    vm_cfg = sizing.resolve_auto(dataclasses.replace(cfg.vm, **vm))
    merged = with_recipe_path(dataclasses.replace(cfg, vm=vm_cfg, repro=dataclasses.replace(cfg.repro, **rp)))
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
    """The build's kernel config as given: fragments (default ``base``), or a
    full config with the fragments, if any, on top (``kernel build``)."""
    names = [n.strip() for n in build.config if n.strip()]
    if build.kernel_config is None:
        return ConfigRequest.from_fragments(names or ["base"])
    return ConfigRequest.from_file(build.kernel_config, names)


def kernel_builder(cfg: Config, build: BuildOptions, *, work_dir: Path | None = None,
                   jobs: int | None = None) -> KernelBuilder:
    """The kernel builder of every job that builds: the compiler asked for,
    the user's fragments (``kernel.fragments``) and compile hosts
    (``kernel.distcc_hosts``) from the config, the shared build cache."""
    return KernelBuilder(work_dir, jobs=jobs, compiler=build.compiler,
                         fragments_dir=cfg.kernel.fragments_path,
                         distcc_hosts=distcc.parse_hosts(cfg.kernel.distcc_hosts))


def minimize_rules(dirs: Sequence[Path]) -> list[minimize.Rule]:
    """The config minimization table on the fragments' search path ``dirs``
    (a user's directory first)."""
    return minimize.load_rules(find_data_file(minimize.TABLE_NAME, dirs))


def minimized_request(build: BuildOptions, title: str | None = None, *,
                      fragments_dir: Path | None = None) -> tuple[ConfigRequest, Minimized | None]:
    """The config of a job about a bug (repro, bisect): :func:`config_request`,
    with a full config minimized for a crash titled ``title`` unless
    ``build.minimize`` is off; and what minimization dropped (None: not a
    full config, or minimization off)."""
    request = config_request(build)
    if build.kernel_config is None or not build.minimize or request.full_config is None:
        return request, None
    rules = minimize_rules(fragment_dirs(fragments_dir))
    done = minimize.minimize(request.full_config, title, rules, source=str(build.kernel_config))
    if not done.drops:
        return request, done
    return dataclasses.replace(request, full_config=done.text,
                               full_config_name=f"{build.kernel_config} (minimized)"), done


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


BugJob = TypeVar("BugJob", ReproJob, BisectJob, BootJob)


def _have_syz(job: ReproJob | BisectJob | BootJob, cfg: Config) -> bool:
    """Whether the job can run a syz program (binaries given or configured)."""
    if isinstance(job, BootJob):
        if job.syz_execprog and job.syz_executor:
            return True
        return syz_binaries(ReproInput(), cfg) is not None
    return syz_binaries(job.reproducer, cfg) is not None


def with_syzbot(job: BugJob, *, say: Callable[[str], None]) -> tuple[BugJob, FetchedBug | None]:
    """``job`` with its syzbot bug (``job.syzbot``) downloaded into a bug
    directory in the cache, or read from there (then without the network),
    as ``job.bug``; and the bug as the dashboard describes it."""
    if job.syzbot is None:
        return job, None
    if job.bug is not None:
        raise UserError("give --bug DIR or --syzbot BUG, not both")
    cfg = settings(job.vms)
    ref = parse_ref(job.syzbot, cfg.syzbot.url)
    tree = job.tree

    def in_tree(commit: str) -> bool:
        if tree is None:
            return False
        try:
            GitRepository(tree).resolve(commit)
        except UnknownCommitError:
            return False
        return True

    dashboard = Dashboard(ref.base, proxy=cfg.syzbot.proxy, timeout=cfg.syzbot.timeout)
    fetched = fetch_bug(ref, dashboard, cache_dir() / "syzbot", have_syz=_have_syz(job, cfg), in_tree=in_tree,
                        say=say)
    bug = fetched.bug
    state = "; ".join(x for x in (bug.status, bug.fix_line()) if x)
    say(f"kvmlab: syzbot bug {ref.name}: {bug.title}" + (f" ({state})" if state else ""))
    origin = "from the cache" if fetched.cached else f"from {ref.base}"
    say(f"kvmlab: {fetched.choice.why}; bug directory {fetched.path} ({origin})")
    return dataclasses.replace(job, bug=fetched.path), fetched


def _load_bug(path: Path, tree: Path | None) -> bugdir.BugDir:
    """The bug directory ``path``, its commit checked to be in ``tree``."""
    found: bugdir.BugDir = bugdir.load(path)
    if tree is None:
        where = f" (a clone of {found.tree})" if found.tree else ""
        raise UserError(f"--bug {path}: give --tree, a local kernel git tree{where} "
                        f"with commit {found.commit}")
    try:
        GitRepository(tree).resolve(found.commit)
    except UnknownCommitError:
        fetch = f"; fetch it from {found.tree}" if found.tree else ""
        raise UserError(f"--bug {path}: commit {found.commit} is not in --tree {tree}{fetch}") from None
    return found


def _bug_build(found: bugdir.BugDir, build: BuildOptions, cfg: Config) -> BuildOptions:
    """The build options with the bug's full config and compiler, where the
    job leaves them open. The compiler the bug names is looked up in the
    compiler table (its package and LLVM=1 from there) and must be on this
    host: a missing one is one line naming its Debian package."""
    changes: dict[str, Any] = {}
    if build.kernel_config is None:
        changes["kernel_config"] = found.config
    if build.compiler is None and found.compiler:
        name = compiler_name(found.compiler)
        if name is not None:
            table = compilers.load_table(find_data_file("compilers.yaml",
                                                        fragment_dirs(cfg.kernel.fragments_path)))
            rule = next((r for r in table if r.cc == name), compilers.rule_for(name))
            compilers.resolve_rule(rule, why=f"bug {found.path} was built with {found.compiler}; "
                                             "--compiler NAME builds with another")
            changes["compiler"] = name
    return dataclasses.replace(build, **changes) if changes else build


def _bug_cmdline(found: bugdir.BugDir, vms: VMOptions) -> VMOptions:
    words = (*found.cmdline, *(w for w in vms.cmdline if w not in found.cmdline))
    return dataclasses.replace(vms, cmdline=words) if found.cmdline else vms


def with_bug(job: BugJob, *, say: Callable[[str], None]) -> BugJob:
    """``job`` with what its bug directory provides, where the job leaves it
    open (what the job gives wins): the commit (a bisection's bad one; a fix
    bisection's good one is the tree's HEAD), the full kernel config
    (fragments go on top), the compiler it names, the title as ``expect``,
    the reproducer (repro.syz when syz binaries are known, else repro.c) and
    the kernel command line. The commit must be in the job's tree."""
    if job.bug is None:
        return job
    path = job.bug
    found = _load_bug(path, job.tree)
    assert job.tree is not None
    changes: dict[str, Any] = {"build": _bug_build(found, job.build, settings(job.vms)),
                               "vms": _bug_cmdline(found, job.vms)}
    if isinstance(job, BootJob):
        if job.commit is None and job.kernel is None:
            changes["commit"] = found.commit
        if job.repro is None:
            cfg = settings(job.vms)
            use_syz = found.repro_syz is not None and (_have_syz(job, cfg) or found.repro_c is None)
            changes["repro"] = found.repro_syz if use_syz else found.repro_c
            bins = syz_binaries(ReproInput(), cfg)
            if use_syz and not (job.syz_execprog and job.syz_executor) and bins is not None:
                changes["syz_execprog"], changes["syz_executor"] = bins
        return dataclasses.replace(job, **changes)
    if isinstance(job, BisectJob):
        if job.bad is None:
            changes["bad"] = found.commit
        if job.fix and job.good is None:
            head = GitRepository(job.tree).resolve("HEAD")
            say(f"kvmlab: fix bisection from the bug's commit {found.commit[:12]} to your tree's HEAD "
                f"{head[:12]}")
            changes["good"] = head
    elif job.commit is None and job.kernel is None:
        changes["commit"] = found.commit
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
    return dataclasses.replace(job, **changes)


def patched_commit(tree: Path, commit: str, patches: Sequence[Path]) -> PatchedCommit:
    """``commit`` with ``patches`` applied, made in kvmlab's private index
    (the user's checkout, index and branches untouched): a commit of its
    own, so the build cache tells it apart by its tree."""
    for p in patches:
        if not p.is_file():
            raise MissingFileError(f"--patch {p}: no such file")
    base = GitRepository(tree).resolve(commit)
    names = ", ".join(p.name for p in patches)
    return Repo(tree).apply_patches(base, patches, f"kvmlab: {base[:12]} with {names}")
