"""A session in the foreground: the serial console on the person's terminal
(or, without a terminal, on stdout), and ``kvmlab boot ... -- CMD`` runs.

Exit statuses (``kvmlab boot``, :mod:`kvmlab.exitcodes`): 0 when the person
quits or the guest powers off; with ``-- CMD`` the command's own status (one
kvmlab reserves as 240, the real one on stderr); and for
what the kernel did: :data:`EXIT_BOOT_FAILED` (no output, stopped before
SSH), :data:`EXIT_CRASH` (a kernel crash, its title on stderr),
:data:`EXIT_TIMEOUT` (``--timeout``), :data:`EXIT_GUEST_STOPPED` (the guest
shut itself down before the command ended).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from kvmlab import exitcodes
from kvmlab.errors import InfraError, KvmlabError, SSHError, UserError
from kvmlab.repro.reproducer import StagedRepro
from kvmlab.session.terminal import HELP, Action, EscapeParser, LineEditor
from kvmlab.session.vm import Crash, MountPoint, SessionVM
from kvmlab.vmm.console import EventKind
from kvmlab.vmm.machine import BootResult
from kvmlab.vmm.ssh import CommandResult, keeping_status

EXIT_BOOT_FAILED = exitcodes.PASS_BOOT_FAILED
EXIT_CRASH = exitcodes.PASS_CRASHED
EXIT_TIMEOUT = exitcodes.PASS_TIMEOUT
EXIT_GUEST_STOPPED = exitcodes.PASS_GUEST_STOPPED
#: What ssh(1) exits with when the remote command reports no status.
EXIT_NO_STATUS = 255

#: Seconds between checks of the VM while nothing is typed.
_POLL = 0.2


class Screen:
    """Where a session writes: the console's bytes and kvmlab's own lines
    (``kvmlab: ...``), from any thread.

    ``raw``: the terminal is in raw mode (lines end in CR LF, kvmlab's lines
    go to the terminal between console lines). Otherwise the console goes to
    ``out`` and kvmlab's lines to ``err``. ``console`` False keeps the console
    off the screen (it is still logged), e.g. while gdb has the terminal.
    """

    def __init__(self, out: int, err: int, *, raw: bool, color: bool, console: bool = True) -> None:
        self.out, self.err = out, err
        self.raw = raw
        self.color = color
        self.show_console = console
        self._lock = threading.Lock()
        self._at_line_start = True

    def _write(self, fd: int, data: bytes) -> None:
        # A terminal that hung up (SIGHUP on the way) must not stop the teardown.
        with contextlib.suppress(OSError):
            while data:
                n = os.write(fd, data)
                data = data[n:]

    def console(self, data: bytes) -> None:
        if not self.show_console or not data:
            return
        with self._lock:
            self._write(self.out, data)
            self._at_line_start = data.endswith(b"\n")

    def note(self, text: str, *, alert: bool = False) -> None:
        """One ``kvmlab: text`` line; ``alert`` highlights it (bold red)."""
        line = f"kvmlab: {text}"
        if alert and self.color:
            line = f"\x1b[1;31m{line}\x1b[0m"
        with self._lock:
            if self.raw:
                lead = b"" if self._at_line_start else b"\r\n"
                self._write(self.out, lead + line.encode() + b"\r\n")
                self._at_line_start = True
            else:
                self._write(self.err, line.encode() + b"\n")

    def raw_off(self) -> None:
        """The session is over and the terminal out of raw mode: plain lines
        from now on, and no more console (the log has the rest)."""
        with self._lock:
            self.show_console = False
            if self.raw and not self._at_line_start:
                self._write(self.out, b"\r\n")
            self.raw = False
            self._at_line_start = True

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        """The console on the screen for the block, and off *before* whatever
        encloses the block restores the terminal: console bytes written to a
        restored terminal could hold a query (the guest shell's ``ESC [6n``)
        whose answer the person's shell would then read as typed input."""
        try:
            yield
        finally:
            self.raw_off()


class ScreenLog(logging.Handler):
    """kvmlab's log records as ``kvmlab:`` lines on a :class:`Screen`: on a raw
    terminal a plain stderr handler would draw staircases and interleave
    mid-line with the console. Progress chatter (INFO) is left out: the
    session says what matters itself."""

    def __init__(self, screen: Screen) -> None:
        super().__init__(level=logging.WARNING)
        self.screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.screen.note(f"{record.levelname.lower()}: {record.getMessage()}",
                             alert=record.levelno >= logging.ERROR)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def logs_on(screen: Screen) -> Iterator[None]:
    """Route the root logger's output to ``screen`` for the block."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [ScreenLog(screen)]
    try:
        yield
    finally:
        root.handlers = saved


def crash_line(crash: Crash) -> str:
    return f"crash: {crash.title}"


@dataclass(frozen=True)
class GuestSetup:
    """What to do in the guest once it answers SSH."""

    mounts: tuple[MountPoint, ...] = ()
    repro: StagedRepro | None = None


class Ending(enum.Enum):
    QUIT = "quit"
    DONE = "command done"
    STOPPED = "the VM stopped"
    BOOT_FAILED = "boot failed"
    GDB_ENDED = "gdb ended"


@dataclass(frozen=True)
class SessionEnd:
    """How a session ended, and kvmlab's exit status for it."""

    ending: Ending
    status: int
    detail: str = ""

    def describe(self) -> str:
        return f"{self.ending.value}: {self.detail}" if self.detail else self.ending.value


def _setup_guest(svm: SessionVM, setup: GuestSetup, screen: Screen) -> list[str]:
    """Mount shares and stage the reproducer; the problems, one line each."""
    problems = svm.mount(setup.mounts)
    if setup.repro is not None:
        try:
            svm.stage(setup.repro)
        except SSHError as e:
            problems.append(f"--repro: could not copy it into the guest: {e}")
        else:
            screen.note(f"{setup.repro.description} staged: {setup.repro.command}")
    return problems


def end_of_stop(svm: SessionVM, ready: bool, boot: BootResult | None) -> SessionEnd:
    """The outcome of a VM that stopped by itself."""
    crashes = svm.wait_crash_reports()
    if crashes and not ready:
        return SessionEnd(Ending.BOOT_FAILED, EXIT_CRASH, crashes[0].title)
    if crashes:
        return SessionEnd(Ending.STOPPED, EXIT_CRASH, f"after a kernel crash: {crashes[0].title}")
    if not ready:
        text = svm.machine.watcher.text().strip()
        return SessionEnd(Ending.BOOT_FAILED, EXIT_BOOT_FAILED, "no output" if not text else "vm stopped")
    return SessionEnd(Ending.STOPPED, 0)


class Foreground:
    """The interactive loop: keys to the console (or the monitor), the VM's
    state watched, the escape obeyed. Runs in the main thread."""

    def __init__(self, svm: SessionVM, screen: Screen, stdin: int, setup: GuestSetup) -> None:
        self.svm = svm
        self.screen = screen
        self.stdin = stdin
        self.setup = setup
        self.parser = EscapeParser()
        self.editor: LineEditor | None = None
        self.ready = threading.Event()
        self.boot: BootResult | None = None
        self._boot_done = threading.Event()
        self._over = threading.Event()

    def _bring_up(self) -> None:
        """Background: wait for SSH, then set the guest up and say so."""
        try:
            boot = self.svm.wait_ready()
            self.boot = boot
            if boot.ok:
                for problem in _setup_guest(self.svm, self.setup, self.screen):
                    self.screen.note(problem, alert=True)
                self.ready.set()
                self.screen.note(f"ssh ready ({boot.seconds:.0f} s): kvmlab ssh {self.svm.sdir.name}")
            elif boot.timed_out and boot.reason != "no output":
                self.screen.note(f"the guest does not answer SSH after {boot.seconds:.0f} s; "
                                 "the console stays open (Ctrl-A x quits)", alert=True)
        except KvmlabError as e:
            if not self._over.is_set():  # a VM torn down under us is no news
                self.screen.note(f"guest setup: {e}", alert=True)
        finally:
            self._boot_done.set()

    def _key(self, data: bytes) -> Ending | None:
        for key in self.parser.feed(data):
            if key.action is Action.QUIT:
                return Ending.QUIT
            if key.action is Action.HELP:
                for line in HELP:
                    self.screen.note(line)
            elif key.action is Action.MONITOR:
                self._toggle_monitor()
            elif self.editor is not None:
                echo, lines = self.editor.feed(key.data)
                self.screen.console(echo)
                for line in lines:
                    self._monitor_line(line)
            else:
                try:
                    self.svm.console_write(key.data)
                except InfraError as e:
                    self.screen.note(f"console input: {e}", alert=True)
        return None

    def _toggle_monitor(self) -> None:
        if self.editor is not None:
            self.editor = None
            self.screen.note("back to the serial console")
            return
        if not self.svm.has_monitor():
            self.screen.note("this backend has no monitor")
            return
        self.editor = LineEditor()
        self.screen.note("QEMU monitor (Ctrl-A c returns to the console)")
        self.screen.console(b"(qemu) ")

    def _monitor_line(self, line: str) -> None:
        if line.strip():
            try:
                out = self.svm.monitor(line.strip())
            except InfraError as e:
                out = f"{e}\n"
            self.screen.console(out.replace("\r\n", "\n").replace("\n", "\r\n").encode())
        self.screen.console(b"(qemu) ")

    def run(self) -> SessionEnd:
        """Until the person quits, the VM stops, or the boot fails with nothing
        on the console."""
        try:
            return self._loop()
        finally:
            self._over.set()

    def _loop(self) -> SessionEnd:
        threading.Thread(target=self._bring_up, name="bring-up", daemon=True).start()
        reading = True
        while True:
            fds = [self.stdin] if reading else []
            try:
                readable, _, _ = select.select(fds, [], [], _POLL)
            except InterruptedError:
                readable = []
            if readable:
                try:
                    data = os.read(self.stdin, 4096)
                except OSError:
                    data = b""
                if not data:
                    reading = False  # no more input (a pipe): the console still shows
                elif self._key(data) is Ending.QUIT:
                    return SessionEnd(Ending.QUIT, 0)
            if self.svm.console_ended or not self.svm.alive():
                self._boot_done.wait(5.0)
                return end_of_stop(self.svm, self.ready.is_set(), self.boot)
            if self._boot_done.is_set() and self.boot is not None and self.boot.reason == "no output":
                return SessionEnd(Ending.BOOT_FAILED, EXIT_BOOT_FAILED, "no output")


def _stopped_itself(svm: SessionVM) -> SessionEnd | None:
    """After a command lost its connection or its status: a crash explains
    it, or the guest shutting itself down (None: neither)."""
    watcher = svm.machine.watcher
    watcher.wait_for({EventKind.CRASH, EventKind.HALT, EventKind.REBOOT}, timeout=5.0 * svm.timeouts.scale)
    if svm.crash_seen():
        crashes = svm.wait_crash_reports()
        return SessionEnd(Ending.STOPPED, EXIT_CRASH, crashes[0].title if crashes else "unknown crash")
    halt = watcher.halt
    if halt is not None or watcher.first(EventKind.REBOOT) is not None:
        said = re.sub(r"^(?:\[[^]]*\])*\s*", "", halt.line.strip()) if halt is not None else "rebooted"
        return SessionEnd(Ending.STOPPED, EXIT_GUEST_STOPPED,
                          f"the guest shut itself down before the command ended ({said})")
    return None


def run_command(svm: SessionVM, command: str, setup: GuestSetup, screen: Screen,
                timeout: float) -> SessionEnd:
    """``-- CMD``: boot, set up, run ``command`` with its output on stdout."""
    boot = svm.wait_ready()
    if not boot.ok:
        crashes = svm.wait_crash_reports()
        if crashes or boot.crashed:
            title = crashes[0].title if crashes else boot.reason
            return SessionEnd(Ending.BOOT_FAILED, EXIT_CRASH, title)
        screen.note(f"console: {svm.sdir.console_log}")
        return SessionEnd(Ending.BOOT_FAILED, EXIT_BOOT_FAILED, boot.reason)
    problems = _setup_guest(svm, setup, screen)
    if problems:
        raise UserError(problems[0])
    result: dict[str, CommandResult | SSHError] = {}

    def out(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(text)
            sys.stdout.flush()

    def go() -> None:
        try:
            result["res"] = svm.machine.run(keeping_status(command), timeout=timeout, on_output=out)
        except SSHError as e:
            result["err"] = e

    runner = threading.Thread(target=go, name="command", daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(_POLL)
        if svm.crash_seen() or svm.console_ended or svm.machine.watcher.halt is not None:
            break
    if not runner.is_alive() and not svm.crash_seen():
        # An oops printed while the command returned: let it finish printing.
        svm.machine.watcher.settle(quiet=0.3, limit=2.0 * svm.timeouts.scale)
    if svm.crash_seen():
        crashes = svm.wait_crash_reports()
        title = crashes[0].title if crashes else "unknown crash"
        return SessionEnd(Ending.STOPPED, EXIT_CRASH, title)
    got = result.get("res")
    if isinstance(got, CommandResult):
        if got.timed_out:
            return SessionEnd(Ending.DONE, EXIT_TIMEOUT, f"{command!r} still running after {timeout:.0f} s")
        status = got.exit_status
        if status is None or status < 0:
            # No status: the guest may be going down under it (`poweroff -f`).
            stopped = _stopped_itself(svm)
            if stopped is not None:
                return stopped
            screen.note("the command ended without an exit status (killed by a signal)", alert=True)
            return SessionEnd(Ending.DONE, EXIT_NO_STATUS, "no exit status")
        passed = exitcodes.guest_status(status)
        if passed != status:
            screen.note(f"the command exited {status}, in kvmlab's reserved range: kvmlab exits "
                        f"{passed}", alert=True)
        return SessionEnd(Ending.DONE, passed, f"exit status {status}")
    # The connection broke: a crash on its way explains it, or the guest
    # shutting itself down (the command was `poweroff`, `reboot -f`...).
    stopped = _stopped_itself(svm)
    if stopped is not None:
        return stopped
    err = result.get("err")
    if not svm.alive():
        raise InfraError("the VM stopped during the command with no crash and no shutdown on its console "
                         f"(console: {svm.sdir.console_log})")
    raise InfraError(f"the command's SSH connection failed: {err}")
