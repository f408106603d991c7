"""Running a :class:`~kvmlab.jobs.model.ReproJob`: build (or take) the kernel,
run the reproducer in a pool of VMs, keep the logs, ``result.json`` and
``report.html`` in the workdir."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kvmlab import checks
from kvmlab.checks import write_result
from kvmlab.config import cache_dir
from kvmlab.errors import InfraError, UserError
from kvmlab.jobs import inputs
from kvmlab.jobs.guest import vm_setup
from kvmlab.jobs.model import ReproJob
from kvmlab.jobs.observer import Observer
from kvmlab.jobs.validate import validate
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus
from kvmlab.repro.runner import ReproOptions, ReproResult, run_line, run_repro, summary_lines
from kvmlab.show import repro_report
from kvmlab.show.meta import JobMeta
from kvmlab.vmm.factory import close_backend, make_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReproRun:
    """What a repro job came to: the runs (None when the kernel did not
    build), or the failed build."""

    result: ReproResult | None
    build: BuildOutcome | None = None
    workdir: Path | None = None

    @property
    def build_failed(self) -> bool:
        return self.build is not None and self.build.status is BuildStatus.FAILED

    def repro_failed(self) -> bool:
        """A reproducer that could not run tested nothing."""
        return self.result is not None and any(o.status is RunStatus.REPRO_FAILED
                                                for o in self.result.outcomes)


def run_reproduction(job: ReproJob, observer: Observer) -> ReproRun:
    """Run the reproduction ``job`` describes; log lines to ``observer``."""
    started = time.time()
    validate(job)
    job = inputs.with_bug(job, say=observer.say)
    cfg = inputs.settings(job.vms)
    repro = inputs.reproducer(job.reproducer, cfg)
    expect = inputs.expected_title(job.expect, job.expect_report)
    workdir = job.workdir or cache_dir() / "runs" / time.strftime("repro-%Y%m%d-%H%M%S")
    checks.output_dir(workdir, "workdir")  # the default one too: a full cache disk stops us here
    workdir.mkdir(parents=True, exist_ok=True)
    staged = repro.prepare(workdir)  # compile / check before anything builds or boots
    vmlinux = job.vmlinux
    frags: list[str] = []
    built: str | None = None
    kernel_config: Path | None = job.build.kernel_config if job.kernel is not None else None
    if job.tree is not None:
        if job.kernel is not None or not job.commit:
            raise UserError("give either --kernel, or --tree with --commit")
        request = inputs.config_request(job.build)
        frags = list(request.fragments)
        observer.building(job.commit)
        builder = KernelBuilder(compiler=job.build.compiler, fragments_dir=cfg.kernel.fragments_path)
        outcome = builder.build(job.tree, job.commit, request, progress=observer.build_progress,
                                argv=sys.argv)
        observer.note(f"kvmlab: kernel {outcome.commit[:12]} ({request.describe()}) built with "
                      f"{outcome.compiler}")
        if outcome.status is BuildStatus.FAILED:
            observer.say(f"kernel build failed at {outcome.commit[:12]}: {outcome.error}")
            return ReproRun(None, outcome, workdir)
        kernel, built = Path(outcome.artifacts["bzImage"]), outcome.commit
        vmlinux = vmlinux or Path(outcome.artifacts["vmlinux"])
        kernel_config = Path(outcome.artifacts["config"])
    elif job.kernel is not None:
        kernel = job.kernel
    else:
        raise UserError("give --kernel bzImage, or --tree and --commit (or --tree and --bug DIR)")
    prep = vm_setup(cfg, kernel)
    opts = ReproOptions(count=cfg.vm.count, run_time=cfg.repro.run_time,
                        stop_when_decided=job.stop_when_decided, expect=expect)
    observer.note(f"reproducing {staged.description} on {kernel} in {opts.count} VMs "
                  f"({cfg.vm.backend}, {prep.accel.accel.value}); logs in {workdir}")
    JobMeta(kind="repro", tree=str(job.tree.resolve()) if job.tree else None, commit=built, config=frags,
            kernel=str(kernel), reproducer=staged.description, expect=expect, vms=opts.count,
            accel=prep.accel.accel.value, started=started).write(workdir)

    def on_run(o: RunOutcome, expected: bool | None) -> None:
        note = " (a different bug)" if expected is False else ""
        observer.say(run_line(o) + note)

    observer.testing(job.commit or "", opts.count)
    backend = make_backend(cfg.vm)
    try:
        result = run_repro(prep.spec, staged, backend=backend, timeouts=prep.timeouts,
                           options=opts, workdir=workdir, ready_marker=prep.ready_marker, vmlinux=vmlinux,
                           on_run=on_run, on_vm=functools.partial(observer.vm, job.commit or ""),
                           kernel_config=kernel_config)
    finally:
        close_backend(backend)
    for line in summary_lines(result):
        observer.say(line)
    if job.json is not None:
        write_result(job.json, json.dumps(result.to_json(), indent=1))
    if result.not_saved:
        raise InfraError(result.not_saved)
    try:
        observer.note(f"kvmlab: report {repro_report(workdir)}")
    except Exception as e:  # a by-product: the result is printed and in result.json
        log.warning("report.html not written: %s", e)
    return ReproRun(result, None, workdir)
