"""Several hosts as one place to run VMs: placement by free capacity, and
quarantine of a host that keeps failing.

A :class:`Fleet` is a list of members, each a backend with a capacity (VMs at
once) and a :class:`~kvmlab.vmm.host.Health`. :meth:`Fleet.place` starts a VM
on the usable member with the most free slots (waiting for one when all are
busy). Whoever runs the VMs tells the fleet when one failed because of its
host (:meth:`Fleet.failed`): after ``quarantine_after`` such failures the host
takes no more VMs for the rest of the job (one log line says so), unless it is
the last usable one. A fleet is also a :class:`~kvmlab.vmm.backend.Backend`,
so a :class:`~kvmlab.vmm.pool.Pool` can run on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab.errors import InfraError
from kvmlab.vmm.backend import Backend, Instance, ResolvesAccel, WrappedInstance
from kvmlab.vmm.host import Health
from kvmlab.vmm.spec import VMSpec

log = logging.getLogger(__name__)


class NoUsableHostError(InfraError):
    """Every host of the fleet is quarantined."""


class NoFreeSlotError(InfraError):
    """Every usable host runs as many VMs as it may."""


class PlacementError(InfraError):
    """A host could not start a VM (it counts as that host's failure)."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host


@dataclass
class Member:
    """One host of a fleet."""

    label: str
    backend: Backend
    capacity: int
    health: Health = field(default_factory=Health)
    busy: int = 0

    @property
    def usable(self) -> bool:
        return self.health.quarantined is None

    @property
    def free(self) -> int:
        return self.capacity - self.busy if self.usable else 0


class PlacedInstance(WrappedInstance):
    """An instance on a fleet member; closing it frees the member's slot."""

    def __init__(self, inner: Instance, member: Member, release: Callable[[Member], None]) -> None:
        super().__init__(inner)
        self.member = member
        self._release = release
        self._released = False

    @property
    def host(self) -> str:
        return self.member.label

    def close(self, timeout: float) -> None:
        try:
            self.inner.close(timeout)
        finally:
            if not self._released:
                self._released = True
                self._release(self.member)


class Fleet:
    """See the module docstring. Thread-safe."""

    name = "fleet"

    def __init__(self, members: Sequence[Member], *, quarantine_after: int = 3) -> None:
        if not members:
            raise ValueError("a fleet needs at least one member")
        self.members = list(members)
        self.quarantine_after = quarantine_after
        self._cond = threading.Condition()

    @classmethod
    def single(cls, backend: Backend, capacity: int) -> Fleet:
        """One backend as a fleet (never quarantined: there is nowhere else)."""
        return cls([Member(getattr(backend, "name", "local"), backend, capacity)])

    # -- capacity ---------------------------------------------------------

    def capacity(self) -> int:
        """VMs the usable members may run at once."""
        with self._cond:
            return sum(m.capacity for m in self.members if m.usable)

    def usable(self, avoid: frozenset[str] = frozenset()) -> list[Member]:
        with self._cond:
            return [m for m in self.members if m.usable and m.label not in avoid]

    def _pick(self, avoid: frozenset[str]) -> Member | None:
        usable = [m for m in self.members if m.usable]
        if not usable:
            raise NoUsableHostError("no usable host left: every host is quarantined for this job")
        preferred = [m for m in usable if m.label not in avoid] or usable
        free = [m for m in preferred if m.free > 0]
        if not free:
            return None
        # Most free slots first; the order of the configuration breaks ties.
        return max(free, key=lambda m: (m.free, -self.members.index(m)))

    def _release(self, member: Member) -> None:
        with self._cond:
            member.busy -= 1
            self._cond.notify_all()

    def place(self, spec: VMSpec, *, workdir: Path, index: int, avoid: frozenset[str] = frozenset(),
              wait: float = 0.0) -> PlacedInstance:
        """Start a VM on the usable member with the most free slots, not on
        one of ``avoid`` if another is usable. Waits up to ``wait`` seconds
        for a free slot. A failed start counts against the member and raises
        (the caller may place again)."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                member = self._pick(avoid)
                if member is not None:
                    member.busy += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoFreeSlotError(f"vm {index}: no free slot on any host")
                self._cond.wait(left)
        try:
            inst = member.backend.create(spec, workdir=workdir, index=index)
        except InfraError as e:
            self._release(member)
            self.failed(member.label, f"could not start a VM: {e}")
            raise PlacementError(member.label, str(e)) from e
        except BaseException:
            self._release(member)
            raise
        return PlacedInstance(inst, member, self._release)

    def per_host_accel(self) -> bool:
        """:class:`~kvmlab.vmm.backend.ResolvesAccel`: when every member does."""
        return all(isinstance(m.backend, ResolvesAccel) and m.backend.per_host_accel() for m in self.members)

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> Instance:
        """:class:`~kvmlab.vmm.backend.Backend`: place without waiting; a
        host's failure to start the VM raises as it would on that backend."""
        try:
            return self.place(spec, workdir=workdir, index=index)
        except PlacementError as e:
            raise e.__cause__ or e from None

    # -- health -----------------------------------------------------------

    def failed(self, label: str, why: str) -> None:
        """A VM on ``label`` failed because of the host (an infra result)."""
        with self._cond:
            member = next((m for m in self.members if m.label == label), None)
            if member is None or not member.usable:
                return
            h = member.health
            h.failures += 1
            h.last_failure = why
            others = [m for m in self.members if m.usable and m is not member]
            if h.failures < self.quarantine_after or not others:
                return
            h.quarantined = f"{h.failures} infra failures, the last: {why}"
            self._cond.notify_all()
        log.warning("host %s quarantined for the rest of this job after %d infra failures (last: %s)",
                    label, h.failures, why)

    def close(self) -> None:
        """Close every member's backend that has a ``close``."""
        for m in self.members:
            close = getattr(m.backend, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
