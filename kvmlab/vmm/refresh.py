"""What a guest restored from a snapshot needs before it runs anything: the
host's wall clock and fresh randomness.

A restored clone wakes up with its template's clock (seconds or hours in the
past) and its template's kernel RNG state: two clones would draw the same
"random" numbers, and a reproducer whose crash depends on the kernel's
randomness would crash in every clone or in none. :func:`refresh_command` is
the one command that fixes both, run over SSH as the clone's first command;
it runs a small static helper (``kvmlab/data/guest/kvmlab-refresh.c``,
compiled once per host into kvmlab's cache) that the template carries.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from kvmlab import proc
from kvmlab.errors import HostToolError

#: The helper's source, shipped with kvmlab.
SOURCE = Path(__file__).resolve().parent.parent / "data" / "guest" / "kvmlab-refresh.c"
#: Name of the helper in the guest (under the root's files directory).
NAME = "kvmlab-refresh"
#: Bytes of host randomness given to each clone (the kernel's input pool is 256 bits: twice that).
SEED_BYTES = 64
#: Seconds a compile of the helper may take.
_COMPILE_TIMEOUT = 120.0


def helper_binary(cache: Path) -> Path:
    """The static helper for x86-64 guests, compiled into ``cache`` unless
    already there (keyed by the source's hash). Raises HostToolError when gcc
    or a static libc is missing."""
    source = SOURCE.read_bytes()
    out = cache / f"{NAME}-{hashlib.sha256(source).hexdigest()[:12]}"
    if out.is_file():
        return out
    if shutil.which("gcc") is None:
        raise HostToolError("gcc: not found (needed to build the guest's clock and RNG helper)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}.{threading.get_ident()}")  # others may compile it too
    proc.run(["gcc", "-static", "-O2", "-o", str(tmp), str(SOURCE)], timeout=_COMPILE_TIMEOUT)
    tmp.replace(out)
    return out


def refresh_command(helper: str, *, now_ns: int | None = None, seed: bytes | None = None) -> str:
    """The guest command that sets the clock to the host's (``now_ns``,
    default: now) and reseeds the kernel RNG with ``seed`` (default: fresh
    host randomness). ``helper`` is the helper's path in the guest."""
    ns = time.time_ns() if now_ns is None else now_ns
    data = secrets.token_bytes(SEED_BYTES) if seed is None else seed
    return f"{helper} {ns} {data.hex()}"
