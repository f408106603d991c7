"""Running a :class:`~kvmlab.jobs.model.DemoJob`: make the demo kernel history
(Debian's linux-source-6.1 plus a chain of commits, some of which plant bugs)
and bisect one planted bug end to end, real builds and real VMs. The
bisection itself never reads which commit planted it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kvmlab.bisect import BisectResult
from kvmlab.config import cache_dir
from kvmlab.errors import UserError
from kvmlab.jobs.bisection import run_bisection
from kvmlab.jobs.model import BisectJob, DemoJob
from kvmlab.jobs.observer import Observer
from kvmlab.jobs.validate import validate
from kvmlab.kernel.demo_tree import DemoTree, make_demo_tree

#: The demo's own defaults where the job leaves them open: its reproducers
#: crash at once or not at all, and many small guests share the host's cores
#: when KVM is missing.
DEMO_RUN_TIME = 20.0
DEMO_CPUS = 1
DEMO_MEMORY_MB = 512


@dataclass(frozen=True)
class DemoRun:
    demo: DemoTree
    result: BisectResult
    bug: str = "culprit"
    """Which planted bug was bisected (``culprit``, ``flaky_culprit``)."""

    @property
    def planted(self) -> str:
        """The commit that planted the bug."""
        return str(getattr(self.demo, self.bug))

    @property
    def found(self) -> bool:
        return self.result.culprit == self.planted


def demo_bisect_job(job: DemoJob, demo: DemoTree) -> BisectJob:
    """The bisection of ``job.planted`` in ``demo``, with the job's settings."""
    if job.planted not in demo.reproducers:
        raise UserError(f"demo tree {demo.path} plants no {job.planted!r} bug")
    b = job.bisect
    rin = b.reproducer
    if rin.given() == 0:
        rin = dataclasses.replace(rin, c=Path(demo.reproducers[job.planted]))
    vms = b.vms
    vms = dataclasses.replace(
        vms, run_time=DEMO_RUN_TIME if vms.run_time is None else vms.run_time,
        cpus=DEMO_CPUS if vms.cpus is None else vms.cpus,
        memory_mb=DEMO_MEMORY_MB if vms.memory_mb is None else vms.memory_mb)
    return dataclasses.replace(b, tree=demo.path, bad=b.bad or demo.head, reproducer=rin, vms=vms)


def demo_dir(job: DemoJob) -> Path:
    """Where the job's demo tree is (or will be made)."""
    return job.dir or cache_dir() / "demo" / "linux-demo"


def run_demo(job: DemoJob, observer: Observer) -> DemoRun:
    validate(job)
    dest = demo_dir(job)
    dest.parent.mkdir(parents=True, exist_ok=True)
    demo = make_demo_tree(dest, progress=lambda m: observer.say(f"kvmlab: {m}"))
    result = run_bisection(demo_bisect_job(job, demo), observer)
    return DemoRun(demo, result, job.planted)
