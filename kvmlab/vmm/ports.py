"""Free TCP ports on 127.0.0.1 for SSH forwarding."""

from __future__ import annotations

import socket
import threading

from kvmlab.errors import InfraError


class PortExhaustedError(InfraError):
    pass


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
