"""How many VMs a host takes at once when the config says ``auto``
(``vm.count``, a host's ``capacity``): from its free cores and free memory,
read with psutil on this machine and from libvirt's host info on a lab host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import libvirt
import psutil

from kvmlab.config import AUTO, VMConfig
from kvmlab.errors import LibvirtError
from kvmlab.host_uri import parse_host_uri
from kvmlab.vmm.host import open_connection

log = logging.getLogger(__name__)

#: MiB of a host's free memory kept for the host itself (QEMU's own overhead,
#: page cache, kvmlab).
RESERVE_MB = 512


@dataclass(frozen=True)
class Free:
    """What a host has free right now."""

    cpus: float
    """Cores not busy (cores minus the load, or minus the vCPUs of running VMs)."""
    memory_mb: int
    """Free memory, MiB."""


def vms_that_fit(free: Free, *, cpus: int, memory_mb: int) -> int:
    """VMs of ``cpus`` vCPUs and ``memory_mb`` MiB each that ``free`` takes;
    at least 1 (a host that is busy still runs one, more slowly)."""
    by_cpu = math.floor(free.cpus / cpus + 1e-9)
    by_mem = (free.memory_mb - RESERVE_MB) // memory_mb
    return max(1, min(by_cpu, by_mem))


def local_free() -> Free:
    """This machine: its cores minus the 1-minute load average, and the
    memory available without swapping (psutil)."""
    cores = psutil.cpu_count() or os.cpu_count() or 1
    load = psutil.getloadavg()[0]
    return Free(max(0.0, cores - load), psutil.virtual_memory().available // 2**20)


def libvirt_free(conn: Any) -> Free:
    """A libvirt host: its CPUs minus the vCPUs of the domains running there
    (``getInfo``, ``listAllDomains``), and its free memory (``getFreeMemory``)."""
    try:
        cpus = int(conn.getInfo()[2])
        busy = 0
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                busy += int(dom.info()[3])
        free_mb = int(conn.getFreeMemory()) // 2**20
    except libvirt.libvirtError as e:
        raise LibvirtError(f"libvirt host info: {e.get_error_message()}") from e
    return Free(float(max(0, cpus - busy)), free_mb)


def host_free(uri: str) -> Free:
    """:func:`local_free` for this machine, :func:`libvirt_free` for a lab host."""
    if parse_host_uri(uri).local:
        return local_free()
    conn = open_connection(uri)
    try:
        return libvirt_free(conn)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def resolve_auto(vm: VMConfig) -> VMConfig:
    """``vm`` with every ``auto`` count and capacity turned into a number:
    a host's capacity from its own free resources (one connection each), and
    ``vm.count`` from this machine's (or, over ``vm.hosts``, the sum of their
    capacities)."""
    if vm.count != AUTO and all(h.capacity != AUTO for h in vm.hosts):
        return vm
    hosts = []
    for h in vm.hosts:
        if h.capacity == AUTO:
            free = host_free(h.uri)
            n = vms_that_fit(free, cpus=vm.cpus, memory_mb=vm.memory_mb)
            log.info("%s: capacity auto: %d VMs (%.1f free cores, %d MiB free)", h.uri, n, free.cpus,
                     free.memory_mb)
            h = dataclasses.replace(h, capacity=n)
        hosts.append(h)
    count = vm.count
    if count == AUTO:
        if hosts:
            count = sum(h.capacity for h in hosts)
        else:
            free = host_free(vm.uri) if vm.backend == "libvirt" else local_free()
            count = vms_that_fit(free, cpus=vm.cpus, memory_mb=vm.memory_mb)
            log.info("vm.count auto: %d VMs (%.1f free cores, %d MiB free)", count, free.cpus, free.memory_mb)
    return dataclasses.replace(vm, count=count, hosts=tuple(hosts))
