"""Running a :class:`~kvmlab.jobs.model.VMRunJob`: boot a kernel in a pool of
VMs, run one command over SSH in each, stop them."""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab import exitcodes
from kvmlab.errors import SSHError, UserError
from kvmlab.jobs import inputs
from kvmlab.jobs.guest import vm_setup
from kvmlab.jobs.model import VMRunJob
from kvmlab.jobs.observer import Observer
from kvmlab.jobs.validate import validate
from kvmlab.session.foreground import EXIT_NO_STATUS
from kvmlab.text import counted
from kvmlab.vmm.console import EventKind
from kvmlab.vmm.factory import close_backend, make_backend
from kvmlab.vmm.fleet import Fleet
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.ssh import keeping_status


@dataclass(frozen=True)
class VMRunResult:
    statuses: list[int]
    """Per VM: the exit status kvmlab reports for it (:mod:`kvmlab.exitcodes`):
    the command's own (one in the reserved range as 240), or the reserved
    status of a boot failure, a timeout, a guest that stopped itself."""

    @property
    def status(self) -> int:
        """The command's exit status: the VMs' one when they agree, else the
        first VM's that is not 0."""
        if len(set(self.statuses)) == 1:
            return self.statuses[0]
        return next(s for s in self.statuses if s != 0)


#: Console lines shown for a VM that did not boot, when its console log is
#: not kept (no --workdir).
CONSOLE_LINES = 8


def _last_lines(text: str, n: int) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()][-n:]


def run_vm_command(job: VMRunJob, observer: Observer) -> VMRunResult:
    validate(job)
    if job.kernel is None:
        raise UserError("vm run needs --kernel")
    cfg = inputs.settings(job.vms)
    command = inputs.guest_command(job.command) if job.command else "uname -a"
    prep = vm_setup(cfg, job.kernel, modules_dir=job.modules)
    backend = make_backend(cfg.vm)
    if isinstance(backend, Fleet) and cfg.vm.count > backend.capacity():
        close_backend(backend)
        raise UserError(f"vm.count: {cfg.vm.count} VMs at once, but vm.hosts can run {backend.capacity()}")
    observer.note(f"booting {counted(cfg.vm.count, 'VM')} with {job.kernel} ({cfg.vm.backend}, "
                  f"{prep.accel.accel.value})")

    def say(line: str) -> None:
        if not pool.closed:  # a VM torn down by Ctrl-C or SIGTERM is no news
            observer.say(line)

    def one(m: Machine) -> int:
        boot = m.wait_ready()
        if not boot.ok:
            # The pool's own temp dir goes with it: then the console's last
            # lines are the only trace a reader keeps.
            where = f" (console: {m.console_log})" if job.workdir is not None else ""
            say(f"vm {m.index}: boot failed: {boot.reason}{where}")
            if job.workdir is None:
                for line in _last_lines(boot.console_tail, CONSOLE_LINES):
                    say(f"vm {m.index}: | {line}")
            return exitcodes.PASS_BOOT_FAILED
        observer.note(f"vm {m.index}: ready for SSH in {boot.seconds:.1f}s")
        try:
            res = m.run(keeping_status(command))
        except SSHError as e:
            m.watcher.wait_for({EventKind.HALT, EventKind.REBOOT, EventKind.EOF},
                               timeout=5.0 * m.timeouts.scale)
            if m.watcher.halt is not None:
                say(f"vm {m.index}: the guest shut itself down ({m.watcher.halt.line.strip()})")
                return exitcodes.PASS_GUEST_STOPPED
            say(f"vm {m.index}: {e}")
            return exitcodes.PASS_OURS
        for line in res.output.splitlines():
            say(f"vm {m.index}: {line}")
        if res.timed_out:
            say(f"vm {m.index}: command timed out")
            return exitcodes.PASS_TIMEOUT
        status = res.exit_status
        if status is None or status < 0:
            m.watcher.wait_for({EventKind.HALT, EventKind.REBOOT, EventKind.EOF},
                               timeout=5.0 * m.timeouts.scale)
            if m.watcher.halt is not None:
                say(f"vm {m.index}: the guest shut itself down ({m.watcher.halt.line.strip()})")
                return exitcodes.PASS_GUEST_STOPPED
            say(f"vm {m.index}: the command ended without an exit status (killed by a signal)")
            return EXIT_NO_STATUS
        passed = exitcodes.guest_status(status)
        if passed != status:
            say(f"vm {m.index}: the command exited {status}, in kvmlab's reserved range: counted as {passed}")
        return passed

    pool = Pool(prep.spec, cfg.vm.count, backend=backend, timeouts=prep.timeouts,
                workdir=job.workdir, ready_marker=prep.ready_marker)
    try:
        with pool:
            statuses = pool.map(one)
    finally:
        close_backend(backend)
    return VMRunResult(statuses)
