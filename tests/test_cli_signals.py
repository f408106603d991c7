"""kvmlab started as a background job (SIGINT ignored, as a shell does for
``cmd &``) still stops cleanly on SIGTERM, with one line and exit 143, also
when no VM is running (here: blocked reading its input). The same with VMs
running: tests/test_vmm_real.py::test_kvmlab_in_a_background_job_stops_cleanly_on_sigterm."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, signal_disposition

pytestmark = pytest.mark.unit


def test_sigterm_stops_a_background_kvmlab_with_one_line() -> None:
    # `trap "" INT` + exec: the background-job case, whatever started pytest.
    script = 'trap "" INT; exec "$0" -m kvmlab.cli report /dev/stdin'
    p = subprocess.Popen(["bash", "-c", script, sys.executable], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while signal_disposition(p.pid, signal.SIGTERM) != "caught":  # kvmlab's handler is installed
            assert p.poll() is None and time.monotonic() < deadline, p.communicate(timeout=5)
            time.sleep(0.05)
        assert signal_disposition(p.pid, signal.SIGINT) == "ignored"
        p.send_signal(signal.SIGINT)  # what Ctrl-C would do: nothing, in the background
        time.sleep(0.5)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    assert p.returncode == 143, err
    assert err.strip() == "kvmlab: terminated (SIGTERM); everything it started is stopped", err
