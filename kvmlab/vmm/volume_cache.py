"""The host-side cache of content-addressed volumes, as pure functions: names,
leases, and what a garbage collection removes.

A kernel, an initramfs or a base disk image goes up to a host once, into a
volume named by its content (``kvmlab-c-<sha256[:32]>.<kind>``) in the host's
``kvmlab`` pool, and stays there for every later kvmlab process and client
using that host. A volume is complete once its marker ``<name>.ok`` exists
(libvirt cannot rename a volume: whoever creates the volume, an atomic
create, uploads into it and then creates the marker; the others wait for
the marker and reuse the volume).

Each job that uses a cached volume holds a *lease* on it: an empty volume
named with its owner (``kvmlab-<owner>_<job>.lease.<digest>.<kind>``, see
:func:`kvmlab.host_uri.owned_name`), removed when the job ends and reaped
like any volume of a dead owner. A collection (``kvmlab host gc``) never
removes a leased volume; it removes the others used longest ago first until
the cache fits its size, and those unused for longer than its age limit.
Another client's lease is trusted for :data:`LEASE_MAX_AGE` (kvmlab cannot
see whether a process on another machine runs).

A collection and a job that starts meanwhile meet in two steps, so that a
job never uses a volume a collection removes: the collection first marks
the volume doomed (``<name>.gc``, an atomic create), then looks at the leases
again: leased now, it drops the mark and keeps the volume; else it removes
the volume, then the mark. A job first takes its lease, then waits while the
volume is marked doomed, then uses the volume or, when it is gone, uploads
it again. Whichever of the two goes first, the other sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Content volumes: ``kvmlab-c-<digest>.<kind>``.
CONTENT_PREFIX = "kvmlab-c-"
#: Hex digits of the sha256 in a content volume's name.
DIGEST_CHARS = 32
#: The marker of a complete content volume: its name plus this.
DONE_SUFFIX = ".ok"
#: The mark of a content volume a collection is removing: its name plus this.
DOOMED_SUFFIX = ".gc"
#: Seconds after which a doomed mark is stale (its collection was killed).
DOOMED_MAX_AGE = 120.0
#: Seconds another client's lease is trusted (a job longer than this, on a
#: client other than the collecting one, may lose its volumes to a gc).
LEASE_MAX_AGE = 3 * 24 * 3600.0
#: Seconds after which a content volume nobody finished (its uploader was
#: killed) and nobody leases is removed by a collection.
PARTIAL_MAX_AGE = 3600.0
#: Defaults of a collection: bytes the cache may hold, and seconds a volume
#: may go unused.
DEFAULT_MAX_BYTES = 20 * 2**30
DEFAULT_MAX_AGE = 14 * 24 * 3600.0

_CONTENT_RE = re.compile(rf"^{CONTENT_PREFIX}([0-9a-f]{{{DIGEST_CHARS}}})\.([a-z0-9]+)$")
_LEASE_RE = re.compile(rf"^\d+\.lease\.([0-9a-f]{{{DIGEST_CHARS}}})\.([a-z0-9]+)$")


def content_name(digest: str, kind: str) -> str:
    """The shared volume of content ``digest`` (sha256 hex) used as ``kind``."""
    return f"{CONTENT_PREFIX}{digest[:DIGEST_CHARS]}.{kind}"


def done_name(name: str) -> str:
    return name + DONE_SUFFIX


def doomed_name(name: str) -> str:
    return name + DOOMED_SUFFIX


def lease_what(digest: str, kind: str) -> str:
    """The ``what`` of a job's lease on :func:`content_name` (the job's owned
    name is made around it)."""
    return f"lease.{digest[:DIGEST_CHARS]}.{kind}"


def is_content(name: str) -> bool:
    return _CONTENT_RE.match(name) is not None


def leased_content(what: str) -> str | None:
    """The content volume a lease's ``what`` (its owned name's tail) names."""
    m = _LEASE_RE.match(what)
    return f"{CONTENT_PREFIX}{m.group(1)}.{m.group(2)}" if m else None


@dataclass(frozen=True)
class CachedVolume:
    name: str
    size: int
    """Bytes on the host's disk."""
    last_use: float
    """Seconds since the epoch: the later of its last read and last write."""
    done: bool
    """Its marker exists (the upload finished)."""
    leased: bool
    """A live job holds a lease on it."""


def plan_gc(volumes: list[CachedVolume], *, now: float, max_bytes: int, max_age: float) -> list[CachedVolume]:
    """The volumes a collection removes: never a leased one; a partial one
    (no marker) older than :data:`PARTIAL_MAX_AGE`; a complete one unused
    for ``max_age`` seconds; then the complete ones used longest ago until
    the cache holds at most ``max_bytes``."""
    gone: list[CachedVolume] = []
    kept: list[CachedVolume] = []
    for v in volumes:
        if v.leased:
            kept.append(v)
        elif not v.done:
            (gone if now - v.last_use > PARTIAL_MAX_AGE else kept).append(v)
        elif now - v.last_use > max_age:
            gone.append(v)
        else:
            kept.append(v)
    total = sum(v.size for v in kept)
    for v in sorted((v for v in kept if v.done and not v.leased), key=lambda v: v.last_use):
        if total <= max_bytes:
            break
        gone.append(v)
        total -= v.size
    return gone
