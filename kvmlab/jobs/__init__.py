"""Typed jobs and their runners: one frozen dataclass per task kvmlab runs
(:mod:`kvmlab.jobs.model`), serialisable to YAML/JSON, and the function that
runs each. The command line only translates argv into a job and prints.

- :func:`~kvmlab.jobs.reproduction.run_reproduction` — a :class:`ReproJob`
- :func:`~kvmlab.jobs.bisection.run_bisection` — a :class:`BisectJob`
- :func:`~kvmlab.jobs.demo.run_demo` — a :class:`DemoJob`
- :func:`~kvmlab.jobs.boot.run_boot` — a :class:`BootJob`
- :func:`~kvmlab.jobs.build.run_build` — a :class:`BuildJob`
- :func:`~kvmlab.jobs.vmrun.run_vm_command` — a :class:`VMRunJob`

Runners report through an :class:`~kvmlab.jobs.observer.Observer`.
"""

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
    job_from_mapping,
    job_to_mapping,
    load_job,
)

__all__ = ["BisectJob", "BootJob", "BuildJob", "BuildOptions", "DemoJob", "Job", "ReproInput", "ReproJob",
           "VMOptions", "VMRunJob", "job_from_mapping", "job_to_mapping", "load_job"]
