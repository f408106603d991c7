"""The one place a job is checked before its work starts.

Every runner calls :func:`validate` first. Types were checked when the job
was made (:func:`kvmlab.config.from_mapping`); here come the rest, each a
one-line :class:`~kvmlab.errors.UserError` naming the option (its job-file
field in brackets) and what is wrong:

* ranges: counts, CPUs, memory, run times and timeouts are positive (a
  run time of 0 or -1 would otherwise mean "no limit" or give ``OK`` at once);
* existence and kind of every input file and directory, and that the text
  ones (config files, ``.config``, syz programs) are text;
* combinations that would silently ignore an option (``--kernel-config``
  with a ``--kernel`` that is booted as it is);
* outputs (``--workdir``, ``--json``, ``--journal``, ``-o``) writable *now*,
  so that a long run never ends with its result unwritable.

What needs the config file merged in (a pool's memory against the host's) is
checked where the settings are assembled (:func:`kvmlab.jobs.inputs.settings`).
"""

from __future__ import annotations

import math
from pathlib import Path

from kvmlab import checks
from kvmlab.errors import ConfigError, UserError
from kvmlab.jobs.model import (
    BisectJob,
    BootJob,
    BuildJob,
    BuildOptions,
    DemoJob,
    Job,
    ReproInput,
    ReproJob,
    VMOptions,
    VMRunJob,
)
from kvmlab.vmm.modules import kernel_release

#: Smallest guest memory kvmlab boots, MiB (the initramfs and a kernel need it).
MIN_MEMORY_MB = 64


def _positive(value: float | None, option: str, *, unit: str = "") -> None:
    if value is None:
        return
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{option} {value:g}: must be a positive number{unit}")


def _at_least(value: int | None, least: int, option: str) -> None:
    if value is not None and value < least:
        raise ConfigError(f"{option} {value}: must be at least {least}")


def _file(path: Path | None, what: str) -> None:
    if path is not None:
        checks.input_file(path, what)


def _bzimage(path: Path | None, what: str = "--kernel") -> None:
    """A kernel booted as it is must be an x86 bzImage: said before a KVM
    probe or a workdir, not after."""
    if path is not None:
        checks.input_file(path, what)
        if kernel_release(path) is None:
            raise UserError(f"{what} {path}: not a bootable x86 bzImage (no setup header with a version)")


def _elf(path: Path | None, what: str = "--vmlinux") -> None:
    if path is not None:
        checks.input_file(path, what)
        try:
            with path.open("rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise UserError(f"{what} {path}: cannot read ({e.strerror})") from e
        if magic != b"\x7fELF":
            raise UserError(f"{what} {path}: not an ELF file (give the vmlinux the bzImage was built with)")


def _dir(path: Path | None, what: str) -> None:
    if path is not None:
        checks.input_dir(path, what)


def _text(path: Path | None, what: str) -> None:
    if path is not None:
        checks.read_text(path, what)


def vm_options(vms: VMOptions) -> None:
    _at_least(vms.count, 1, "--count")
    _at_least(vms.cpus, 1, "--cpus")
    _at_least(vms.memory_mb, MIN_MEMORY_MB, "--memory-mb")
    _positive(vms.run_time, "--run-time", unit=" of seconds")
    _text(vms.conf, "--conf")
    root = vms.root
    if root is not None:
        if not root:
            raise ConfigError("--root '': give initramfs or an image recipe")
        if "/" in root or root.endswith((".yaml", ".yml")):
            _text(Path(root), "--root")


#: More candidate builds than this would cost more than the builds minimization saves.
MAX_MINIMIZE_BUILDS = 20


def build_options(build: BuildOptions, *, kernel: Path | None, kernel_config_describes: bool = False) -> None:
    """``kernel_config_describes``: with ``--kernel``, ``--kernel-config`` is
    the booted kernel's own .config (repro checks a reproducer's needs
    against it) rather than the base of a build."""
    if kernel is not None:
        # A bzImage is booted as it is: options that shape a build would be ignored.
        shaping: list[tuple[object, str]] = [(build.config, "--config"), (build.compiler, "--compiler")]
        if not kernel_config_describes:
            shaping.insert(0, (build.kernel_config, "--kernel-config"))
        for given, option in shaping:
            if given:
                raise UserError(f"{option} is for building a kernel (--tree): --kernel {kernel} is booted "
                                "as it is")
    for name in build.config:
        if not name.strip() or not all(c.isalnum() or c in "-_." for c in name.strip()):
            raise ConfigError(f"--config {','.join(build.config)}: {name!r} is not a fragment name")
    if build.kernel_config is not None:
        checks.read_text(build.kernel_config, "--kernel-config", empty_ok=False)
    if not 0 <= build.minimize_builds <= MAX_MINIMIZE_BUILDS:
        raise ConfigError(f"--minimize-builds {build.minimize_builds}: give 0 (rules only) to "
                          f"{MAX_MINIMIZE_BUILDS} kernel builds")
    for p in build.patches:
        checks.read_text(p, "--patch", empty_ok=False)


def reproducer(rin: ReproInput) -> None:
    _file(rin.c, "reproducer")
    _text(rin.syz_prog, "--syz-prog")
    _dir(rin.syz_dir, "--syz-dir")
    _file(rin.syz_execprog, "--syz-execprog")
    _file(rin.syz_executor, "--syz-executor")
    if rin.command is not None and not rin.command.strip():
        raise ConfigError("--command '': give a shell command")


def _outputs(*, workdir: Path | None = None, json: Path | None = None, journal: Path | None = None) -> None:
    if workdir is not None:
        checks.output_dir(workdir, "--workdir")
    if json is not None:
        checks.output_file(json, "--json")
    if journal is not None:
        if journal.exists():
            checks.input_file(journal, "--journal")
        checks.output_file(journal, "--journal")


def repro_job(job: ReproJob) -> None:
    if job.kernel is not None and job.tree is not None:
        raise UserError("give either --kernel bzImage, or --tree with --commit, not both")
    _bzimage(job.kernel)
    _elf(job.vmlinux)
    _dir(job.tree, "--tree")
    _dir(job.bug, "--bug")
    _file(job.expect_report, "--expect-report")
    syz = job.reproducer.syz_prog is not None or job.bug is not None or job.syzbot is not None
    if job.kernel is not None and job.build.kernel_config is not None and not syz:
        raise UserError(f"--kernel-config with --kernel {job.kernel} is only read for a syz program's needs "
                        "(--syz-prog, --bug, --syzbot); this reproducer would ignore it")
    build_options(job.build, kernel=job.kernel, kernel_config_describes=True)
    reproducer(job.reproducer)
    vm_options(job.vms)
    _outputs(workdir=job.workdir, json=job.json)


def bisect_job(job: BisectJob) -> None:
    _dir(job.tree, "--tree")
    _dir(job.bug, "--bug")
    if job.confidence is not None and not 0.5 <= job.confidence < 1:
        raise ConfigError(f"--confidence {job.confidence:g}: must be at least 0.5 and below 1")
    build_options(job.build, kernel=None)
    reproducer(job.reproducer)
    vm_options(job.vms)
    _outputs(workdir=job.workdir, json=job.json, journal=job.journal)


def boot_job(job: BootJob) -> None:
    _bzimage(job.kernel)
    _elf(job.vmlinux)
    _dir(job.tree, "--tree")
    _dir(job.modules, "--modules")
    _dir(job.bug, "--bug")
    _file(job.repro, "--repro")
    _file(job.syz_execprog, "--syz-execprog")
    _file(job.syz_executor, "--syz-executor")
    _positive(job.timeout, "--timeout", unit=" of seconds")
    build_options(job.build, kernel=job.kernel)
    vm_options(job.vms)


def build_job(job: BuildJob) -> None:
    _dir(job.tree, "--tree")
    _at_least(job.jobs, 1, "--jobs")
    _text(job.conf, "--conf")
    build_options(job.build, kernel=None)
    if job.output is not None:
        checks.output_dir(job.output, "--output")
    if job.work_dir is not None:
        checks.output_dir(job.work_dir, "--work-dir")


def vm_run_job(job: VMRunJob) -> None:
    _bzimage(job.kernel)
    _dir(job.modules, "--modules")
    vm_options(job.vms)
    _outputs(workdir=job.workdir)


def demo_job(job: DemoJob) -> None:
    if job.dir is not None:
        checks.output_dir(job.dir, "--dir")
    bisect_job(job.bisect)


def validate(job: Job) -> None:
    """Check ``job`` (see the module docstring); raises the first problem."""
    if isinstance(job, ReproJob):
        repro_job(job)
    elif isinstance(job, BisectJob):
        bisect_job(job)
    elif isinstance(job, BootJob):
        boot_job(job)
    elif isinstance(job, BuildJob):
        build_job(job)
    elif isinstance(job, VMRunJob):
        vm_run_job(job)
    elif isinstance(job, DemoJob):
        demo_job(job)
