"""The VM of one session: started in the session's directory on a free port,
its console shown as it comes, its crashes flagged and saved, the guest set
up (shared directories mounted, a reproducer staged), a gdbstub opened on
demand, and torn down with nothing left.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvmlab import oops
from kvmlab.errors import InfraError, KvmlabError, SSHError, UserError
from kvmlab.repro.reproducer import GUEST_DIR, StagedRepro
from kvmlab.session.store import SessionDir
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.backend import Backend, HasConsoleInput, HasLocalSSHPort, HasMonitor
from kvmlab.vmm.console import Event, EventKind
from kvmlab.vmm.machine import BootResult, Machine
from kvmlab.vmm.pool import validate_spec
from kvmlab.vmm.ports import PortAllocator
from kvmlab.vmm.spec import VMSpec
from kvmlab.vmm.ssh import Endpoint

log = logging.getLogger(__name__)

#: Start attempts when QEMU loses the race for its SSH port to another process.
_PORT_TRIES = 5
#: Seconds a monitor command may take (gdbserver, info registers...).
MONITOR_TIMEOUT = 10.0


@dataclass(frozen=True)
class Crash:
    """A crash seen on the console: its title and where its report was saved."""

    title: str
    report: Path


@dataclass(frozen=True)
class MountPoint:
    """A :class:`~kvmlab.vmm.spec.Share` and where the guest mounts it."""

    tag: str
    guest_dir: str


def mount_command(m: MountPoint) -> str:
    """The guest's command that mounts a 9p share."""
    d = shlex.quote(m.guest_dir)
    return f"mkdir -p {d} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {m.tag} {d}"


class SessionVM:
    """One VM, owned by one session (see :mod:`kvmlab.session`).

    ``on_output`` gets the raw console bytes as they arrive; ``on_crash`` is
    called once per crash, after its report has printed and been saved (both
    from background threads).
    """

    def __init__(
        self,
        sdir: SessionDir,
        spec: VMSpec,
        backend: Backend,
        timeouts: Timeouts,
        *,
        ready_marker: str | None,
        vmlinux: Path | None,
        on_output: Callable[[bytes], None] | None = None,
        on_crash: Callable[[Crash], None] | None = None,
    ) -> None:
        self.sdir = sdir
        self.spec = spec
        self.backend = backend
        self.timeouts = timeouts
        self.ready_marker = ready_marker
        self.vmlinux = vmlinux
        self._on_output = on_output
        self._on_crash = on_crash
        self._ports = PortAllocator()
        self._machine: Machine | None = None
        self._machine_set = threading.Event()
        self._lock = threading.Lock()
        self._crashes: list[Crash] = []
        self._flagging = False
        self._consumed = 0
        self._flaggers: list[threading.Thread] = []
        self._closed = False

    # -- start -----------------------------------------------------------

    @property
    def machine(self) -> Machine:
        if self._machine is None:
            raise InfraError(f"session {self.sdir.name}: the VM is not started")
        return self._machine

    def start(self) -> None:
        """Start the VM (not waiting for it to boot); the backend picks the SSH port."""
        validate_spec(self.spec, self.backend)
        started = time.monotonic()
        inst = self.backend.create(self.spec, workdir=self.sdir.path, index=0)
        self._machine = Machine(0, inst, self.spec.root, self.sdir.path, self.timeouts,
                                ready_marker=self.ready_marker, started=started,
                                on_output=self._on_output, on_event=self._on_event)
        self._machine_set.set()
        ep = self.endpoint()
        self.sdir.update(ssh_host=ep.host if ep else "", ssh_port=ep.port if ep else 0,
                         ssh_user=self.spec.root.ssh_user, ssh_key=str(self.spec.root.ssh_key),
                         qemu_pid=self._machine.qemu_pid() or 0,
                         domain=inst.name if self.backend.name == "libvirt" else "")

    def endpoint(self) -> Endpoint | None:
        """Where ``kvmlab ssh`` reaches the guest with a plain ssh client: the
        instance's forward on this machine's 127.0.0.1 (None for a VM on a
        remote host, reached only through kvmlab's own connection)."""
        inst = self.machine.instance
        if not isinstance(inst, HasLocalSSHPort):
            return None
        return Endpoint("127.0.0.1", inst.local_ssh_port, self.spec.root.ssh_user, self.spec.root.ssh_key)

    def wait_ready(self) -> BootResult:
        """Wait for SSH (see :meth:`Machine.wait_ready`)."""
        res = self.machine.wait_ready()
        if res.ok:
            self.sdir.update(state="running")
        return res

    def alive(self) -> bool:
        return self._machine is not None and self._machine.instance.alive()

    @property
    def console_ended(self) -> bool:
        return self._machine is not None and self._machine.watcher.ended

    # -- crashes -----------------------------------------------------------

    def _on_event(self, ev: Event) -> None:
        if ev.kind is not EventKind.CRASH:
            return
        with self._lock:
            # One report prints several crash lines (the oops, then "Kernel
            # panic"): the first starts the report, the rest belong to it.
            if self._flagging or ev.offset < self._consumed:
                return
            self._flagging = True
        t = threading.Thread(target=self._flag, args=(ev,), name="crash-flag", daemon=True)
        with self._lock:
            # Started before anyone can see it: wait_crash_reports joins it.
            t.start()
            self._flaggers.append(t)

    def _flag(self, ev: Event) -> None:
        try:
            self._machine_set.wait(30.0)
            w = self.machine.watcher
            w.settle(quiet=1.0, limit=10.0 * self.timeouts.scale)
            # From the end of the last report, not from this event's line: a
            # report's first line can share its line with a shell prompt, and
            # then the watcher's first event is only the "Kernel panic" after it.
            with self._lock:
                start = self._consumed
            text = w.text_from(start)
            consumed = w.size()
            rep = oops.parse(text)
            title = rep.title if rep is not None else ev.line.strip()
            body = rep.report if rep is not None else text
            if rep is not None and self.vmlinux is not None and self.vmlinux.is_file():
                with contextlib.suppress(KvmlabError, OSError):
                    body = oops.symbolize(body, self.vmlinux)
            with self._lock:
                n = len(self._crashes) + 1
                path = self.sdir.path / f"report-{n}.txt"
                path.write_text(f"{title}\n\n{body}")
                crash = Crash(title, path)
                self._crashes.append(crash)
                self._consumed = consumed
                titles = tuple(c.title for c in self._crashes)
            self.sdir.update(crashes=titles)
            if self._on_crash is not None:
                self._on_crash(crash)
        except Exception:
            log.exception("session %s: flagging a crash failed", self.sdir.name)
        finally:
            with self._lock:
                self._flagging = False

    @property
    def crashes(self) -> list[Crash]:
        with self._lock:
            return list(self._crashes)

    def crash_seen(self) -> bool:
        """A crash started on the console (its report may still be printing)."""
        return self._machine is not None and self._machine.watcher.crash is not None

    def wait_crash_reports(self, timeout: float | None = None) -> list[Crash]:
        """Wait until every crash seen so far is titled and saved."""
        limit = timeout if timeout is not None else 15.0 * self.timeouts.scale
        deadline = time.monotonic() + limit
        if self.crash_seen():
            # The event reaches us from the reader thread a moment after the line.
            while time.monotonic() < deadline:
                with self._lock:
                    if self._crashes or self._flaggers:
                        break
                time.sleep(0.05)
        with self._lock:
            threads = list(self._flaggers)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.crashes

    # -- the guest -----------------------------------------------------------

    def mount(self, mounts: tuple[MountPoint, ...]) -> list[str]:
        """Mount the shares; the problems, one line each (none: all mounted)."""
        problems = []
        for m in mounts:
            res = self.machine.run(mount_command(m), timeout=self.timeouts.command)
            if res.exit_status != 0:
                why = res.output.strip().splitlines()[-1:] or ["no message"]
                problems.append(f"--share: mounting {m.tag} at {m.guest_dir} failed: {why[0]} "
                                f"(the kernel needs 9p over virtio: the 'share' config fragment)")
        return problems

    def stage(self, prepared: StagedRepro) -> None:
        """Copy a reproducer's files into the guest."""
        self.machine.run(f"mkdir -p {GUEST_DIR}", timeout=self.timeouts.command)
        for host, guest, mode in prepared.files:
            self.machine.copy_in(host, guest, mode=mode)

    def console_write(self, data: bytes) -> None:
        inst = self.machine.instance
        if not isinstance(inst, HasConsoleInput):
            raise InfraError(f"the {self.backend.name} backend's console takes no input")
        inst.console_write(data)

    def has_monitor(self) -> bool:
        return self._machine is not None and isinstance(self._machine.instance, HasMonitor)

    def monitor(self, command: str) -> str:
        inst = self.machine.instance
        if not isinstance(inst, HasMonitor):
            raise InfraError(f"the {self.backend.name} backend has no monitor")
        return inst.monitor(command, timeout=MONITOR_TIMEOUT)

    def open_gdbstub(self) -> int:
        """Open QEMU's gdbstub on a free 127.0.0.1 port (through the monitor,
        so it works the same for a libvirt domain); returns the port."""
        if not isinstance(self.machine.instance, HasLocalSSHPort):
            # A VM on a remote host: its QEMU would listen on that host's
            # 127.0.0.1, and the printed gdb command would reach nothing here.
            raise UserError(f"session {self.sdir.name}: --gdb needs a VM on this machine (the qemu "
                            "backend or a local libvirt): the gdbstub listens on its host's 127.0.0.1")
        out = ""
        for _ in range(_PORT_TRIES):
            port = self._ports.reserve()
            out = self.monitor(f"gdbserver tcp:127.0.0.1:{port}")
            if "Waiting for gdb connection" in out:
                self.sdir.update(gdb_port=port)
                return port
            self._ports.release(port)
        raise InfraError(f"session {self.sdir.name}: QEMU could not open a gdbstub: {out.strip()}")

    # -- the end -----------------------------------------------------------

    def close(self, *, sync: bool = False) -> None:
        """Stop the VM; ``sync`` first flushes the guest's disk writes (a kept
        disk). Idempotent."""
        if self._closed:
            return
        self._closed = True
        m = self._machine
        if m is None:
            return
        if sync and m.instance.alive() and m.boot is not None and m.boot.ok:
            try:
                m.run("sync", timeout=self.timeouts.ssh_connect * 5)
            except SSHError as e:
                log.warning("session %s: could not sync the guest's disk: %s", self.sdir.name, e)
        m.close()
