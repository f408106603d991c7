"""Kernel builds spread over compile hosts with distcc.

Why distcc and not icecream: kvmlab's builds go through ccache, and distcc
sits behind it as ccache's ``CCACHE_PREFIX`` with nothing else to run: ccache
hashes and looks up locally, and only a miss is preprocessed here and
compiled on a host's ``distccd`` (which needs the same compiler version, as
Debian's ``distcc`` package sets up). icecream needs a scheduler on the
network, ``iceccd`` on every host and a toolchain tarball shipped to them;
its gain (compilers sent along, dynamic scheduling) matters for mixed
fleets, not for a lab of Debian hosts with the same gcc. When a host does
not answer, distcc compiles that object on this machine
(``DISTCC_FALLBACK``) and says so on stderr; kvmlab counts those lines in
the build log and reports them.

A compile host is ``HOST[:PORT][/SLOTS]`` (``kernel.distcc_hosts``): SLOTS is
how many compiles it takes at once, its cores (default
:data:`DEFAULT_SLOTS`); ``make -j`` is the sum of all hosts' slots plus this
machine's cores.
"""

from __future__ import annotations

import contextlib
import re
import socket
from dataclasses import dataclass

from kvmlab.errors import ConfigError

DEFAULT_PORT = 3632
#: Compiles a host takes at once when its entry gives no ``/SLOTS``.
DEFAULT_SLOTS = 4
#: distcc's lines when a compile could not be sent (it then runs here: by
#: default distcc says only why, "ERROR: nonblocking connect to H:P failed";
#: verbose, also "failed to distribute, running locally instead").
_FALLBACK_RE = re.compile(r"^distcc\[(\d+)\] (?:\(dcc_build_somewhere\) Warning: failed to distribute"
                          r"|ERROR: (?:nonblocking )?connect to \S+ failed"
                          r"|ERROR: failed to distribute)", re.M)
_HOST_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?(?:/(?P<slots>\d+))?$")


@dataclass(frozen=True)
class CompileHost:
    host: str
    port: int = DEFAULT_PORT
    slots: int = DEFAULT_SLOTS
    """Compiles at once (its cores)."""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.slots}"


def parse_hosts(entries: tuple[str, ...] | list[str],
                where: str = "kernel.distcc_hosts") -> tuple[CompileHost, ...]:
    """``HOST[:PORT][/SLOTS]`` entries; a bad one is a ConfigError naming it."""
    out = []
    for i, text in enumerate(entries):
        m = _HOST_RE.match(text.strip())
        if m is None:
            raise ConfigError(f"{where}[{i}]: {text!r}: expected HOST[:PORT][/SLOTS]")
        slots = int(m.group("slots") or DEFAULT_SLOTS)
        port = int(m.group("port") or DEFAULT_PORT)
        if slots < 1 or not 0 < port < 65536:
            raise ConfigError(f"{where}[{i}]: {text!r}: slots must be positive and the port 1-65535")
        out.append(CompileHost(m.group("host"), port, slots))
    return tuple(out)


def hosts_env(hosts: tuple[CompileHost, ...], local_slots: int) -> str:
    """``DISTCC_HOSTS``: the compile hosts, then this machine for its own
    share (distcc fills the list in order)."""
    return " ".join([*(str(h) for h in hosts), f"localhost/{local_slots}"])


def job_count(hosts: tuple[CompileHost, ...], local_slots: int) -> int:
    """``make -j``: every host's slots and this machine's."""
    return sum(h.slots for h in hosts) + local_slots


def fallbacks(build_log: str) -> int:
    """Compiles that could not be sent to a host and ran here instead (one
    per distcc process that said so: each compile is its own process)."""
    return len(set(_FALLBACK_RE.findall(build_log)))


def reachable(host: CompileHost, timeout: float = 3.0) -> str | None:
    """None when ``host``'s distccd accepts a connection, else why not."""
    try:
        conn = socket.create_connection((host.host.strip("[]"), host.port), timeout=timeout)
        with contextlib.closing(conn):
            return None
    except OSError as e:
        return e.strerror or str(e)
