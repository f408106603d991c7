"""Typed jobs: one frozen dataclass per task kvmlab runs.

A job says everything a run needs and holds no open resource: it can be
written to YAML or JSON (:func:`job_to_mapping`), read back
(:func:`load_job`) and run with the same result as the command line that made
it. The command line only translates argv into a job; everything that
assembles the pieces (bug directories, reproducer choice, kernel config and
compiler, accelerator, pool, hosts) is the job runners' (:mod:`kvmlab.jobs`).

A job file is a mapping with ``kind`` (``repro``, ``bisect``, ``boot``,
``build``, ``vm-run``, ``demo``) and the job's fields, e.g.::

    kind: repro
    tree: ../linux
    commit: v6.1
    build: {config: [base, kasan]}
    reproducer: {c: repro.c}
    vms: {count: 4, run_time: 60}

Relative paths are relative to the file. An unknown or ill-typed field is an
error naming the field and the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kvmlab.checks import load_yaml, read_text
from kvmlab.config import from_mapping, to_mapping
from kvmlab.errors import ConfigError
from kvmlab.kernel import reduce


@dataclass(frozen=True)
class BuildOptions:
    """How kvmlab builds kernels for a job (every commit of a bisection)."""

    config: tuple[str, ...] = ()
    """Config fragments; empty: ``base``, or none on top of ``kernel_config``."""
    kernel_config: Path | None = None
    """A complete ``.config`` (e.g. syzbot's) as the base; adapted per commit with olddefconfig."""
    compiler: str | None = None
    """Instead of the compiler table's (``gcc-12``, ``clang-15``)."""
    patches: tuple[Path, ...] = ()
    """Patches applied, in order, on top of the commit before it is built
    (git-format or plain diffs; ``repro`` and ``boot``)."""
    minimize: bool = True
    """Drop from ``kernel_config`` the sanitizers and debug checks the target
    crash cannot need, and DWARF (:mod:`kvmlab.kernel.minimize`; repro and bisect)."""
    minimize_builds: int = reduce.DEFAULT_BUDGET
    """Bisect: candidate configs (each a build and VM runs at the bad commit)
    spent finding the least of the full config that still crashes
    (:mod:`kvmlab.kernel.reduce`); 0: the rules only. ``repro`` reuses an
    earlier answer for the same bug and commit."""


@dataclass(frozen=True)
class ReproInput:
    """The reproducer as given: exactly one of ``c``, ``command``, ``syz_prog``
    (or none, when a bug directory provides it)."""

    c: Path | None = None
    """A C program, compiled statically on the host."""
    command: str | None = None
    """A shell command run in the guest."""
    syz_prog: Path | None = None
    """A syzkaller program, run by the user's syz-execprog/syz-executor."""
    syz_dir: Path | None = None
    """Where syz-execprog and syz-executor are (or syzkaller's bin/linux_amd64/); default syzkaller.dir."""
    syz_execprog: Path | None = None
    syz_executor: Path | None = None
    syz_opts: tuple[str, ...] = ()
    """syz-execprog flags ``K=V`` over the program's options line."""

    def given(self) -> int:
        """How many reproducer kinds are given."""
        return sum(x is not None for x in (self.c, self.command, self.syz_prog))

    def describe(self) -> str:
        """What identifies the reproducer (a part of a bisection's key)."""
        return str(self.c or self.command or self.syz_prog)


@dataclass(frozen=True)
class VMOptions:
    """VM settings over the kvmlab config file's (``None``: the file's)."""

    conf: Path | None = None
    """kvmlab YAML config file (default: ``$KVMLAB_CONFIG`` or the user's config file)."""
    backend: str | None = None
    accel: str | None = None
    count: int | None = None
    """VMs (and runs) per test."""
    cpus: int | None = None
    memory_mb: int | None = None
    """RAM per VM, MiB."""
    root: str | None = None
    """Guest root: ``initramfs`` or an image recipe."""
    run_time: float | None = None
    """Seconds a reproducer may run."""
    cmdline: tuple[str, ...] = ()
    """Kernel command-line words added to the config's."""


@dataclass(frozen=True)
class ReproJob:
    """``kvmlab repro``: run a reproducer in a pool of VMs."""

    KIND: ClassVar[str] = "repro"
    kernel: Path | None = None
    """A bzImage to boot (or ``tree`` and ``commit`` to build one)."""
    vmlinux: Path | None = None
    tree: Path | None = None
    commit: str | None = None
    build: BuildOptions = field(default_factory=BuildOptions)
    reproducer: ReproInput = field(default_factory=ReproInput)
    bug: Path | None = None
    """A syzbot bug directory: commit, config, title, reproducer, cmdline."""
    syzbot: str | None = None
    """A syzbot bug (its page URL, ``syzbot+ID@`` address or id), downloaded
    into a bug directory in the cache."""
    vms: VMOptions = field(default_factory=VMOptions)
    expect: str | None = None
    """Title of the bug looked for (other crashes are marked)."""
    expect_report: Path | None = None
    """A console log or report whose crash is looked for."""
    stop_when_decided: bool = False
    workdir: Path | None = None
    json: Path | None = None


@dataclass(frozen=True)
class BisectJob:
    """``kvmlab bisect``: find the commit that introduced (or fixed) a crash."""

    KIND: ClassVar[str] = "bisect"
    tree: Path | None = None
    bad: str | None = None
    good: str | None = None
    """Default: release tags, newest first."""
    fix: bool = False
    policy: str = "adaptive"
    confidence: float | None = None
    release_floor: str | None = None
    expect: str | None = None
    """Title of the bug (default: the first crash on the bad commit)."""
    verify: bool = True
    """Confirm the culprit by reverting it (a fix: applying it), and test
    likely culprits reverted while bisecting (revert probes)."""
    relevance: bool = True
    """Bisect only over the commits that change a file the build reads (the
    others build their parent's kernel), and take two commits that build the
    same kernel binary as one test."""
    build: BuildOptions = field(default_factory=BuildOptions)
    reproducer: ReproInput = field(default_factory=ReproInput)
    bug: Path | None = None
    syzbot: str | None = None
    """A syzbot bug, as for ``repro``; with ``fix``, ``good`` defaults to the tree's HEAD."""
    vms: VMOptions = field(default_factory=VMOptions)
    json: Path | None = None
    journal: Path | None = None
    workdir: Path | None = None


@dataclass(frozen=True)
class DemoJob:
    """``kvmlab demo``: make the demo tree, bisect one of its planted bugs."""

    KIND: ClassVar[str] = "demo"
    dir: Path | None = None
    """Where the demo tree goes (default: in the cache)."""
    planted: str = "culprit"
    """``culprit`` (deterministic) or ``flaky_culprit`` (crashes ~1/3 of runs)."""
    bisect: BisectJob = field(default_factory=BisectJob)
    """Bisection settings; its tree, bad commit and reproducer default to the demo's."""


@dataclass(frozen=True)
class BootJob:
    """``kvmlab boot``: boot one commit or bzImage and work in it."""

    KIND: ClassVar[str] = "boot"
    tree: Path | None = None
    commit: str | None = None
    kernel: Path | None = None
    vmlinux: Path | None = None
    build: BuildOptions = field(default_factory=BuildOptions)
    vms: VMOptions = field(default_factory=VMOptions)
    modules: Path | None = None
    """The kernel's modules directory, for an initramfs root."""
    name: str | None = None
    repro: Path | None = None
    """A reproducer staged in the guest."""
    syz_execprog: Path | None = None
    syz_executor: Path | None = None
    shares: tuple[str, ...] = ()
    """``DIR[:GUESTDIR]`` mounted over 9p."""
    gdb: bool = False
    gdb_run: bool = False
    keep: bool = False
    resume: str | None = None
    dry_run: bool = False
    timeout: float | None = None
    """Seconds ``command`` may run."""
    command: tuple[str, ...] = ()
    """Run this in the guest instead of the console (its words)."""
    bug: Path | None = None
    """A syzbot bug directory: its commit, config, compiler and cmdline are
    booted and its reproducer staged in the guest."""
    syzbot: str | None = None
    """A syzbot bug, downloaded into a bug directory in the cache (as ``bug``)."""


@dataclass(frozen=True)
class BuildJob:
    """``kvmlab kernel build``: build a kernel at a commit, cached."""

    KIND: ClassVar[str] = "build"
    tree: Path | None = None
    commit: str | None = None
    build: BuildOptions = field(default_factory=BuildOptions)
    output: Path | None = None
    jobs: int | None = None
    work_dir: Path | None = None
    conf: Path | None = None


@dataclass(frozen=True)
class VMRunJob:
    """``kvmlab vm run``: boot a kernel in a pool of VMs and run a command in each."""

    KIND: ClassVar[str] = "vm-run"
    kernel: Path | None = None
    modules: Path | None = None
    vms: VMOptions = field(default_factory=VMOptions)
    workdir: Path | None = None
    command: tuple[str, ...] = ()


Job = ReproJob | BisectJob | DemoJob | BootJob | BuildJob | VMRunJob

#: Job classes by their ``kind``.
KINDS: dict[str, type[Job]] = {c.KIND: c for c in (ReproJob, BisectJob, DemoJob, BootJob, BuildJob, VMRunJob)}


def job_to_mapping(job: Job) -> dict[str, Any]:
    """The job as plain data, ``kind`` first (fields at None left out)."""
    data: dict[str, Any] = {"kind": job.KIND}
    data.update(to_mapping(job))
    return data


def job_from_mapping(data: dict[str, Any], *, where: str, base: Path, kind: str | None = None) -> Job:
    """A job from plain data; relative paths are relative to ``base``.
    ``kind`` (when given) is the kind the caller runs: a file of another kind
    is an error, and a missing ``kind`` key means this one."""
    data = dict(data)
    got = data.pop("kind", kind)
    if got is None:
        raise ConfigError(f"{where}: no 'kind' (one of {', '.join(KINDS)})")
    if got not in KINDS:
        raise ConfigError(f"{where}.kind: {got!r} is not one of {', '.join(KINDS)}")
    if kind is not None and got != kind:
        raise ConfigError(f"{where}: a {got} job, not a {kind} job")
    job: Job = from_mapping(KINDS[got], data, where)
    absolute: Job = _absolute(job, base)
    return absolute


def merge_mappings(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_mappings(out[k], v)
        else:
            out[k] = v
    return out


def read_job_file(path: Path) -> dict[str, Any]:
    """A job file's mapping (YAML or JSON); one-line errors naming the file."""
    data = load_yaml(read_text(path, "job"), f"job {path}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"job {path}: the top level must be a mapping of the job's fields")
    return data


def load_job(path: Path, *, kind: str | None = None, over: dict[str, Any] | None = None) -> Job:
    """The job in ``path``, with ``over`` (fields given on the command line,
    relative to the working directory) on top of it."""
    data = read_job_file(path)
    job = job_from_mapping(data, where=f"job {path}", base=path.resolve().parent, kind=kind)
    if over:
        merged = merge_mappings(job_to_mapping(job), over)
        job = job_from_mapping(merged, where=f"job {path} with the command line", base=Path.cwd(),
                               kind=kind)
    return job


def _absolute(obj: Any, base: Path) -> Any:
    """``obj`` (a job or a part of one) with every relative path made absolute
    against ``base``."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Path) and not value.is_absolute():
            changes[f.name] = (base / value).resolve()
        elif isinstance(value, tuple) and any(isinstance(v, Path) for v in value):
            changes[f.name] = tuple((base / v).resolve() if isinstance(v, Path) and not v.is_absolute() else v
                                    for v in value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = _absolute(value, base)
    return dataclasses.replace(obj, **changes) if changes else obj
