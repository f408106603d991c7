"""``vm.count: auto`` and ``capacity: auto`` (kvmlab.vmm.sizing): VMs from
free cores and memory, psutil on this machine, libvirt's host info on a host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest

from kvmlab.config import AUTO, VMConfig, load_config
from kvmlab.errors import ConfigError, KvmlabError
from kvmlab.vmm import sizing
from kvmlab.vmm.host import open_connection
from kvmlab.vmm.sizing import Free, vms_that_fit


@pytest.mark.parametrize("free, cpus, mem, want", [
    (Free(8.0, 16384), 2, 1024, 4),          # cores decide
    (Free(32.0, 4096), 1, 1024, 3),          # memory decides (512 MiB kept for the host)
    (Free(0.3, 100_000), 2, 1024, 1),        # a busy host still runs one
    (Free(4.0, 100), 1, 1024, 1),
])
def test_vms_that_fit(free: Free, cpus: int, mem: int, want: int) -> None:
    assert vms_that_fit(free, cpus=cpus, memory_mb=mem) == want


def test_auto_in_a_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "k.yaml"
    conf.write_text("vm:\n  backend: libvirt\n  count: auto\n"
                    "  hosts:\n    - {uri: 'qemu:///system', capacity: auto}\n")
    cfg = load_config(conf)
    assert cfg.vm.count == AUTO and cfg.vm.hosts[0].capacity == AUTO
    conf.write_text("vm:\n  count: 0\n")
    with pytest.raises(ConfigError, match=r"vm.count: must be positive or auto, got 0"):
        load_config(conf)
    conf.write_text("vm:\n  count: many\n")
    with pytest.raises(ConfigError, match=r"vm.count: expected a whole number"):
        load_config(conf)


class FakeDomain:
    def __init__(self, vcpus: int) -> None:
        self.vcpus = vcpus

    def info(self) -> list[int]:
        return [1, 0, 0, self.vcpus, 0]


class FakeConn:
    def getInfo(self) -> list[Any]:
        return ["x86_64", 64000, 16, 2000, 1, 1, 8, 2]

    def listAllDomains(self, flags: int) -> list[FakeDomain]:
        return [FakeDomain(4), FakeDomain(2)]

    def getFreeMemory(self) -> int:
        return 20 * 2**30


def test_a_libvirt_hosts_free_cores_are_its_cpus_minus_running_vcpus() -> None:
    free = sizing.libvirt_free(FakeConn())
    assert free == Free(10.0, 20480)
    assert vms_that_fit(free, cpus=2, memory_mb=2048) == 5


def test_resolve_auto_locally_uses_psutil() -> None:
    vm = sizing.resolve_auto(VMConfig(count=AUTO, cpus=1, memory_mb=256))
    cores = psutil.cpu_count() or 1
    assert 1 <= vm.count <= cores
    assert sizing.resolve_auto(VMConfig(count=3)).count == 3


@pytest.mark.libvirt
def test_libvirt_free_of_a_real_libvirtd() -> None:
    try:
        conn = open_connection("qemu:///system", 30.0)
    except KvmlabError as e:
        pytest.skip(f"libvirtd not reachable: {e}")
    try:
        free = sizing.libvirt_free(conn)
        cpus = conn.getInfo()[2]
    finally:
        conn.close()
    assert 0 < free.memory_mb <= psutil.virtual_memory().total // 2**20
    assert 0 <= free.cpus <= cpus
