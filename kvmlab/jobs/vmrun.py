"""Running a :class:`~kvmlab.jobs.model.VMRunJob`: boot a kernel in a pool of
VMs, run one command over SSH in each, stop them."""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab.errors import UserError
from kvmlab.jobs import inputs
from kvmlab.jobs.guest import vm_setup
from kvmlab.jobs.model import VMRunJob
from kvmlab.jobs.observer import Observer
from kvmlab.vmm.factory import close_backend, make_backend
from kvmlab.vmm.fleet import Fleet
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.pool import Pool


@dataclass(frozen=True)
class VMRunResult:
    statuses: list[int | None]
    """Per VM: the command's exit status; None when the VM did not boot or the command timed out."""


def run_vm_command(job: VMRunJob, observer: Observer) -> VMRunResult:
    if job.kernel is None:
        raise UserError("vm run needs --kernel")
    cfg = inputs.settings(job.vms)
    command = inputs.guest_command(job.command) if job.command else "uname -a"
    prep = vm_setup(cfg, job.kernel, modules_dir=job.modules)
    backend = make_backend(cfg.vm)
    if isinstance(backend, Fleet) and cfg.vm.count > backend.capacity():
        close_backend(backend)
        raise UserError(f"vm.count: {cfg.vm.count} VMs at once, but vm.hosts can run {backend.capacity()}")
    observer.note(f"booting {cfg.vm.count} VM(s) with {job.kernel} ({cfg.vm.backend}, "
                  f"{prep.accel.accel.value})")

    def one(m: Machine) -> int | None:
        boot = m.wait_ready()
        if not boot.ok:
            observer.say(f"vm {m.index}: boot failed: {boot.reason} (console: {m.console_log})")
            return None
        observer.note(f"vm {m.index}: ready for SSH in {boot.seconds:.1f}s")
        res = m.run(command)
        for line in res.output.splitlines():
            observer.say(f"vm {m.index}: {line}")
        if res.timed_out:
            observer.say(f"vm {m.index}: command timed out")
            return None
        return res.exit_status

    try:
        with Pool(prep.spec, cfg.vm.count, backend=backend, timeouts=prep.timeouts,
                  workdir=job.workdir, ready_marker=prep.ready_marker) as pool:
            statuses = pool.map(one)
    finally:
        close_backend(backend)
    return VMRunResult(statuses)
