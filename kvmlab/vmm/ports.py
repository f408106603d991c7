"""Free TCP ports on 127.0.0.1 for SSH forwarding by a local QEMU, and the
one way to reach such a port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from kvmlab.errors import InfraError, SSHError

T = TypeVar("T")

#: Start attempts per VM when QEMU loses the race for its SSH port.
PORT_RETRIES = 5


class PortExhaustedError(InfraError):
    pass


class PortInUseError(InfraError):
    """QEMU could not bind the SSH forwarding port (someone took it first)."""


class PortAllocator:
    """Hands out ports on 127.0.0.1 that are free now and not already given
    to another VM by this allocator. QEMU binds a port moments after; a lost
    race shows up as a failed start and the caller retries with another."""

    def __init__(self, low: int = 20000, high: int = 60000) -> None:
        self.low, self.high = low, high
        self._lock = threading.Lock()
        self._handed_out: set[int] = set()

    def _free(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def reserve(self) -> int:
        with self._lock:
            for _ in range(100):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", 0))
                    port = int(s.getsockname()[1])
                if self.low <= port <= self.high and port not in self._handed_out:
                    self._handed_out.add(port)
                    return port
            for port in range(self.low, self.high + 1):
                if port not in self._handed_out and self._free(port):
                    self._handed_out.add(port)
                    return port
        raise PortExhaustedError(
            f"no free TCP port on 127.0.0.1 in {self.low}-{self.high} for SSH forwarding"
        )

    def release(self, port: int) -> None:
        with self._lock:
            self._handed_out.discard(port)

    def start_with_port(self, start: Callable[[int], T], *, what: str) -> T:
        """Call ``start(port)`` with a reserved port, again with another one
        when it raises :class:`PortInUseError` (at most :data:`PORT_RETRIES`
        times). The caller releases the port when the VM is gone."""
        last: Exception | None = None
        for _ in range(PORT_RETRIES):
            port = self.reserve()
            try:
                return start(port)
            except PortInUseError as e:
                self.release(port)
                last = e
            except BaseException:
                self.release(port)
                raise
        raise InfraError(f"{what}: no usable SSH port after {PORT_RETRIES} tries: {last}")


def connect_local(port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` within ``timeout`` seconds."""
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        raise SSHError(f"127.0.0.1:{port}: {e.strerror or e}") from e
