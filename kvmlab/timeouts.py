"""All of kvmlab's timeouts in one place, scaled together for slow accelerators."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

#: How much slower a TCG (software-emulated) guest is than a KVM guest, for
#: the purpose of waiting on it. Measured here: a small kernel reaches
#: userspace in ~1 s under TCG against ~0.3 s under KVM; boots with a full
#: distribution differ more.
TCG_SCALE = 4.0


@dataclass(frozen=True)
class Timeouts:
    """Timeouts in seconds, before scaling.

    Use the scaled values only (``timeouts.boot`` etc. already include
    ``scale``); construct with :meth:`scaled` to change the factor.
    """

    boot: float = 60.0
    """From VM start until the guest answers SSH."""
    ssh_connect: float = 3.0
    """One SSH connection attempt (a stalled one is abandoned and retried)."""
    command: float = 300.0
    """Default for one command run in the guest."""
    copy: float = 60.0
    """Copying one file into the guest."""
    shutdown: float = 10.0
    """Graceful stop before a hard kill."""
    no_output: float = 300.0
    """Console silence after which the guest counts as hung."""
    restore: float = 60.0
    """Saving a booted VM's state, or restoring a clone from it."""
    scale: float = 1.0
    """Factor already applied to every field above."""

    def __post_init__(self) -> None:
        # A zero or negative timeout would fail every boot or command at once,
        # and look like the kernel's doing ("boot failed: timed out").
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:  # also NaN
                raise ValueError(f"{f.name}: must be a positive number of seconds, got {value}")

    def scaled(self, factor: float) -> Timeouts:
        """A copy with every timeout multiplied by ``factor`` (relative to now)."""
        if factor <= 0:
            raise ValueError(f"timeout scale must be positive, got {factor}")
        values = {
            f.name: getattr(self, f.name) * factor for f in fields(self) if f.name != "scale"
        }
        return replace(self, scale=self.scale * factor, **values)
