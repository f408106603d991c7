"""Per-VM qcow2 overlays on top of a base image that is never written."""

from __future__ import annotations

from pathlib import Path

from kvmlab import proc
from kvmlab.errors import MissingFileError


def make_overlay(base: Path, overlay: Path, *, timeout: float = 60.0) -> Path:
    """Create ``overlay`` (qcow2) backed by ``base``; the VM writes only to it."""
    if not base.is_file():
        raise MissingFileError(f"disk image {base}: no such file")
    proc.run(
        [
            "qemu-img", "create", "-q", "-f", "qcow2",
            "-b", str(base.resolve()), "-F", "qcow2", str(overlay),
        ],
        timeout=timeout,
    )
    return overlay
