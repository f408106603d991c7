"""A job's guest: the root it boots (kvmlab's initramfs or a Debian disk
image from a recipe) and the VM setup for a kernel."""

from __future__ import annotations

from pathlib import Path

from kvmlab.config import Config
from kvmlab.images.cache import get_root
from kvmlab.vmm.accel import AccelChoice
from kvmlab.vmm.factory import VMSetup, initramfs_root, prepare
from kvmlab.vmm.root import GuestRoot


def resolve_root(name: str, kernel: Path, *, modules_dir: Path | None = None) -> GuestRoot:
    """A guest root by name: ``initramfs`` (built from the host, cached) or an
    image recipe name / path (built by :mod:`kvmlab.images`, cached)."""
    if name == "initramfs":
        return initramfs_root(kernel, modules_dir=modules_dir)
    return get_root(name)


def vm_setup(cfg: Config, kernel: Path, *, accel: AccelChoice | None = None, name: str = "kvmlab",
             modules_dir: Path | None = None, root: GuestRoot | None = None) -> VMSetup:
    """The spec and scaled timeouts to boot ``kernel`` with ``cfg``'s root
    (the accelerator resolved once per host unless given)."""
    if root is None:
        root = resolve_root(cfg.repro.root, kernel, modules_dir=modules_dir)
    return prepare(cfg, kernel, root, name=name, accel=accel)
