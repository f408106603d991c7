"""VMTester's bookkeeping, with a fake builder (no build, no VM)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kvmlab.config import Config, VMConfig
from kvmlab.jobs.tester import VMTester
from kvmlab.kernel.config import ConfigRequest
from kvmlab.outcome import BuildOutcome, BuildStatus
from kvmlab.repro.reproducer import StagedRepro
from kvmlab.timeouts import TCG_SCALE
from kvmlab.vmm.accel import AccelChoice
from kvmlab.vmm.spec import Accel


class CacheHitBuilder:
    """Every build is a cache hit (0 s): what the builder answers for the bad
    commit after the command built it to probe the accelerator."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def build(self, tree: Path, commit: str, request: ConfigRequest, **kw: Any) -> BuildOutcome:
        self.calls.append(commit)
        return BuildOutcome(commit, BuildStatus.OK, duration=0.0, cached=True)


def test_the_build_made_before_the_bisection_counts_in_its_build_time(tmp_path: Path) -> None:
    builder = CacheHitBuilder()
    tester = VMTester(tree=tmp_path, builder=builder, request=ConfigRequest.from_fragments(["base"]),  # type: ignore[arg-type]
                      prepared=StagedRepro(files=(), command="true", description="true"), cfg=Config(),
                      accel=AccelChoice(Accel.TCG, TCG_SCALE, "test"), workdir=tmp_path / "runs")
    try:
        first = BuildOutcome("bad", BuildStatus.OK, duration=600.0)
        tester.adopt("bad", first)
        assert tester.build("bad") is first
        assert builder.calls == []
        assert tester.build_seconds == 600.0
        # Adopted once: a later build of it is the builder's again.
        assert tester.build("bad").cached
        assert builder.calls == ["bad"]
        assert tester.build_seconds == 600.0
    finally:
        tester.close()


def test_runs_restore_from_a_template_unless_vm_snapshot_is_off(tmp_path: Path) -> None:
    for mode, want in (("auto", True), ("off", False)):
        cfg = dataclasses.replace(Config(), vm=VMConfig(count=3, snapshot=mode))
        tester = VMTester(tree=tmp_path, builder=CacheHitBuilder(),  # type: ignore[arg-type]
                          request=ConfigRequest.from_fragments(["base"]),
                          prepared=StagedRepro(files=(), command="true", description="true"), cfg=cfg,
                          accel=AccelChoice(Accel.TCG, TCG_SCALE, "test"), workdir=tmp_path / mode)
        try:
            assert (tester.snapshots is not None) is want
            assert tester.vm_slots() == 3
        finally:
            tester.close()
