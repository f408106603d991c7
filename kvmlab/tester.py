"""The real tester behind ``kvmlab bisect``: kernel builds through the
builder's cache, reproducer runs on pools of VMs.

Implements :class:`kvmlab.bisect.Tester`. A run request larger than the pool
size is served by consecutive pools of at most ``vm.count`` VMs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from kvmlab.config import Config
from kvmlab.kernel.builder import KernelBuilder, Progress
from kvmlab.kernel.config import ConfigRequest
from kvmlab.outcome import BuildOutcome, BuildStatus, RunOutcome
from kvmlab.repro.reproducer import Prepared
from kvmlab.repro.runner import ReproOptions, run_repro
from kvmlab.vmm.accel import AccelChoice
from kvmlab.vmm.factory import make_backend, prepare, resolve_root

log = logging.getLogger(__name__)


class VMTester:
    """Build commits of ``tree`` and run ``prepared`` on them in VMs.

    ``accel`` is resolved once by the caller so the TCG warning shows once.
    Each test call's console logs go to ``workdir/<commit>/<call>/``.
    """

    def __init__(
        self,
        *,
        tree: Path,
        builder: KernelBuilder,
        request: ConfigRequest,
        prepared: Prepared,
        cfg: Config,
        accel: AccelChoice,
        workdir: Path,
        progress: Callable[[Progress], None] | None = None,
        on_run: Callable[[RunOutcome], None] | None = None,
    ) -> None:
        self.tree = tree
        self.builder = builder
        self.request = request
        self.prepared = prepared
        self.cfg = cfg
        self.accel = accel
        self.workdir = workdir
        self.progress = progress
        self.on_run = on_run
        self.backend = make_backend(cfg.vm)
        self._calls: dict[str, int] = {}
        self.build_seconds = 0.0
        self.test_seconds = 0.0

    def build(self, commit: str) -> BuildOutcome:
        outcome = self.builder.build(self.tree, commit, self.request, progress=self.progress)
        self.build_seconds += outcome.duration
        return outcome

    def test(self, build: BuildOutcome, runs: int) -> list[RunOutcome]:
        if build.status is not BuildStatus.OK:
            raise ValueError(f"commit {build.commit}: cannot test a failed build")
        kernel = Path(build.artifacts["bzImage"])
        vmlinux = Path(build.artifacts["vmlinux"]) if "vmlinux" in build.artifacts else None
        root = resolve_root(self.cfg.repro.root, kernel)
        prep = prepare(self.cfg, kernel, root, accel=self.accel)
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
            )
            self.test_seconds += result.wall
            outcomes.extend(result.outcomes)
        return outcomes
