"""kvmlab.signals: the one place a stop signal becomes an unwinding."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kvmlab import signals

pytestmark = pytest.mark.unit


def test_first_stop_unwinds_and_a_repeat_is_dropped() -> None:
    before = signal.getsignal(signal.SIGTERM)
    signals.reset_stop()
    try:
        with pytest.raises(signals.Terminated) as caught, signals.unwinding():
            os.kill(os.getpid(), signal.SIGTERM)
        assert caught.value.signum == signal.SIGTERM and caught.value.exit_status == 143
        assert signals.stopping()
        # A second signal in a scope entered while unwinding is dropped, not raised.
        with signals.unwinding():
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signals.reset_stop()
    assert signal.getsignal(signal.SIGTERM) == before


def test_drop_after_stop_keeps_a_late_sighup_from_killing_the_teardown() -> None:
    before = signal.getsignal(signal.SIGHUP)
    signals.reset_stop()
    try:
        with pytest.raises(signals.Terminated), signals.unwinding((signal.SIGHUP,), drop_after_stop=True):
            os.kill(os.getpid(), signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) is signals.drop_signal
        os.kill(os.getpid(), signal.SIGHUP)  # the shell's copy: dropped
    finally:
        signal.signal(signal.SIGHUP, before)
        signals.reset_stop()


def test_cleanup_window_drops_and_restores() -> None:
    before = signal.getsignal(signal.SIGINT)
    with signals.cleanup_window():
        os.kill(os.getpid(), signal.SIGINT)  # would be KeyboardInterrupt outside
    assert signal.getsignal(signal.SIGINT) == before


def test_results_acts_on_a_signal_that_another_thread_received() -> None:
    # Python runs a signal's handler in the main thread, and only once that
    # thread runs: a plain Future.result() would hold a Ctrl-C delivered to a
    # worker thread until the worker is done (3 s here).
    ex = ThreadPoolExecutor(max_workers=1)
    inside = threading.Event()

    def work() -> int:
        inside.set()
        time.sleep(3)
        return 1

    fut = ex.submit(work)
    assert inside.wait(5)
    worker = next(t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor"))
    assert worker.ident is not None
    threading.Timer(0.2, signal.pthread_kill, (worker.ident, signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        signals.results([fut])
    assert time.monotonic() - started < 1.5
    ex.shutdown(wait=True)


def test_results_are_in_order_and_the_first_failure_is_raised() -> None:
    with ThreadPoolExecutor(max_workers=3) as ex:
        assert signals.results([ex.submit(lambda v=v: v) for v in (3, 1, 2)]) == [3, 1, 2]

        def boom() -> int:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            signals.results([ex.submit(time.sleep, 1), ex.submit(boom)])
