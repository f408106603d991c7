"""A minimal QMP client: one synchronous command at a time over QEMU's unix
socket, used to reach the human monitor (``human-monitor-command``).

QMP rather than an HMP socket: replies are JSON objects, so where one answer
ends is never guessed from a prompt. Asynchronous events that arrive between
a command and its reply are skipped.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmlab.errors import InfraError

log = logging.getLogger(__name__)


class QMPError(InfraError):
    """The QMP socket could not be reached, or QEMU refused a command."""


class QMPClient:
    """One connection to ``path``; every call takes a timeout in seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self, timeout: float) -> socket.socket:
        if self._sock is not None:
            return self._sock
        deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.path))
            self._sock = sock
            self._read_message(deadline)  # the greeting
            self._exchange({"execute": "qmp_capabilities"}, deadline)
        except (OSError, QMPError) as e:
            self.close()
            raise QMPError(f"qmp {self.path}: {e}") from e
        return sock

    def _read_message(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QMPError(f"qmp {self.path}: no answer in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QMPError(f"qmp {self.path}: no answer in time") from None
            if not chunk:
                raise QMPError(f"qmp {self.path}: connection closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def _exchange(self, request: dict[str, Any], deadline: float) -> Any:
        assert self._sock is not None
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            msg = self._read_message(deadline)
            if "event" in msg:
                log.debug("qmp event: %s", msg.get("event"))
                continue
            if "error" in msg:
                err = msg["error"]
                raise QMPError(f"qmp {request['execute']}: {err.get('desc', err)}")
            return msg.get("return")

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Run a QMP command; returns its ``return`` value."""
        deadline = time.monotonic() + timeout
        self._connect(timeout)
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            return self._exchange(request, deadline)
        except OSError as e:
            self.close()
            raise QMPError(f"qmp {self.path}: {e}") from e

    def hmp(self, command_line: str, *, timeout: float) -> str:
        """Run a human-monitor command; returns its text output."""
        out = self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)
        return str(out or "")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buf = b""


#: Bytes per second a save or a restore may move (QEMU's default, 128 MiB/s,
#: would make a 1 GiB guest's save take seconds for nothing: it is a local copy).
MIGRATION_BANDWIDTH = 8 << 30
#: Seconds between two looks at a migration's progress.
_MIGRATION_POLL = 0.05


def wait_migration(query: Callable[[], dict[str, Any]], *, what: str, timeout: float) -> dict[str, Any]:
    """Poll ``query`` (QMP ``query-migrate``) until the migration completed;
    returns the last answer. Raises QMPError when it failed or did not end
    within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        st = query()
        status = st.get("status")
        if status == "completed":
            return st
        if status in ("failed", "cancelled"):
            raise QMPError(f"{what}: migration {status}: {st.get('error-desc', 'no reason given')}")
        if time.monotonic() > deadline:
            raise QMPError(f"{what}: migration not done after {timeout:.0f}s (status {status})")
        time.sleep(_MIGRATION_POLL)


def incoming_port(query_migrate: dict[str, Any]) -> int | None:
    """The TCP port an incoming migration listens on (``migrate-incoming``
    with port 0), from ``query-migrate``'s answer."""
    for addr in query_migrate.get("socket-address", []) or []:
        if addr.get("type") == "inet" and str(addr.get("port", "")).isdigit():
            return int(addr["port"])
    return None
