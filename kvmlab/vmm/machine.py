"""A running VM as kvmlab uses it, whatever the backend: the console watcher,
SSH, boot-readiness, running commands and copying files in."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvmlab.errors import InfraError, SSHError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.backend import HasQemuPid, HasTimeScale, Instance, IsRestored
from kvmlab.vmm.console import ConsoleWatcher, Event, EventKind
from kvmlab.vmm.refresh import refresh_command
from kvmlab.vmm.root import GuestRoot
from kvmlab.vmm.ssh import CommandResult, SSHSession

log = logging.getLogger(__name__)

#: How often to retry SSH while a guest boots, in seconds. Small, because
#: the console's ready marker usually says exactly when to try.
_SSH_RETRY = 0.5
#: Share of the boot timeout after which SSH is tried without the ready
#: marker (a marker garbled on the console must not fail a good boot).
_MARKER_GRACE = 0.25


@dataclass(frozen=True)
class BootResult:
    """How a boot went. ``ok`` False is a kernel result, not an error:
    ``reason`` is the crash line, ``no output`` or what else stopped it."""

    ok: bool
    seconds: float
    reason: str = ""
    console_tail: str = ""
    crashed: bool = False
    """True when a kernel crash on the console ended the boot."""
    timed_out: bool = False
    """True when the boot timeout ran out (``reason`` says how far it got)."""


class Machine:
    """One VM of a pool. Owns its instance, console watcher and SSH session."""

    def __init__(
        self,
        index: int,
        instance: Instance,
        root: GuestRoot,
        workdir: Path,
        timeouts: Timeouts,
        *,
        ready_marker: str | None,
        started: float,
        on_output: Callable[[bytes], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.index = index
        self.instance = instance
        self.root = root
        self.workdir = workdir
        if isinstance(instance, HasTimeScale) and instance.time_scale() != 1.0:
            # The accelerator was chosen on the VM's host (TCG there).
            timeouts = timeouts.scaled(instance.time_scale())
        self.timeouts = timeouts
        self.started = started
        self.ready_marker = ready_marker
        self.console_log = workdir / "console.log"
        self.watcher = ConsoleWatcher(
            os.dup(instance.console_fd()),
            self.console_log,
            no_output=timeouts.no_output,
            ready_marker=ready_marker,
            on_output=on_output,
            on_event=on_event,
        )
        self.ssh = SSHSession(instance.connect, root.ssh_user, root.ssh_key, label=instance.name)
        self.boot: BootResult | None = None
        self.refresh_helper = instance.refresh_helper() if isinstance(instance, IsRestored) else None
        """Set for a clone of a saved VM (:mod:`kvmlab.vmm.snapshot`): the
        guest path of the helper that sets its clock and reseeds its RNG."""
        if self.refresh_helper is not None:
            # A clone resumes after its boot: the marker was printed long ago.
            self.ready_marker = None

    @property
    def restored(self) -> bool:
        """The VM is a clone of a saved one, not a fresh boot."""
        return self.refresh_helper is not None

    @property
    def name(self) -> str:
        return self.instance.name

    def qemu_pid(self) -> int | None:
        return self.instance.qemu_pid() if isinstance(self.instance, HasQemuPid) else None

    def _failed(self, reason: str, *, crashed: bool = False, timed_out: bool = False) -> BootResult:
        # Give a crash report a moment to finish printing before we keep it.
        self.watcher.settle(quiet=0.5, limit=5.0 * self.timeouts.scale)
        result = BootResult(
            False, time.monotonic() - self.started, reason, self.watcher.tail(), crashed=crashed,
            timed_out=timed_out,
        )
        self.boot = result
        return result

    def wait_ready(self, cancel: threading.Event | None = None) -> BootResult:
        """Wait until the guest accepts SSH, within the boot timeout.

        A crash or panic on the console, or the VM stopping, ends the wait at
        once as a boot failure carrying the console tail. Setting ``cancel``
        ends the wait too (reason ``cancelled``). A clone of a saved VM is
        ready once its clock is set and its RNG reseeded from the host (an
        InfraError when that fails).
        """
        deadline = self.started + self.timeouts.boot
        stop = {EventKind.CRASH, EventKind.EOF, EventKind.REBOOT}
        ssh_error: str | None = None
        knocked_unmarked = False
        while True:
            if cancel is not None and cancel.is_set():
                return BootResult(False, time.monotonic() - self.started, "cancelled")
            ev = self.watcher.wait_for(stop | {EventKind.READY}, timeout=_SSH_RETRY)
            if ev is not None and ev.kind in stop:
                return self._failed(self._reason(ev), crashed=ev.kind is EventKind.CRASH)
            if not self.instance.alive():
                self.watcher.wait_for({EventKind.EOF}, timeout=2.0)
                crash = self.watcher.crash
                if crash is not None:
                    return self._failed(crash.line.strip(), crashed=True)
                return self._failed("no output" if not self.watcher.text().strip() else "vm stopped")
            left = deadline - time.monotonic()
            if left <= 0:
                return self._failed(self._timeout_reason(ssh_error), timed_out=True)
            # With a ready marker, don't knock before sshd runs: QEMU's user
            # network accepts the host side at once and then retransmits to
            # the guest with back-off, so an early attempt stalls for seconds.
            if self.ready_marker is not None and self.watcher.first(EventKind.READY) is None:
                waited = time.monotonic() - self.started
                # Without the kernel's own lines on this console there is no
                # marker to lose: kvmlab could not see a crash in such a guest
                # (a kernel with its console elsewhere), and its boot must fail.
                if waited < _MARKER_GRACE * self.timeouts.boot or not self.watcher.kernel_seen:
                    continue
                if not knocked_unmarked:
                    # sshd may be up with its marker lost on the console:
                    # knock anyway rather than time the boot out.
                    log.info("%s: no ready marker after %.0fs: trying SSH anyway", self.name, waited)
                    knocked_unmarked = True
            try:
                self.ssh.connect(timeout=min(self.timeouts.ssh_connect, left))
            except SSHError as e:
                log.debug("%s: ssh not up yet: %s", self.name, e)
                ssh_error = str(e)
                continue
            if self.refresh_helper is not None:
                self._refresh(self.refresh_helper)
            result = BootResult(True, time.monotonic() - self.started)
            self.boot = result
            log.info("%s: ready for SSH after %.1fs", self.name, result.seconds)
            return result

    def _timeout_reason(self, ssh_error: str | None) -> str:
        if not self.watcher.text().strip():
            return "no output"
        # A guest that got as far as sshd but never let us in is another
        # story than a kernel stuck on the way: say which one it was.
        if self.ready_marker is not None and self.watcher.first(EventKind.READY) is not None:
            return f"timed out: sshd started, SSH never got in ({ssh_error or 'no attempt finished'})"
        if ssh_error is not None:
            return f"timed out (last SSH attempt: {ssh_error})"
        return "timed out"

    def died_on_host(self, boot: BootResult) -> bool:
        """Whether a failed boot was the host's doing, not the kernel's: the VM
        is gone with no crash, no reboot and no halt of its kernel on the
        console, and it had printed something (QEMU killed or crashed, a
        libvirt domain destroyed under it)."""
        if boot.ok or boot.crashed or boot.timed_out or boot.reason in ("no output", "unexpected reboot"):
            return False
        if self.watcher.halt is not None:  # the guest's own init shut it down: the kernel's side
            return False
        return not self.instance.alive() and self.watcher.crash is None

    def _refresh(self, helper: str) -> None:
        log.debug("%s: SSH up %.1fs after start", self.name, time.monotonic() - self.started)
        res = self.ssh.run(refresh_command(helper), timeout=self.timeouts.ssh_connect * 5)
        if not res.ok:
            raise InfraError(f"{self.name}: setting the clock and reseeding the RNG of the restored guest "
                             f"failed: {res.output.strip() or res.exit_status}")

    def _reason(self, ev: Event) -> str:
        if ev.kind is EventKind.CRASH:
            return ev.line.strip()
        if ev.kind is EventKind.REBOOT:
            return "unexpected reboot"
        halt = self.watcher.halt
        return f"vm stopped ({halt.line.strip()})" if halt is not None else "vm stopped"

    def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run a shell command in the guest (see :meth:`SSHSession.run`)."""
        return self.ssh.run(command, timeout=timeout or self.timeouts.command, on_output=on_output)

    def copy_in(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        self.ssh.copy_in(local, remote, timeout=self.timeouts.copy, mode=mode)

    def close(self) -> None:
        """Stop the VM and the watcher; everything the VM made goes too."""
        self.ssh.close()
        self.instance.close(self.timeouts.shutdown)
        self.watcher.close()
