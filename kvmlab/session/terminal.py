"""The person's terminal during ``kvmlab boot``: raw mode that is always
undone, QEMU's Ctrl-A escape, and a small line editor for the monitor.

The escape (as in QEMU's ``-serial mon:stdio``)::

    Ctrl-A x   quit: stop the VM and end the session
    Ctrl-A c   switch between the serial console and the QEMU monitor
    Ctrl-A h   help
    Ctrl-A Ctrl-A   send one Ctrl-A to the guest

Any other key after Ctrl-A goes to the guest together with the Ctrl-A.
:class:`EscapeParser` and :class:`LineEditor` are pure: bytes in, actions out.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import termios
import time
import tty
from dataclasses import dataclass
from types import TracebackType
from typing import Any

CTRL_A = b"\x01"

HELP = (
    "Ctrl-A x  quit (stops the VM)",
    "Ctrl-A c  switch between the console and the QEMU monitor",
    "Ctrl-A h  this help",
    "Ctrl-A Ctrl-A  send Ctrl-A to the guest",
)


class Action(enum.Enum):
    SEND = "send"
    """Bytes for whatever has the input (the guest's console, or the monitor)."""
    QUIT = "quit"
    MONITOR = "monitor"
    """Toggle between console and monitor."""
    HELP = "help"


@dataclass(frozen=True)
class Key:
    action: Action
    data: bytes = b""


class EscapeParser:
    """Split typed bytes into data and escape commands; keeps the state of a
    Ctrl-A that ended one read and is completed by the next."""

    def __init__(self) -> None:
        self._pending = False

    def feed(self, data: bytes) -> list[Key]:
        out: list[Key] = []
        plain = bytearray()

        def flush() -> None:
            if plain:
                out.append(Key(Action.SEND, bytes(plain)))
                plain.clear()

        for b in data:
            ch = bytes([b])
            if self._pending:
                self._pending = False
                cmd = {b"x": Action.QUIT, b"X": Action.QUIT, b"c": Action.MONITOR, b"C": Action.MONITOR,
                       b"h": Action.HELP, b"?": Action.HELP}.get(ch)
                if cmd is not None:
                    flush()
                    out.append(Key(cmd))
                elif ch == CTRL_A:
                    plain += CTRL_A
                else:
                    plain += CTRL_A + ch
            elif ch == CTRL_A:
                self._pending = True
            else:
                plain += ch
        flush()
        return out


class LineEditor:
    """Line input for the monitor on a raw terminal: printable characters
    echo, Backspace erases, Ctrl-U clears, Ctrl-C drops the line, Enter ends
    it. Escape sequences (arrow keys) are swallowed: no history."""

    #: Escape-sequence states: none, after ESC, inside ``ESC [ ...`` (CSI).
    _PLAIN, _ESC, _CSI = 0, 1, 2

    def __init__(self) -> None:
        self._line = bytearray()
        self._state = self._PLAIN

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """(bytes to echo on the terminal, lines completed)."""
        echo = bytearray()
        lines: list[str] = []
        for b in data:
            if self._state == self._ESC:
                self._state = self._CSI if b == ord("[") else self._PLAIN
                continue
            if self._state == self._CSI:
                if 0x40 <= b <= 0x7E:  # a CSI sequence's final byte
                    self._state = self._PLAIN
                continue
            if b == 0x1B:
                self._state = self._ESC
            elif b in (0x0D, 0x0A):
                echo += b"\r\n"
                lines.append(self._line.decode(errors="replace"))
                self._line.clear()
            elif b in (0x7F, 0x08):
                if self._line:
                    self._line.pop()
                    echo += b"\b \b"
            elif b == 0x15:  # Ctrl-U
                echo += b"\b \b" * len(self._line)
                self._line.clear()
            elif b == 0x03:  # Ctrl-C
                echo += b"^C\r\n"
                self._line.clear()
                lines.append("")
            elif 0x20 <= b < 0x7F:
                self._line.append(b)
                echo.append(b)
        return bytes(echo), lines


class RawTerminal:
    """Raw mode on ``fd`` for the length of a ``with`` block: every key goes
    to kvmlab as typed (Ctrl-C and Ctrl-Z included), no echo, no output
    processing. The saved attributes come back on any exit from the block —
    including an exception raised by a signal handler (SIGTERM, SIGHUP) —
    and :meth:`restore` may be called early, e.g. before handing the terminal
    to another program. A terminal that went away (hang-up) is not an error."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> RawTerminal:
        self._saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSADRAIN)
        return self

    def restore(self) -> None:
        if self._saved is not None:
            with contextlib.suppress(termios.error, OSError):
                _drain_answers(self.fd)
                # TCSAFLUSH: what was typed for the guest (or a terminal's reply
                # to the guest's cursor query) must not reach the user's shell.
                termios.tcsetattr(self.fd, termios.TCSAFLUSH, self._saved)
            self._saved = None

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.restore()


#: A terminal answers a query (cursor position, device attributes) within
#: milliseconds; input quiet this long means no answer is still on its way.
_QUIET = 0.05
#: At most this long is spent waiting for the input to go quiet.
_DRAIN_MAX = 0.5


def _drain_answers(fd: int) -> None:
    """Read and drop input until it has been quiet for :data:`_QUIET`: the
    terminal's answer to a query the guest sent just before the session
    ended must not reach the person's shell (TCSAFLUSH drops only what has
    already arrived)."""
    deadline = time.monotonic() + _DRAIN_MAX
    while (left := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([fd], [], [], min(_QUIET, left))
        except InterruptedError:
            continue
        if not readable or not os.read(fd, 4096):
            return


def is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
