"""The real tester behind ``kvmlab bisect``: kernel builds through the
builder's cache, reproducer runs on pools of VMs.

Implements :class:`kvmlab.bisect.Tester`. A run request larger than the pool
size is served by consecutive pools of at most ``vm.count`` VMs. With
``vm.snapshot: auto`` each commit's kernel boots once, as a template, and
every run of it is a clone restored from its saved state
(:mod:`kvmlab.vmm.snapshot`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from kvmlab import signals
from kvmlab.bisect.overlap import Claim, OverlapScheduler, background_capacity
from kvmlab.config import Config, cache_dir
from kvmlab.errors import InfraError
from kvmlab.git import Repo
from kvmlab.jobs.guest import vm_setup
from kvmlab.kernel import relevance
from kvmlab.kernel.builder import KernelBuilder, Progress
from kvmlab.kernel.config import ConfigRequest
from kvmlab.kernel.fixes import BuildFix, build_with_fixes
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome
from kvmlab.repro.reproducer import StagedRepro
from kvmlab.repro.runner import ReproOptions, VMEvent, run_repro
from kvmlab.vmm.accel import AccelChoice
from kvmlab.vmm.factory import close_backend, make_backend
from kvmlab.vmm.snapshot import Snapshots

log = logging.getLogger(__name__)


class VMTester:
    """Build commits of ``tree`` and run ``prepared`` on them in VMs.

    ``accel`` is resolved once by the caller so the TCG warning shows once.
    Each test call's console logs go to ``workdir/<commit>/<call>/``.
    ``on_vm(commit, event)`` hears each VM's state changes (for live views).
    """

    def __init__(
        self,
        *,
        tree: Path,
        builder: KernelBuilder,
        request: ConfigRequest,
        prepared: StagedRepro,
        cfg: Config,
        accel: AccelChoice,
        workdir: Path,
        progress: Callable[[Progress], None] | None = None,
        on_run: Callable[[RunOutcome], None] | None = None,
        on_vm: Callable[[str, VMEvent], None] | None = None,
        fixes: Sequence[BuildFix] = (),
    ) -> None:
        self.tree = tree
        self.fixes = tuple(fixes)
        """Known build fixes tried on a commit that does not build (:mod:`kvmlab.kernel.fixes`)."""
        self.builder = builder
        self.request = request
        self.prepared = prepared
        self.cfg = cfg
        self.accel = accel
        self.workdir = workdir
        self.progress = progress
        self.on_run = on_run
        self.on_vm = on_vm
        self.backend = make_backend(cfg.vm)
        self.snapshots = Snapshots(workdir=workdir / "templates", cache=cache_dir() / "guest-tools") \
            if cfg.vm.snapshot == "auto" else None
        """Per kernel, one template VM that each run is a clone of (``vm.snapshot``)."""
        self._calls: dict[str, int] = {}
        self.build_seconds = 0.0
        self.test_seconds = 0.0
        self._adopted: dict[str, BuildOutcome] = {}
        # Background builds only on the cores the VMs leave free: none on a
        # small machine, so it is never slowed.
        free = (os.cpu_count() or 1) - cfg.vm.count * cfg.vm.cpus
        capacity = background_capacity(free)
        self.prebuilder = Prebuilder(self._background_build, capacity=capacity,
                                     jobs=max(1, free // max(1, capacity)))

    def _background_build(self, commit: str, jobs: int, cancelled: threading.Event) -> BuildOutcome:
        def check(_p: Progress) -> None:
            if cancelled.is_set():
                raise BuildCancelled(commit)

        return self.builder.with_jobs(jobs).build(self.tree, commit, self.request, progress=check)

    def adopt(self, commit: str, outcome: BuildOutcome) -> None:
        """Take a build of ``commit`` the caller made before the bisection
        (the bad commit, built to probe the accelerator): the bisection's own
        build of it is then this one, with its real duration, instead of a
        cache hit that would leave its time out of the totals."""
        self._adopted[commit] = outcome

    def build(self, commit: str) -> BuildOutcome:
        outcome = self._adopted.pop(commit, None) or self.prebuilder.take(commit)
        if outcome is None:
            outcome = self.builder.build(self.tree, commit, self.request, progress=self.progress)
        self.build_seconds += outcome.duration
        if outcome.status is BuildStatus.FAILED and self.fixes:
            first = outcome

            def build(rev: str) -> BuildOutcome:
                if rev == commit:
                    return first
                again = self.builder.build(self.tree, rev, self.request, progress=self.progress)
                self.build_seconds += again.duration
                return again

            outcome = build_with_fixes(Repo(self.tree), commit, build, self.fixes)
        return outcome

    def prebuild(self, commits: Sequence[str]) -> None:
        self.prebuilder.want(commits)

    def build_inputs(self, build: BuildOutcome) -> frozenset[str] | None:
        """The tree files ``build`` read (:class:`kvmlab.bisect.seams.BuildInputs`),
        from its cache entry; None for a build from before kvmlab kept them."""
        path = Path(build.artifacts.get("inputs", ""))
        return relevance.read_inputs(path) if build.artifacts.get("inputs") and path.is_file() else None

    def vm_slots(self) -> int:
        """VMs one test call runs at once (:class:`kvmlab.bisect.timing.PoolSized`)."""
        return self.cfg.vm.count

    def prebuilt(self) -> frozenset[str]:
        return self.prebuilder.ready()

    def close(self) -> None:
        """Cancel background builds and wait for them to stop; release the
        backend's hosts (connections, uploaded volumes)."""
        try:
            self.prebuilder.close()
        finally:
            try:
                if self.snapshots is not None:
                    self.snapshots.close()
            finally:
                close_backend(self.backend)

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        if build.status is not BuildStatus.OK:
            raise ValueError(f"commit {build.commit}: cannot test a failed build")
        if not Path(build.artifacts.get("bzImage", "")).is_file():
            # A journaled build whose files the cache's size limit removed since: build it again.
            log.info("%s: its build is no longer in the cache: building it again", build.commit[:12])
            again = self.builder.build(self.tree, build.commit, self.request, progress=self.progress)
            if again.status is not BuildStatus.OK:
                raise InfraError(f"commit {build.commit[:12]}: built before, but not now: {again.error}")
            build = again
        kernel = Path(build.artifacts["bzImage"])
        vmlinux = Path(build.artifacts["vmlinux"]) if "vmlinux" in build.artifacts else None
        prep = vm_setup(self.cfg, kernel, accel=self.accel)
        outcomes: list[RunOutcome] = []
        while len(outcomes) < runs:
            call = self._calls.get(build.commit, 0)
            self._calls[build.commit] = call + 1
            count = min(self.cfg.vm.count, runs - len(outcomes))
            opts = ReproOptions(count=count, run_time=self.cfg.repro.run_time)
            result = run_repro(
                prep.spec, self.prepared, backend=self.backend, timeouts=prep.timeouts, options=opts,
                workdir=self.workdir / build.commit[:12] / str(call), ready_marker=prep.ready_marker,
                vmlinux=vmlinux, kernel_config=Path(build.artifacts["config"]) if "config" in build.artifacts
                else None,
                on_vm=None if self.on_vm is None else functools.partial(self.on_vm, build.commit),
                snapshots=self.snapshots,
            )
            self.test_seconds += result.wall
            outcomes.extend(result.outcomes)
        return outcomes


class BuildCancelled(Exception):
    """A background build was stopped because it is no longer wanted."""


class Prebuilder:
    """Background builds driven by an :class:`OverlapScheduler`, one thread each.

    ``build(commit, jobs, cancelled)`` builds with ``jobs`` parallel jobs and
    stops (raising) once ``cancelled`` is set. With ``capacity`` 0 nothing is
    ever built in the background.
    """

    def __init__(self, build: Callable[[str, int, threading.Event], BuildOutcome], *, capacity: int,
                 jobs: int) -> None:
        self._build = build
        self.jobs = jobs
        self.sched = OverlapScheduler(capacity)
        self._cond = threading.Condition()
        self._outcomes: dict[str, BuildOutcome] = {}
        self._flags: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    def want(self, commits: Sequence[str]) -> None:
        with self._cond:
            start, cancel = self.sched.want(commits)
            for c in cancel:
                log.info("background build of %s cancelled: no longer likely to be tested", c[:12])
                self._flags[c].set()
            self._start(start)

    def _start(self, commits: Sequence[str]) -> None:
        for c in commits:
            log.info("building %s in the background (%d jobs)", c[:12], self.jobs)
            flag = self._flags[c] = threading.Event()
            t = threading.Thread(target=self._run, args=(c, flag), name=f"prebuild-{c[:12]}", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, commit: str, flag: threading.Event) -> None:
        outcome: BuildOutcome | None = None
        try:
            outcome = self._build(commit, self.jobs, flag)
        except BuildCancelled:
            pass
        except Exception as e:  # the foreground will build it again and report
            log.warning("background build of %s failed on kvmlab's side: %s", commit[:12], e)
        with self._cond:
            if flag.is_set():
                self._cond.notify_all()
                return
            if outcome is not None:
                self._outcomes[commit] = outcome
            self._start(self.sched.finished(commit, ok=outcome is not None))
            self._cond.notify_all()

    def take(self, commit: str) -> BuildOutcome | None:
        """The background build of ``commit`` (waiting for a running one), or
        None when the foreground must build it."""
        with self._cond:
            claim = self.sched.claim(commit)
            while claim is Claim.RUNNING:
                self._cond.wait(signals.SIGNAL_POLL)  # Ctrl-C to another thread: see signals.results
                claim = self.sched.claim(commit)
            return self._outcomes.get(commit) if claim is Claim.READY else None

    def ready(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._outcomes)

    def close(self) -> None:
        with self._cond:
            self.sched.want([])
            for flag in self._flags.values():
                flag.set()
        for t in self._threads:
            signals.join(t)
