"""Running a :class:`~kvmlab.jobs.model.BuildJob`: one kernel build through
the build cache, in a kvmlab-owned worktree."""

from __future__ import annotations

import sys
from collections.abc import Callable

from kvmlab.config import load_config
from kvmlab.errors import ConfigError, UserError
from kvmlab.jobs import inputs
from kvmlab.jobs.model import BuildJob
from kvmlab.jobs.validate import validate
from kvmlab.kernel.builder import Progress
from kvmlab.outcome import BuildOutcome


def run_build(job: BuildJob, progress: Callable[[Progress], None] | None = None) -> BuildOutcome:
    """Build ``job.commit`` of ``job.tree`` (a cache hit when built before)."""
    validate(job)
    if job.tree is None or not job.commit:
        raise UserError("kernel build needs --tree and --commit")
    if job.jobs is not None and job.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {job.jobs}")
    request = inputs.config_request(job.build)
    cfg = load_config(job.conf)
    builder = inputs.kernel_builder(cfg, job.build, work_dir=job.work_dir, jobs=job.jobs)
    return builder.build(job.tree, job.commit, request, out_dir=job.output, progress=progress, argv=sys.argv)
