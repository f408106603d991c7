"""The accelerator chosen per lab host (kvmlab.vmm.host_accel): the logic,
with a faked host capability and faked boots (the real probe, booting on a
host through libvirt, is in tests/test_lab_hosts.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from kvmlab.config import HostConfig, VMConfig
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm import host_accel
from kvmlab.vmm.accel import AccelChoice, with_accel
from kvmlab.vmm.fleet import Fleet, Member
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.pool import validate_spec
from kvmlab.vmm.root import GuestRoot, RootKind
from kvmlab.vmm.snapshot import RestoredInstance
from kvmlab.vmm.spec import Accel, VMSpec

CAPS = ("<capabilities><host><cpu><model>Skylake</model></cpu></host><guest><os_type>hvm</os_type>"
        "<arch name='x86_64'><domain type='qemu'/>{kvm}</arch></guest></capabilities>")


class FakeConn:
    def __init__(self, kvm: bool) -> None:
        self.caps = CAPS.format(kvm="<domain type='kvm'/>" if kvm else "")

    def getCapabilities(self) -> str:
        return self.caps

    def getLibVersion(self) -> int:
        return 9_000_000

    def getVersion(self) -> int:
        return 7_002_000


class FakeHost:
    def __init__(self, label: str, *, kvm_offered: bool, accel: Accel = Accel.AUTO) -> None:
        self.label = label
        self.accel = accel
        self._conn = FakeConn(kvm_offered)

    def conn(self) -> FakeConn:
        return self._conn


def _boots(results: dict[bool, bool], calls: list[bool]) -> Any:
    def boots(host: Any, kernel: Path, *, kvm: bool, seconds: float) -> tuple[bool, str]:
        calls.append(kvm)
        return results[kvm], "booted" if results[kvm] else "no kernel banner within 15s"
    return boots


@pytest.mark.parametrize("offered, kvm_boots, want, calls", [
    (True, True, Accel.KVM, [True]),                 # a KVM host
    (True, False, Accel.TCG, [True, False]),         # advertises kvm, hangs: TCG (and TCG boots it)
    (False, True, Accel.TCG, []),                    # no KVM domains: nothing to boot
])
def test_probe_on_a_host(offered: bool, kvm_boots: bool, want: Accel, calls: list[bool]) -> None:
    seen: list[bool] = []
    host = FakeHost("lab1", kvm_offered=offered)
    choice = host_accel.probe_host(host, Path("bzImage"), boots=_boots({True: kvm_boots, False: True}, seen))  # type: ignore[arg-type]
    assert choice.accel is want and seen == calls
    assert choice.scale == (1.0 if want is Accel.KVM else TCG_SCALE)
    assert "lab1" in choice.reason


def test_a_kernel_that_boots_nowhere_is_inconclusive() -> None:
    host = FakeHost("lab1", kvm_offered=True)
    with pytest.raises(host_accel.Inconclusive):
        host_accel.probe_host(host, Path("bzImage"), boots=_boots({True: False, False: False}, []))  # type: ignore[arg-type]


def test_each_host_resolves_its_own_and_remembers_it_per_host_and_kernel_type(tmp_path: Path) -> None:
    kvm_host = FakeHost("kvm-lab", kvm_offered=True)
    tcg_host = FakeHost("tcg-lab", kvm_offered=True)
    forced = FakeHost("forced", kvm_offered=True, accel=Accel.TCG)
    probed: list[str] = []

    def probe(host: Any, kernel: Path) -> AccelChoice:
        probed.append(host.label)
        if host.label == "kvm-lab":
            return AccelChoice(Accel.KVM, 1.0, "a KVM guest booted on kvm-lab")
        return AccelChoice(Accel.TCG, TCG_SCALE, "KVM guest did not boot on tcg-lab")

    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"not a real one")
    got = {h.label: host_accel.resolve_host_accel(h, kernel, cache_dir=tmp_path, probe=probe)  # type: ignore[arg-type]
           for h in (kvm_host, tcg_host, forced)}
    assert {k: v.accel for k, v in got.items()} == {"kvm-lab": Accel.KVM, "tcg-lab": Accel.TCG,
                                                    "forced": Accel.TCG}
    assert got["forced"].reason == "set for forced" and probed == ["kvm-lab", "tcg-lab"]
    again = host_accel.resolve_host_accel(kvm_host, kernel, cache_dir=tmp_path, probe=probe)  # type: ignore[arg-type]
    assert again.accel is Accel.KVM and "remembered" in again.reason and probed == ["kvm-lab", "tcg-lab"]
    host_accel.resolve_host_accel(kvm_host, kernel, cache_dir=tmp_path, probe=probe, fresh=True)  # type: ignore[arg-type]
    assert probed == ["kvm-lab", "tcg-lab", "kvm-lab"]


def test_kernel_kind_and_host_key() -> None:
    assert host_accel.kernel_kind(None) == "unknown"
    a = host_accel.host_key("lab1", CAPS.format(kvm=""), 9_000_000, 7_002_000)
    assert a != host_accel.host_key("lab2", CAPS.format(kvm=""), 9_000_000, 7_002_000)
    epyc = CAPS.format(kvm="").replace("Skylake", "EPYC")
    assert a != host_accel.host_key("lab1", epyc, 9_000_000, 7_002_000)


def test_probe_domain_xml_boots_only_the_kernel() -> None:
    from kvmlab.owner import Owner

    xml = host_accel.probe_domain_xml("kvmlab-1-accel-probe-0-1.1-ws", kernel="/pool/k",
                                      console_log="/pool/c.log", kvm=True,
                                      owner=Owner(1, 100, "b00f", "ws~0a0b0c0d"))
    assert "type=\"kvm\"" in xml and "host-passthrough" in xml and "<initrd" not in xml
    assert '<log file="/pool/c.log"' in xml and 'pid="1"' in xml
    tcg = host_accel.probe_domain_xml("x", kernel="/pool/k", console_log="/pool/c.log", kvm=False,
                                      owner=Owner(1, 100, "b00f", "ws~0a0b0c0d"))
    assert 'type="qemu"' in tcg and "host-passthrough" not in tcg


def test_which_configs_leave_the_accelerator_to_each_host() -> None:
    lab = HostConfig("qemu+ssh://root@lab1/system")
    assert VMConfig(backend="libvirt", hosts=(lab,)).per_host_accel
    assert VMConfig(backend="libvirt", uri="qemu+ssh://root@lab1/system").per_host_accel
    assert not VMConfig(backend="libvirt").per_host_accel            # this machine: the local probe
    assert not VMConfig(backend="qemu").per_host_accel
    assert not VMConfig(backend="libvirt", accel="tcg", hosts=(lab,)).per_host_accel
    forced = HostConfig("qemu+ssh://root@lab2/system", accel="tcg")
    assert VMConfig(backend="libvirt", accel="kvm", hosts=(lab, forced)).per_host_accel


class ScaledInstance:
    name = "vm"

    def __init__(self, scale: float) -> None:
        import os

        self._r, self._w = os.pipe()
        self.scale = scale

    def time_scale(self) -> float:
        return self.scale

    def console_fd(self) -> int:
        return self._r

    def connect(self, timeout: float) -> Any:
        raise AssertionError

    def alive(self) -> bool:
        return True

    def close(self, timeout: float) -> None:
        import os

        os.close(self._w)
        os.close(self._r)


class PerHostBackend:
    name = "fake"

    def per_host_accel(self) -> bool:
        return True

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> ScaledInstance:
        return ScaledInstance(TCG_SCALE)


def test_a_vm_on_a_tcg_host_gets_its_timeouts_scaled(tmp_path: Path) -> None:
    """And Accel.AUTO passes only to backends that resolve it per host."""
    root = GuestRoot("initramfs", RootKind.INITRAMFS, tmp_path / "r.cpio", tmp_path / "id")
    root.path.write_bytes(b"x")
    root.ssh_key.write_text("key")
    kernel = Path("/boot").glob("vmlinuz-*")
    spec = VMSpec(kernel=next(kernel, tmp_path / "k"), root=root, accel=Accel.AUTO)
    if not spec.kernel.is_file():
        pytest.skip("no kernel in /boot to validate a spec with")
    with pytest.raises(ValueError, match=r"resolve Accel\.AUTO"):
        validate_spec(spec, object())
    fleet = Fleet([Member("lab1", PerHostBackend(), 1)])  # type: ignore[list-item]
    validate_spec(spec, fleet)
    inst = fleet.create(spec, workdir=tmp_path, index=0)
    m = Machine(0, inst, root, tmp_path, Timeouts(), ready_marker=None, started=0.0)
    try:
        assert m.timeouts.scale == TCG_SCALE and m.timeouts.boot == Timeouts().boot * TCG_SCALE
    finally:
        m.watcher.close(1.0)
        inst.close(1.0)
    tcg = with_accel(spec, AccelChoice(Accel.TCG, TCG_SCALE, "x"))
    assert tcg.accel is Accel.TCG
    assert tcg.cmdline[0] == f"rcupdate.rcu_cpu_stall_timeout={int(21 * TCG_SCALE)}"
    assert with_accel(tcg, AccelChoice(Accel.TCG, TCG_SCALE, "x")).cmdline == tcg.cmdline


def test_a_restored_clone_on_a_tcg_host_keeps_its_scaled_timeouts(tmp_path: Path) -> None:
    """A snapshot's clone wraps the fleet's placement, which wraps the host's
    VM: every layer passes the host's time scale on (the clone's runs get
    TCG's timeouts, not KVM's), and its own refresh helper."""
    root = GuestRoot("initramfs", RootKind.INITRAMFS, tmp_path / "r.cpio", tmp_path / "id")
    fleet = Fleet([Member("lab1", PerHostBackend(), 1)])  # type: ignore[list-item]
    spec = VMSpec(kernel=tmp_path / "k", root=root, accel=Accel.AUTO)
    clone = RestoredInstance(fleet.create(spec, workdir=tmp_path, index=0), "/run/refresh")
    m = Machine(0, clone, root, tmp_path, Timeouts(), ready_marker=None, started=0.0)
    try:
        assert m.timeouts.scale == TCG_SCALE and m.timeouts.boot == Timeouts().boot * TCG_SCALE
        assert (clone.refresh_helper(), clone.qemu_pid(), clone.failure()) == ("/run/refresh", None, None)
    finally:
        m.watcher.close(1.0)
        clone.close(1.0)
    assert fleet.members[0].busy == 0, "closing the clone frees the member's slot"


def test_a_qemu_that_would_not_start_is_one_line() -> None:
    msg = ("internal error: qemu unexpectedly closed the monitor: 2026-12-02T18:44:31.742035Z "
           "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
           "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.")
    assert host_accel.qemu_error(msg) == "error: failed to set MSR 0x10a to 0x69"
    assert host_accel.qemu_error("") == "QEMU did not start"


class _SSHThatAnswers:
    def __init__(self) -> None:
        self.attempts: list[float] = []

    def connect(self, timeout: float) -> None:
        self.attempts.append(time.monotonic())


def test_a_boot_whose_ready_marker_never_shows_still_tries_ssh(tmp_path: Path) -> None:
    """A kernel line printed into the middle of the marker can make it
    unreadable: after a quarter of the boot timeout, SSH is tried anyway."""
    root = GuestRoot("initramfs", RootKind.INITRAMFS, tmp_path / "r.cpio", tmp_path / "id")
    inst = ScaledInstance(1.0)
    started = time.monotonic()
    m = Machine(0, inst, root, tmp_path, Timeouts(boot=4.0), ready_marker="kvmlab-guest-ready",
                started=started)
    ssh = _SSHThatAnswers()
    m.ssh = ssh  # type: ignore[assignment]
    os.write(inst._w, b"[    0.000000] Linux version 6.1.0 (gcc)\r\n"
                      b"[    4.554749] Run /init as init process\r\nkvmlab-guest-rea\r\n")
    try:
        result = m.wait_ready()
    finally:
        m.watcher.close(1.0)
        inst.close(1.0)
    assert result.ok, result.reason
    assert len(ssh.attempts) == 1 and ssh.attempts[0] - started >= 1.0  # not before 4 s / 4


def test_a_silent_console_is_never_taken_for_a_lost_marker(tmp_path: Path) -> None:
    """No kernel lines on the console (its console is elsewhere): kvmlab could
    not see a crash in that guest, so no SSH attempt; the boot fails."""
    root = GuestRoot("initramfs", RootKind.INITRAMFS, tmp_path / "r.cpio", tmp_path / "id")
    inst = ScaledInstance(1.0)
    m = Machine(0, inst, root, tmp_path, Timeouts(boot=2.0), ready_marker="kvmlab-guest-ready",
                started=time.monotonic())
    ssh = _SSHThatAnswers()
    m.ssh = ssh  # type: ignore[assignment]
    os.write(inst._w, b"SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n")
    try:
        result = m.wait_ready()
    finally:
        m.watcher.close(1.0)
        inst.close(1.0)
    assert not result.ok and result.timed_out and ssh.attempts == []
