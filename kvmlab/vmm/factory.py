"""From configuration to the pieces of a pool: backend, guest root, spec,
timeouts (with the accelerator resolved and the timeouts scaled)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvmlab.config import Config, VMConfig, cache_dir
from kvmlab.errors import ConfigError, MissingFileError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.accel import AccelChoice, resolve_accel, with_accel
from kvmlab.vmm.backend import Backend, Closeable
from kvmlab.vmm.disk_initrd import VIRTIO_MODULES, build_modules_initrd
from kvmlab.vmm.fleet import Fleet, Member
from kvmlab.vmm.host import Host
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.modules import kernel_release, resolve_modules
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.root import GuestRoot, RootKind
from kvmlab.vmm.sizing import resolve_auto
from kvmlab.vmm.spec import Accel, VMSpec

log = logging.getLogger(__name__)

def _libvirt(cfg: VMConfig) -> Backend:
    if not cfg.hosts:
        return LibvirtBackend(cfg.uri)
    members = [
        Member(host.label, LibvirtBackend(host, owns_host=True), host.capacity, host.health)
        for host in (Host(h.uri, capacity=h.capacity, accel=Accel(h.accel or cfg.accel),
                          cache_max_bytes=int(h.cache_max_gb * 2**30)) for h in cfg.hosts)
    ]
    return Fleet(members, quarantine_after=cfg.quarantine_after)


BACKENDS: dict[str, Callable[[VMConfig], Backend]] = {
    "qemu": lambda cfg: QemuBackend(),
    "libvirt": _libvirt,
}


def make_backend(cfg: VMConfig) -> Backend:
    """The backend ``cfg`` names: QEMU, libvirt on ``vm.uri``, or a
    :class:`~kvmlab.vmm.fleet.Fleet` of the libvirt hosts in ``vm.hosts``
    (connected on first use). Close it with :func:`close_backend`."""
    try:
        factory = BACKENDS[cfg.backend]
    except KeyError:
        raise ConfigError(f"vm.backend: unknown backend {cfg.backend!r}") from None
    return factory(resolve_auto(cfg))


def close_backend(backend: Backend) -> None:
    """Remove what a backend keeps on its hosts (uploaded volumes) and close
    its connections. Hosts also do this at interpreter exit if nobody did."""
    if isinstance(backend, Closeable):
        backend.close()


def initramfs_root(kernel: Path, *, modules_dir: Path | None = None) -> GuestRoot:
    """The initramfs guest root for ``kernel`` (built from the host, cached).
    A disk image root comes from :mod:`kvmlab.images` (``kvmlab.jobs.guest``
    chooses between them)."""
    return build_initramfs(cache_dir() / "initramfs", kernel=kernel, modules_dir=modules_dir)


#: The choice when each lab host resolves its own (``vm.per_host_accel``).
PER_HOST = AccelChoice(Accel.AUTO, 1.0, "chosen on each host (probed there by booting)")


def choose_accel(vm: VMConfig, kernel: Path | None) -> AccelChoice:
    """The accelerator for ``vm.accel`` (``auto``: KVM if booting ``kernel``
    under KVM works on this host, probed once per host; else TCG with every
    timeout scaled). Without a kernel to probe with, ``auto`` is TCG. On lab
    hosts (``vm.per_host_accel``): :data:`PER_HOST`, each host resolves its
    own when a VM starts there, and scales that VM's timeouts."""
    if vm.per_host_accel:
        return PER_HOST
    return resolve_accel(Accel(vm.accel), qemu=vm.qemu, kernel=kernel, cache_dir=cache_dir())


def _disk_initrd(kernel: Path) -> Path | None:
    """An initrd loading the virtio modules, for a modular kernel booting a
    disk image (None when the drivers are built in or there are no modules)."""
    release = kernel_release(kernel)
    if release is None:
        return None
    mods = resolve_modules(Path("/lib/modules", release), VIRTIO_MODULES)
    if not mods.paths:
        return None
    out = cache_dir() / "initrd" / f"virtio-{release}.cpio"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        build_modules_initrd(release, out)
    return out


@dataclass(frozen=True)
class VMSetup:
    """What booting a kernel needs besides a backend: the VM spec, the
    timeouts scaled for the accelerator, and the console's ready marker."""

    spec: VMSpec
    timeouts: Timeouts
    accel: AccelChoice
    ready_marker: str | None


def prepare(cfg: Config, kernel: Path, root: GuestRoot, *, name: str = "kvmlab",
            accel: AccelChoice | None = None) -> VMSetup:
    """Resolve the accelerator (probing KVM once per host for ``auto``) and
    build the VM spec and scaled timeouts."""
    if not kernel.is_file():
        raise MissingFileError(f"kernel {kernel}: no such file")
    if accel is None:
        accel = choose_accel(cfg.vm, kernel)
    spec = VMSpec(
        kernel=kernel,
        root=root,
        cpus=cfg.vm.cpus,
        memory_mb=cfg.vm.memory_mb,
        cmdline=cfg.vm.cmdline,
        accel=Accel.AUTO,
        name=name,
        qemu=cfg.vm.qemu,
    )
    if accel.accel is not Accel.AUTO:  # else each host resolves it (PER_HOST)
        spec = with_accel(spec, accel)
    if root.kind is RootKind.DISK:
        spec = dataclasses.replace(spec, initrd=_disk_initrd(kernel))
    marker = READY_MARKER if root.kind is RootKind.INITRAMFS else None
    return VMSetup(spec, cfg.timeouts.scaled(accel.scale), accel, marker)
