"""The one place a signal that ends kvmlab becomes an unwinding.

SIGTERM (``kill PID``, a CI job's end) and SIGHUP (the terminal went away)
raise :class:`Terminated` in the main thread, the way Ctrl-C raises
KeyboardInterrupt, so every ``finally`` runs: VMs stopped, builds' process
groups killed, temp dirs removed, session records updated. Only the first
such signal of a command unwinds (:func:`first_stop`): handlers are swapped
and restored while nested scopes unwind, and a repeated signal landing in a
restored handler would raise a second exception in the middle of the first
one's cleanup. A cleanup runs inside :func:`cleanup_window`, which drops
these signals (and Ctrl-C) until it is done.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

#: The signals kvmlab turns into an unwinding by default.
STOP_SIGNALS = (signal.SIGTERM,)

#: The longest the main thread sleeps in one wait for other threads. The
#: kernel may hand a process's signal (Ctrl-C, kill PID) to any thread; Python
#: then runs the handler only once the main thread wakes up, so a main thread
#: blocked on a lock until the VMs finish would act on Ctrl-C minutes late.
SIGNAL_POLL = 0.2

_stopping = False


class Terminated(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt, so
    that an ordinary ``except Exception`` does not eat it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal."""
        return 128 + self.signum


def first_stop() -> bool:
    """True for the first stop signal of a command, False for any later one."""
    global _stopping
    if _stopping:
        return False
    _stopping = True
    return True


def stopping() -> bool:
    """Whether a stop signal is unwinding this process."""
    return _stopping


def reset_stop() -> None:
    """A new command in this process (in-process callers, tests): signals count again."""
    global _stopping
    _stopping = False


def drop_signal(signum: int, frame: FrameType | None) -> None:
    """A handler that drops the signal. Better than SIG_IGN while a cleanup
    runs: an ignored signal stays ignored in the programs the cleanup starts,
    and one that arrived just before the switch makes Python print a
    traceback."""


def _unwind(signum: int, frame: FrameType | None) -> None:
    if first_stop():
        raise Terminated(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def unwinding(signums: tuple[int, ...] = STOP_SIGNALS, *, drop_after_stop: bool = False) -> Iterator[None]:
    """While inside, each of ``signums`` raises :class:`Terminated` (once per
    command). On the way out the previous handlers come back, or with
    ``drop_after_stop``, after a stop, a dropping handler (a closed terminal
    sends SIGHUP twice, and SIGHUP's default would kill the teardown that is
    still to run). Outside the main thread nothing changes (Python delivers
    signals there only)."""
    if not _main_thread():
        yield
        return
    old = {s: signal.signal(s, _unwind) for s in signums}
    try:
        yield
    finally:
        after = drop_after_stop and stopping()
        for s, h in old.items():
            signal.signal(s, drop_signal if after else h)


@contextlib.contextmanager
def cleanup_window(
    signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT),
) -> Iterator[None]:
    """Let a cleanup finish: ``signums`` are dropped while inside (main thread only)."""
    if not _main_thread():
        yield
        return
    old = {s: signal.signal(s, drop_signal) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def results(futures: Sequence[Future[T]]) -> list[T]:
    """The futures' results in order, as ``[f.result() for f in futures]``
    but waiting in :data:`SIGNAL_POLL` slices, so that a signal delivered to
    any thread reaches the main thread's handler at once. The first failure
    to happen is raised (the others are not waited for)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=SIGNAL_POLL, return_when=FIRST_EXCEPTION)
        for f in done:
            if not f.cancelled() and f.exception() is not None:
                f.result()  # raises it
    return [f.result() for f in futures]


def join(thread: threading.Thread) -> None:
    """``thread.join()`` in :data:`SIGNAL_POLL` slices (see :func:`results`)."""
    while thread.is_alive():
        thread.join(SIGNAL_POLL)
