"""Running a :class:`~kvmlab.jobs.model.ReproJob`: build (or take) the kernel,
run the reproducer in a pool of VMs, keep the logs, ``result.json`` and
``report.html`` in the workdir."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import checks
from kvmlab.checks import write_result
from kvmlab.config import Config, cache_dir
from kvmlab.errors import InfraError, UserError
from kvmlab.git import Repo
from kvmlab.jobs import inputs, minimizing
from kvmlab.jobs.guest import vm_setup
from kvmlab.jobs.model import ReproJob
from kvmlab.jobs.observer import Observer
from kvmlab.jobs.validate import validate
from kvmlab.kernel.minimize import Minimized
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome, RunStatus
from kvmlab.repro.patchtest import (
    CONFIDENCE,
    MAX_RUNS,
    PatchStatus,
    PatchVerdict,
    RateStore,
    answered_runs,
    expected_crashes,
    rate_key,
    runs_needed,
    verdict,
)
from kvmlab.repro.reproducer import StagedRepro
from kvmlab.repro.runner import ReproOptions, ReproResult, run_line, run_repro, summary_lines
from kvmlab.show import repro_report
from kvmlab.show.meta import JobMeta
from kvmlab.vmm.factory import close_backend, make_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReproRun:
    """What a repro job came to: the runs (None when the kernel did not
    build), or the failed build; with patches, the patch test's verdict."""

    result: ReproResult | None
    build: BuildOutcome | None = None
    workdir: Path | None = None
    patch: PatchVerdict | None = None
    config_minimized: dict[str, Any] | None = None
    """What config minimization dropped from a full config (result JSON)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.result.to_json() if self.result is not None else {}
        if self.config_minimized is not None:
            data["config_minimized"] = self.config_minimized
        if self.patch is not None:
            data["patch_test"] = self.patch.to_json()
        return data

    @property
    def build_failed(self) -> bool:
        return self.build is not None and self.build.status is BuildStatus.FAILED

    def repro_failed(self) -> bool:
        """A reproducer that could not run tested nothing."""
        return self.result is not None and any(o.status is RunStatus.REPRO_FAILED
                                                for o in self.result.outcomes)


@dataclass(frozen=True)
class _Setup:
    """What every run of one job shares."""

    job: ReproJob
    cfg: Config
    staged: StagedRepro
    expect: str | None
    started: float


def run_reproduction(job: ReproJob, observer: Observer) -> ReproRun:
    """Run the reproduction ``job`` describes; log lines to ``observer``.
    With patches (``job.build.patches``) it is a patch test: see :func:`_patch_test`."""
    started = time.time()
    validate(job)
    job, _ = inputs.with_syzbot(job, say=observer.say)
    job = inputs.with_bug(job, say=observer.say)
    cfg = inputs.settings(job.vms)
    repro = inputs.reproducer(job.reproducer, cfg)
    expect = inputs.expected_title(job.expect, job.expect_report)
    workdir = job.workdir or cache_dir() / "runs" / time.strftime("repro-%Y%m%d-%H%M%S")
    checks.output_dir(workdir, "workdir")  # the default one too: a full cache disk stops us here
    workdir.mkdir(parents=True, exist_ok=True)
    staged = repro.prepare(workdir)  # compile / check before anything builds or boots
    setup = _Setup(job, cfg, staged, expect, started)
    if job.build.patches:
        return _patch_test(setup, workdir, observer)
    done = _reproduce(setup, job.commit, cfg.vm.count, job.stop_when_decided, workdir, observer)
    if done.result is not None and job.tree is not None and job.commit and not job.stop_when_decided:
        _remember_rate(setup, done)
    if job.json is not None and done.result is not None:
        write_result(job.json, json.dumps(done.to_json(), indent=1))
    if done.result is not None and done.result.not_saved:
        raise InfraError(done.result.not_saved)
    return done


def _rate_key(s: _Setup, commit: str) -> str | None:
    """Where the crash rate of ``commit`` with this job's reproducer, config
    and compiler is kept (None: no bug title to count crashes of)."""
    job = s.job
    if s.expect is None or job.tree is None:
        return None
    tree_hash = Repo(job.tree).tree_hash(commit)
    what = "\0".join([s.staged.description, *(_digest(p) for p, _, _ in s.staged.files), s.expect])
    request, _ = inputs.minimized_request(job.build, s.expect, fragments_dir=s.cfg.kernel.fragments_path)
    found = minimizing.cached(job.tree, commit, request, s.expect) if job.build.minimize else None
    if found is not None:
        request = found.request(request)
    return rate_key(tree_hash, what, request.describe(), job.build.compiler or "",
                    s.cfg.repro.run_time)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return str(path)


def _rates() -> RateStore:
    return RateStore(cache_dir() / "rates")


def _remember_rate(s: _Setup, done: ReproRun) -> None:
    """Count an unpatched run's crashes of the bug, for later patch tests."""
    assert done.result is not None and done.build is not None
    key = _rate_key(s, done.build.commit)
    runs = answered_runs(done.result)
    if key is not None and runs:
        _rates().add(key, expected_crashes(done.result), runs)


def _patch_test(s: _Setup, workdir: Path, observer: Observer) -> ReproRun:
    """``#syz test``: the bug's commit with the patches, built and run often
    enough that no crash means gone (the number of runs follows from the bug's
    crash rate on the unpatched commit, measured here first when not known)."""
    job = s.job
    if job.tree is None or not job.commit:
        raise UserError("--patch needs the commit to patch: --tree and --commit (or --bug DIR, --syzbot BUG)")
    if s.expect is None:
        raise UserError("--patch needs the bug's title, to tell it from other crashes: --expect TITLE, "
                        "--expect-report FILE, --bug DIR or --syzbot BUG")
    base = Repo(job.tree).resolve(job.commit)
    names = ", ".join(str(p) for p in job.build.patches)
    patched = inputs.patched_commit(job.tree, base, job.build.patches)
    if patched.commit is None:
        assert patched.failed is not None
        line = f"patch does not apply: {patched.failed}: {patched.failure} (on {base[:12]})"
        observer.say(line)
        return _finish(s, ReproRun(None, None, workdir, PatchVerdict(PatchStatus.NOT_APPLIED, line)))
    key = _rate_key(s, base)
    assert key is not None
    rate = _rates().get(key)
    if rate is None or rate.runs == 0:
        observer.say(f"kvmlab: the bug's crash rate on {base[:12]} is not known here: running the unpatched "
                     f"kernel first ({s.cfg.vm.count} runs)")
        first = _reproduce(s, base, s.cfg.vm.count, False, workdir / "unpatched", observer)
        if first.result is None:
            line = f"cannot test the patch: the unpatched kernel {base[:12]} does not build"
            observer.say(line)
            return _finish(s, ReproRun(None, first.build, workdir, PatchVerdict(PatchStatus.UNDECIDED, line)))
        _remember_rate(s, first)
        rate = _rates().get(key)
    if rate is None or rate.crashed == 0:
        runs = rate.runs if rate else 0
        line = (f"cannot test the patch: unpatched, {base[:12]} did not crash in {runs} runs here "
                f"(the bug does not reproduce, so no crash with the patch would mean nothing)")
        observer.say(line)
        return _finish(s, ReproRun(None, None, workdir, PatchVerdict(PatchStatus.UNPATCHED_OK, line)))
    if job.vms.count is not None:
        count = job.vms.count
        why = "--count"
    else:
        needed = runs_needed(rate.crashed, rate.runs)
        count = needed if needed is not None else MAX_RUNS
        why = (f"unpatched it crashed {rate.crashed}/{rate.runs} runs here: {count} runs without it say gone "
               f"with {100 * CONFIDENCE:g}% confidence" if needed is not None else
               f"unpatched it crashed only {rate.crashed}/{rate.runs} runs here: {count} runs, the most "
               f"kvmlab makes, fall short of {100 * CONFIDENCE:g}% confidence")
    observer.say(f"kvmlab: testing {patched.commit[:12]} = {base[:12]} + {names}: {count} runs ({why})")
    done = _reproduce(s, patched.commit, count, True, workdir / "patched", observer)
    if done.result is None:
        error = done.build.error if done.build is not None else ""
        line = f"the patched kernel does not build: {error}"
        observer.say(line)
        return _finish(s, ReproRun(None, done.build, workdir, PatchVerdict(PatchStatus.BUILD_FAILED, line)))
    v = verdict(done.result, base_crashed=rate.crashed, base_runs=rate.runs)
    observer.say(v.line)
    return _finish(s, ReproRun(done.result, done.build, workdir, v, config_minimized=done.config_minimized))


def _finish(s: _Setup, done: ReproRun) -> ReproRun:
    if s.job.json is not None:
        write_result(s.job.json, json.dumps(done.to_json(), indent=1))
    if done.patch is not None and done.workdir is not None:
        write_result(done.workdir / "patch-test.json", json.dumps(done.patch.to_json(), indent=1) + "\n")
    if done.result is not None and done.result.not_saved:
        raise InfraError(done.result.not_saved)
    return done


def _reproduce(s: _Setup, commit: str | None, count: int, stop_when_decided: bool, workdir: Path,
               observer: Observer) -> ReproRun:
    """Build ``commit`` (or take the job's kernel) and run the reproducer in
    ``count`` VMs; logs, ``report.html`` in ``workdir``."""
    job, cfg, staged, expect = s.job, s.cfg, s.staged, s.expect
    workdir.mkdir(parents=True, exist_ok=True)
    vmlinux = job.vmlinux
    frags: list[str] = []
    built: str | None = None
    kernel_config: Path | None = job.build.kernel_config if job.kernel is not None else None
    build: BuildOutcome | None = None
    minimized: Minimized | None = None
    if job.tree is not None:
        if job.kernel is not None or not commit:
            raise UserError("give either --kernel, or --tree with --commit")
        request, minimized = inputs.minimized_request(job.build, expect,
                                                      fragments_dir=cfg.kernel.fragments_path)
        if minimized is not None:
            observer.say(f"kvmlab: config {job.build.kernel_config}: minimized for "
                         f"{repr(expect) if expect else 'a crash not known yet'}: {minimized.summary()}")
            found = minimizing.cached(job.tree, commit, request, expect)
            if found is not None:
                observer.say(f"kvmlab: config minimized with the reproducer by an earlier bisection of this "
                             f"bug at {commit}: {found.summary}")
                request = found.request(request)
        frags = list(request.fragments)
        observer.building(commit)
        builder = inputs.kernel_builder(cfg, job.build)
        build = builder.build(job.tree, commit, request, progress=observer.build_progress, argv=sys.argv)
        observer.note(f"kvmlab: kernel {build.commit[:12]} ({request.describe()}) built with "
                      f"{build.compiler}")
        if build.status is BuildStatus.FAILED:
            observer.say(f"kernel build failed at {build.commit[:12]}: {build.error}")
            return ReproRun(None, build, workdir, config_minimized=_json(minimized))
        kernel, built = Path(build.artifacts["bzImage"]), build.commit
        vmlinux = vmlinux or Path(build.artifacts["vmlinux"])
        kernel_config = Path(build.artifacts["config"])
    elif job.kernel is not None:
        kernel = job.kernel
    else:
        raise UserError("give --kernel bzImage, or --tree and --commit (or --tree and --bug DIR)")
    prep = vm_setup(cfg, kernel)
    opts = ReproOptions(count=count, run_time=cfg.repro.run_time, stop_when_decided=stop_when_decided,
                        expect=expect)
    observer.note(f"reproducing {staged.description} on {kernel} in {opts.count} VMs "
                  f"({cfg.vm.backend}, {prep.accel.accel.value}); logs in {workdir}")
    JobMeta(kind="repro", tree=str(job.tree.resolve()) if job.tree else None, commit=built, config=frags,
            kernel=str(kernel), reproducer=staged.description, expect=expect, vms=opts.count,
            accel=prep.accel.accel.value, started=s.started).write(workdir)

    def on_run(o: RunOutcome, expected: bool | None) -> None:
        note = " (a different bug)" if expected is False else ""
        observer.say(run_line(o) + note)

    observer.testing(commit or "", opts.count)
    backend = make_backend(cfg.vm)
    try:
        result = run_repro(prep.spec, staged, backend=backend, timeouts=prep.timeouts,
                           options=opts, workdir=workdir, ready_marker=prep.ready_marker, vmlinux=vmlinux,
                           on_run=on_run, on_vm=functools.partial(observer.vm, commit or ""),
                           kernel_config=kernel_config)
    finally:
        close_backend(backend)
    for line in summary_lines(result):
        observer.say(line)
    if result.not_saved:  # no room for result.json: the caller writes --json, then fails
        return ReproRun(result, build, workdir, config_minimized=_json(minimized))
    try:
        observer.note(f"kvmlab: report {repro_report(workdir)}")
    except Exception as e:  # a by-product: the result is printed and in result.json
        log.warning("report.html not written: %s", e)
    return ReproRun(result, build, workdir, config_minimized=_json(minimized))


def _json(minimized: Minimized | None) -> dict[str, Any] | None:
    return minimized.to_json() if minimized is not None else None
