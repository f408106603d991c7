"""Running a :class:`~kvmlab.jobs.model.BisectJob`: the bisection engine over
the job's tree with the real tester (builds and VM runs), its workdir (log,
journal, ``meta.json``, ``result.json``, ``report.html``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from kvmlab import checks, oops
from kvmlab.bisect import POLICIES, AdaptivePolicy, BisectResult, GitRepository, LogWriter, bisect
from kvmlab.bisect.journal import Journal
from kvmlab.bisect.policy import Policy
from kvmlab.bisect.result import Outcome, StepRecord
from kvmlab.bisect.timing import Stopwatch
from kvmlab.checks import write_result
from kvmlab.config import cache_dir
from kvmlab.errors import ConfigError, KvmlabError
from kvmlab.jobs import inputs, minimizing
from kvmlab.jobs.model import BisectJob
from kvmlab.jobs.observer import ObservedTester, Observer
from kvmlab.jobs.tester import VMTester
from kvmlab.jobs.validate import validate
from kvmlab.kernel import fixes
from kvmlab.kernel.builder import KernelBuilder
from kvmlab.kernel.config import ConfigRequest, find_data_file
from kvmlab.outcome import RunOutcome
from kvmlab.repro.runner import VMEvent
from kvmlab.show import bisection_report
from kvmlab.show.bisection import RESULT_NAME
from kvmlab.show.meta import JobMeta
from kvmlab.syzbot.model import fix_lines
from kvmlab.vmm.accel import AccelChoice
from kvmlab.vmm.factory import choose_accel
from kvmlab.vmm.resources import SAMPLES_NAME, ResourceSampler

log = logging.getLogger(__name__)


def target_matcher(expect: str | None) -> Callable[[RunOutcome], bool]:
    """``is_target`` for the engine: the bug named by ``expect``, or else the
    first crash seen (the engine tests the bad commit first), matched by the
    crash parser's signatures rather than exact titles."""
    state: dict[str, RunOutcome] = {}

    def is_target(run: RunOutcome) -> bool:
        if not run.crashed or run.title is None:
            return False
        titles = (run.title, *run.alt_titles)
        if expect is not None:
            return any(oops.same_bug(t, expect) for t in titles)
        first = state.setdefault("first", run)
        ref = (first.title or "", *first.alt_titles)
        return any(oops.same_bug(a, b) for a in titles for b in ref)

    return is_target


def bisection_key(job: BisectJob, bad: str, good: str | None) -> str:
    """What identifies a bisection (its default workdir and journal): the
    same job resumes where an interrupted run of it stopped."""
    frags = list(job.build.config) or ["base"]
    extra: list[str | None] = []
    if job.build.kernel_config or job.build.compiler:
        # A full config and a compiler choice are part of what is bisected.
        extra = [inputs.minimized_request(job.build, job.expect)[0].describe(), job.build.compiler]
    assert job.tree is not None
    return hashlib.sha256(json.dumps(
        [str(job.tree.resolve()), bad, good, frags, job.fix, job.policy,
         job.reproducer.describe(), *extra]).encode()).hexdigest()[:16]


def prepared_job(job: BisectJob, observer: Observer) -> BisectJob:
    """``job`` with its bug directory applied, checked for what it must have."""
    job = inputs.with_bug(job, say=observer.say)
    if job.tree is None or job.bad is None:
        raise ConfigError("bisect needs --tree and --bad (or --tree and --bug DIR)")
    if job.policy not in POLICIES:
        raise ConfigError(f"policy {job.policy!r} is not one of {', '.join(sorted(POLICIES))}")
    return job


def run_bisection(job: BisectJob, observer: Observer) -> BisectResult:
    """Run the bisection ``job`` describes; its log goes to ``observer``.
    Leaves ``report.html`` in its workdir (also when it fails)."""
    started = time.time()
    stopwatch = Stopwatch()  # the job's wall time: the log's ``total time``
    validate(job)
    job, fetched = inputs.with_syzbot(job, say=observer.say)
    job = prepared_job(job, observer)
    result = _run(job, observer, started, stopwatch)
    shrunk = result.config_minimized or {}
    smaller = shrunk.get("dropped") or shrunk.get("reproducer", {}).get("minimized")
    if result.outcome is Outcome.NO_REPRO and smaller:
        observer.say("kvmlab: the crash did not reproduce with the minimized config: bisecting again with "
                     f"the full config {job.build.kernel_config} (--no-minimize skips this step)")
        job = dataclasses.replace(job, build=dataclasses.replace(job.build, minimize=False))
        result = _run(job, observer, started, stopwatch)
    if fetched is not None and job.fix and result.culprit:
        assert job.tree is not None
        subject = GitRepository(job.tree).commit_info(result.culprit).subject
        for line in fix_lines(fetched.bug, result.culprit, subject):
            observer.say(line)
    return result


def _run(job: BisectJob, observer: Observer, started: float, stopwatch: Stopwatch) -> BisectResult:
    assert job.tree is not None and job.bad is not None
    cfg = inputs.settings(job.vms)
    repro = inputs.reproducer(job.reproducer, cfg)
    repo = GitRepository(job.tree)
    bad = repo.resolve(job.bad)
    good = repo.resolve(job.good) if job.good else None
    request, minimized = inputs.minimized_request(job.build, job.expect,
                                                  fragments_dir=cfg.kernel.fragments_path)
    workdir = job.workdir or cache_dir() / "bisect" / bisection_key(job, bad, good)
    checks.output_dir(workdir, "workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    journal = job.journal or workdir / "journal.jsonl"
    Journal.check(journal)  # a journal that cannot be resumed stops us before any build
    staged = repro.prepare(workdir)
    builder = inputs.kernel_builder(cfg, job.build)
    if minimized is not None:
        observer.say(f"kvmlab: config {job.build.kernel_config}: minimized for "
                     f"{repr(job.expect) if job.expect else 'a crash not known yet'}: {minimized.summary()}")
    accels: list[AccelChoice] = []
    tree = job.tree

    def tester_for(req: ConfigRequest, kernel: Path | None, runs: str = "runs") -> VMTester:
        # The accelerator is resolved once, with the first kernel built, so
        # that a fallback to TCG is one warning for the whole bisection.
        if not accels:
            accels.append(choose_accel(cfg.vm, kernel))
        return VMTester(tree=tree, builder=builder, request=req, prepared=staged, cfg=cfg,
                        accel=accels[0], workdir=workdir / runs, progress=observer.build_progress,
                        on_vm=on_vm, fixes=known_fixes)

    sampler = ResourceSampler(workdir / SAMPLES_NAME)

    def on_vm(commit: str, ev: VMEvent) -> None:
        sampler.watch(ev.vm, ev.pid)
        observer.vm(commit, ev)

    known_fixes = fixes.load_table(find_data_file(fixes.TABLE_NAME, builder.fragment_dirs))
    oracle = None
    if minimized is not None and job.build.minimize_builds > 0:
        try:
            # The candidates' runs keep their own logs (workdir/minimize/).
            request, oracle = _minimize_with_reproducer(
                job, bad, request, builder, lambda req, kernel: tester_for(req, kernel, "minimize"),
                stopwatch, observer, cfg.vm.count)
        except BaseException:
            sampler.close()
            raise
    observer.building(bad)
    with stopwatch.building():
        first = builder.build(job.tree, bad, request, progress=observer.build_progress)
    kernel = Path(first.artifacts["bzImage"]) if "bzImage" in first.artifacts else None
    policy: Policy = POLICIES[job.policy]
    if isinstance(policy, AdaptivePolicy):
        policy = dataclasses.replace(policy, chunk=cfg.vm.count)
        if job.confidence:
            policy = dataclasses.replace(policy, confidence=job.confidence)
    tester = tester_for(request, kernel)
    accel = accels[0]
    tester.adopt(bad, first)  # its build time counts in the bisection's totals
    logw = LogWriter(observer.say, workdir / f"bisect-{time.strftime('%Y%m%d-%H%M%S')}.log")
    frags = list(job.build.config) or ["base"]
    JobMeta(kind="bisect", tree=str(job.tree.resolve()), bad=bad, good=good, fix=job.fix,
            policy=policy.name, confidence_goal=getattr(policy, "confidence", None), config=frags,
            reproducer=staged.description, expect=job.expect, vms=cfg.vm.count, accel=accel.accel.value,
            journal=str(journal), log=str(logw.path), started=started,
            first_build={"commit": bad, "duration": first.duration, "cached": first.cached,
                         "status": first.status.value, "artifacts": dict(first.artifacts)}).write(workdir)
    observer.say(f"kvmlab: journal {journal}; logs under {workdir}")
    (workdir / RESULT_NAME).unlink(missing_ok=True)  # an earlier attempt's answer is not this one's

    def on_step(rec: StepRecord) -> None:
        observer.step(rec)
        write_report(workdir, None)  # report.html follows the bisection as it goes

    try:
        result = bisect(repo, ObservedTester(tester, observer), bad=bad, good=good, fix=job.fix,
                        policy=policy, is_target=target_matcher(job.expect), journal=journal, log=logw,
                        release_floor=job.release_floor, verify=job.verify, observer=on_step,
                        stopwatch=stopwatch, relevance=job.relevance)
    except KvmlabError:
        write_report(workdir, observer.say)  # what was found before the failure
        raise
    finally:
        tester.close()
        sampler.close()
        logw.close()
    if minimized is not None:
        result.config_minimized = minimized.to_json()
        if oracle is not None:
            result.config_minimized["reproducer"] = oracle.detail
    if job.json is not None:  # the file asked for first: the workdir's copy is the spare
        write_result(job.json, json.dumps(result.to_json(), indent=1))
    write_result(workdir / RESULT_NAME, json.dumps(result.to_json(), indent=1))
    write_report(workdir, observer.say)
    return result


def _minimize_with_reproducer(
        job: BisectJob, bad: str, request: ConfigRequest, builder: KernelBuilder,
        tester_for: Callable[[ConfigRequest, Path | None], VMTester], stopwatch: Stopwatch,
        observer: Observer, vm_slots: int) -> tuple[ConfigRequest, minimizing.Found | None]:
    """The second half of config minimization (:mod:`kvmlab.jobs.minimizing`):
    ``request`` with the least of its full config that still crashes at
    ``bad``, from the cache or found now; what was found (None: not tried)."""
    assert job.tree is not None
    if job.expect is None:
        observer.say("kvmlab: config not minimized with the reproducer: no target title known "
                     "(give --expect, or a bug directory's title)")
        return request, None
    found = minimizing.cached(job.tree, bad, request, job.expect)
    if found is not None:
        observer.say(f"kvmlab: config minimized with the reproducer before, at {bad[:12]}: {found.summary}")
        return found.request(request), found
    observer.say(f"kvmlab: minimizing the config with the reproducer at {bad[:12]}: at most "
                 f"{job.build.minimize_builds} candidate kernels (--minimize-builds 0 skips this step)")
    rules = inputs.minimize_rules(builder.fragment_dirs)
    oracle = minimizing.Oracle(tree=job.tree, commit=bad, request=request, title=job.expect, builder=builder,
                               make_tester=tester_for, is_target=target_matcher(job.expect),
                               vm_slots=vm_slots, stopwatch=stopwatch, say=observer.say,
                               progress=observer.build_progress)
    found = minimizing.minimize(oracle, rules, job.build.minimize_builds)
    observer.say(f"kvmlab: config minimized with the reproducer: {found.summary}")
    return found.request(request), found


def write_report(workdir: Path, say: Callable[[str], None] | None) -> None:
    """Write ``report.html`` (and say where, unless ``say`` is None); a report
    that cannot be made only warns (the bisection's result is in the log and
    the JSON either way)."""
    try:
        path = bisection_report(workdir)
        if say is not None:
            say(f"kvmlab: report {path}")
    except Exception as e:  # a by-product: never lose the bisection over it
        log.warning("report.html not written: %s", e, exc_info=log.isEnabledFor(logging.DEBUG))
