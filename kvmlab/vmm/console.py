"""Watch a VM's serial console as it streams.

A :class:`ConsoleWatcher` reads the raw console (any readable file
descriptor: QEMU's stdout, or a pipe fed from libvirt's console stream) with
pexpect, writes every byte to the VM's console log, keeps the text in memory,
and records events: the start of a kernel crash, a reboot (a second
``Linux version`` banner), a requested shutdown (the kernel's ``reboot: Power
down`` / ``Restarting system``), a configurable ready marker, silence for longer
than the no-output timeout, and the end of the stream.

Recognising that a crash *started* is all this module does; turning the text
into a title is :mod:`kvmlab.oops`'s job (the raw text is exposed for it).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pexpect.fdpexpect

log = logging.getLogger(__name__)

# The first line of every kind of kernel crash report kvmlab must notice live.
# Anchored at a line start, after the optional printk time stamp and caller
# id (``[    1.234567][  T123]`` / ``[ C0]``).
_CRASH_MARKERS = (
    r"BUG: ",
    r"WARNING: ",
    r"Kernel panic - not syncing",
    r"general protection fault",
    r"KASAN: ",
    r"KMSAN: ",
    r"KCSAN: ",
    r"UBSAN: ",
    r"kernel BUG at ",
    r"Oops: ",
    r"divide error: ",
    r"invalid opcode: ",
    r"stack segment: ",
    r"INFO: task \S.* blocked for more than",
    r"INFO: rcu_(?:sched|preempt|bh) (?:self-)?detected",
    r"rcu: INFO: rcu_(?:sched|preempt|bh) (?:self-)?detected",
    r"unregister_netdevice: waiting for",
    r"unreferenced object 0x",
    r"BUG kmalloc-",
)
_PREFIX = rb"(?:\[ *\d+\.\d+\])?(?:\[ *[TC]\d+\])? ?"
CRASH_RE = re.compile(
    rb"(?m)^" + _PREFIX + rb"(?:" + b"|".join(m.encode() for m in _CRASH_MARKERS) + rb")"
)
BANNER_RE = re.compile(rb"Linux version \d+\.\d+")
#: A kernel console line with its timestamp, from wherever it begins to its
#: newline (it can begin in the middle of a line the guest's userspace wrote).
_KERNEL_LINE_RE = re.compile(rb"\[\s*\d+\.\d+\][^\n]*\n")
#: How far back a ready marker cut by kernel lines is looked for, in bytes.
_READY_LOOKBACK = 4096

#: The kernel's last words when it shuts the machine down on request
#: (kernel/reboot.c: ``reboot(2)``, ``poweroff``, ACPI power button).
HALT_RE = re.compile(
    rb"(?m)^" + _PREFIX + rb"reboot: (?:Power down|Restarting system|System halted|Power off not available)"
)


class EventKind(enum.Enum):
    CRASH = "crash"
    REBOOT = "reboot"
    READY = "ready"
    NO_OUTPUT = "no-output"
    EOF = "eof"
    HALT = "halt"
    """The kernel said it powers off, halts or restarts the machine (on request,
    not after a panic)."""


@dataclass(frozen=True)
class Event:
    kind: EventKind
    offset: int
    """Byte offset in the console text where it happened."""
    at: float
    """time.monotonic() when it was seen."""
    line: str = ""
    """The console line that triggered it (for CRASH, the report's first line)."""


class ConsoleWatcher:
    """Read a console fd in a background thread; see the module docstring.

    The watcher owns ``fd`` and closes it when the stream ends (pass a
    ``os.dup`` of a descriptor someone else also owns).

    ``no_output``: seconds of silence that raise a NO_OUTPUT event (once per
    silence). ``ready_marker``: text that raises READY. ``on_output`` gets
    every chunk of raw console bytes as it arrives (from the reading thread;
    an exception in it is logged, never stops the watcher). The thread ends
    at EOF or :meth:`close`.
    """

    def __init__(
        self,
        fd: int,
        log_path: Path,
        *,
        no_output: float,
        ready_marker: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_output: Callable[[bytes], None] | None = None,
    ) -> None:
        self._fd = fd
        self._on_output = on_output
        self.log_path = log_path
        self._no_output = no_output
        self._on_event = on_event
        self._patterns: list[re.Pattern[bytes]] = [CRASH_RE, BANNER_RE, HALT_RE]
        self._ready = ready_marker.encode() if ready_marker else None
        self._buf = bytearray()
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._closed = False
        self._banners = 0
        self._log = log_path.open("ab", buffering=0)
        self.log_error: str | None = None
        """Why the console log could not be written (a full disk), when it
        could not: the run's evidence is incomplete, and that is the host's
        failure, not the guest's. The console is still watched in memory."""
        self._child = pexpect.fdpexpect.fdspawn(fd, timeout=no_output, maxread=65536)
        self._thread = threading.Thread(target=self._loop, name=f"console:{log_path.name}", daemon=True)
        self._thread.start()

    # -- reading ---------------------------------------------------------

    def _loop(self) -> None:
        # Whole lines are scanned once each, as soon as their newline arrives,
        # so a crash event always carries its complete first line.
        scan_from = 0
        last_data = time.monotonic()
        silence_reported = False
        poll = min(1.0, self._no_output)
        try:
            while not self._closed:
                try:
                    chunk = self._child.read_nonblocking(65536, timeout=poll)
                except pexpect.TIMEOUT:
                    if not silence_reported and time.monotonic() - last_data >= self._no_output:
                        silence_reported = True
                        self._emit(EventKind.NO_OUTPUT, len(self._buf))
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    self._scan(scan_from, len(self._buf))
                    self._emit(EventKind.EOF, len(self._buf))
                    return
                last_data = time.monotonic()
                silence_reported = False
                self._keep(chunk)
                with self._cond:
                    self._buf += chunk
                    end = self._buf.rfind(b"\n") + 1
                if self._on_output is not None:
                    try:
                        self._on_output(chunk)
                    except Exception:
                        log.exception("%s: console output callback failed", self.log_path.name)
                if end > scan_from:
                    self._scan(scan_from, end)
                    scan_from = end
        finally:
            with contextlib.suppress(OSError):
                self._log.close()
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _scan(self, start: int, end: int) -> None:
        if end <= start:
            return
        region = bytes(self._buf[start:end])
        hits: list[tuple[int, int]] = []
        for idx, pattern in enumerate(self._patterns):
            hits.extend((m.start(), idx) for m in pattern.finditer(region))
        ready = self._find_ready(start, end, region) if self._ready is not None else None
        if ready is not None:
            hits.append((ready, len(self._patterns)))
        for pos, idx in sorted(hits):
            offset = start + pos
            line = self._line_at(offset)
            if idx == 0:
                self._emit(EventKind.CRASH, offset, line)
            elif idx == 1:
                self._banners += 1
                if self._banners > 1:
                    self._emit(EventKind.REBOOT, offset, line)
            elif idx == 2:
                self._emit(EventKind.HALT, offset, line)
            else:
                self._ready = None  # once per boot
                self._emit(EventKind.READY, offset, line)

    def _find_ready(self, start: int, end: int, region: bytes) -> int | None:
        """Where the ready marker is in ``region`` (``start``..``end`` of the
        buffer), relative to ``start``, once it is complete.

        The guest's ``echo`` and the kernel's console messages share the
        serial line, and a kernel message can land in the middle of the
        marker (``kvmlab-guest-rea[    6.005102] Not activating ...\r\ndy``,
        seen under TCG): then kernel lines are taken out of the text before
        looking, and the marker may have begun in an earlier region."""
        assert self._ready is not None
        pos = region.find(self._ready)
        if pos >= 0:
            return pos
        with self._cond:
            recent = bytes(self._buf[max(0, start - _READY_LOOKBACK):end])
        if self._ready in _KERNEL_LINE_RE.sub(b"", recent):
            return region.rfind(b"\n", 0, len(region) - 1) + 1  # the line where it ended
        return None

    def _keep(self, chunk: bytes) -> None:
        """Append to the console log; a write that fails (ENOSPC) is recorded
        once in :attr:`log_error` and logging stops (reading does not: the
        guest must not stall on a full pipe)."""
        if self.log_error is not None:
            return
        try:
            view = memoryview(chunk)
            while view:  # unbuffered: a write may be partial, the next one then says why
                view = view[self._log.write(view):]
        except OSError as e:
            self.log_error = f"cannot write the console log {self.log_path}: {e.strerror}"
            log.warning("%s", self.log_error)

    def _line_at(self, offset: int) -> str:
        with self._cond:
            start = self._buf.rfind(b"\n", 0, offset) + 1
            end = self._buf.find(b"\n", offset)
            if end < 0:
                end = len(self._buf)
            return self._buf[start:end].decode(errors="replace").rstrip("\r")

    def _emit(self, kind: EventKind, offset: int, line: str = "") -> None:
        ev = Event(kind, offset, time.monotonic(), line)
        log.debug("%s: %s at %d: %s", self.log_path.name, kind.value, offset, line)
        with self._cond:
            self._events.append(ev)
            self._cond.notify_all()
        if self._on_event is not None:
            self._on_event(ev)

    # -- queries ---------------------------------------------------------

    @property
    def kernel_seen(self) -> bool:
        """The kernel's banner (``Linux version``) has been on this console."""
        return self._banners > 0

    def text(self) -> str:
        """All console text seen so far."""
        with self._cond:
            return self._buf.decode(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        with self._cond:
            return self._buf[-chars:].decode(errors="replace")

    def text_from(self, offset: int) -> str:
        """Console text from the start of the line holding byte ``offset``
        (an event's offset) to now."""
        with self._cond:
            start = self._buf.rfind(b"\n", 0, offset) + 1
            return self._buf[start:].decode(errors="replace")

    def size(self) -> int:
        """Bytes of console seen so far."""
        with self._cond:
            return len(self._buf)

    def events(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def first(self, kind: EventKind) -> Event | None:
        with self._cond:
            return next((e for e in self._events if e.kind is kind), None)

    @property
    def crash(self) -> Event | None:
        """The first crash seen, if any."""
        return self.first(EventKind.CRASH)

    @property
    def halt(self) -> Event | None:
        """The kernel's requested shutdown or restart, if it said so."""
        return self.first(EventKind.HALT)

    @property
    def ended(self) -> bool:
        return self.first(EventKind.EOF) is not None

    def crash_text(self) -> str:
        """Console text from the first crash on ('' when none)."""
        ev = self.crash
        if ev is None:
            return ""
        with self._cond:
            start = self._buf.rfind(b"\n", 0, ev.offset) + 1
            return self._buf[start:].decode(errors="replace")

    def wait_for(self, kinds: set[EventKind], timeout: float) -> Event | None:
        """Block until an event of one of ``kinds`` (seen before or after the
        call) exists, or ``timeout`` seconds pass; returns it or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self._events:
                    if e.kind in kinds:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def settle(self, quiet: float, limit: float) -> None:
        """Wait until the console has been quiet for ``quiet`` seconds or has
        ended (at most ``limit`` seconds), so a crash report is complete."""
        deadline = time.monotonic() + limit
        last = -1
        while time.monotonic() < deadline and not self.ended:
            with self._cond:
                size = len(self._buf)
            if size == last:
                return
            last = size
            time.sleep(min(quiet, max(0.0, deadline - time.monotonic())))

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading (the fd's owner closes the fd) and wait for the thread."""
        self._closed = True
        self._thread.join(timeout)
