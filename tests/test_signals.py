"""kvmlab.signals: the one place a stop signal becomes an unwinding."""

from __future__ import annotations

import os
import signal

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
