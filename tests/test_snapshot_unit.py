"""The pure parts of boot-once-restore-per-run: the refresh command, the
libvirt XML of a clone and of a relay, reading a migration's progress, and
when a VM cannot be saved (a 9p share: runs boot, said once)."""

from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kvmlab.config import VMConfig, load_config
from kvmlab.errors import ConfigError
from kvmlab.owner import Owner
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.domain_xml import QEMU_NS, domain_xml, relay_xml
from kvmlab.vmm.fleet import Fleet
from kvmlab.vmm.qemu_backend import QemuBackend
from kvmlab.vmm.qmp import QMPError, incoming_port, wait_migration
from kvmlab.vmm.refresh import SEED_BYTES, refresh_command
from kvmlab.vmm.root import GuestRoot, RootKind
from kvmlab.vmm.snapshot import Snapshots, TemplateRecipe, unsupported
from kvmlab.vmm.spec import Accel, Share, VMSpec

pytestmark = pytest.mark.unit


def _spec(kind: RootKind = RootKind.INITRAMFS) -> VMSpec:
    root = GuestRoot("r", kind, Path("/x/root"), Path("/x/key"),
                     cmdline=("root=/dev/vda",) if kind is RootKind.DISK else ())
    return VMSpec(kernel=Path("/x/bzImage"), root=root, accel=Accel.TCG)


def test_refresh_command() -> None:
    cmd = refresh_command("/.kvmlab-files/kvmlab-refresh", now_ns=1_700_000_000_123_456_789, seed=b"\x01\xab")
    assert cmd == "/.kvmlab-files/kvmlab-refresh 1700000000123456789 01ab"
    a, b = refresh_command("h").split()[2], refresh_command("h").split()[2]
    assert len(a) == 2 * SEED_BYTES and a != b, "fresh host randomness each time"


def _qemu_args(xml: str) -> list[str]:
    return [str(a.get("value")) for a in ET.fromstring(xml).iter(f"{{{QEMU_NS}}}arg")]


def test_a_clone_domain_waits_for_its_state() -> None:
    kw: dict[str, Any] = dict(name="n", kernel="/k", initrd="/i", disk=None, console_log="/l",
                              owner=Owner(1, 100, "b00f", "h~0a0b0c0d"))
    assert "-incoming" not in _qemu_args(domain_xml(_spec(), **kw))
    args = _qemu_args(domain_xml(_spec(), incoming=True, **kw))
    assert args[-2:] == ["-incoming", "defer"]


def test_relay_xml_moves_the_console_log_and_the_disk_only() -> None:
    saved = domain_xml(_spec(RootKind.DISK), name="tpl", kernel="/k", initrd=None, disk="/pool/tpl.qcow2",
                       console_log="/pool/tpl.log", owner=Owner(1, 100, "b00f", "h~0a0b0c0d"))
    out = ET.fromstring(relay_xml(saved, console_log="/pool/relay.log", disk="/pool/relay.qcow2"))
    assert out.findtext("name") == "tpl"
    assert out.find("devices/serial/log").get("file") == "/pool/relay.log"  # type: ignore[union-attr]
    assert out.find("devices/disk/source").get("file") == "/pool/relay.qcow2"  # type: ignore[union-attr]
    assert _qemu_args(relay_xml(saved, console_log=None, disk=None)) == _qemu_args(saved)
    assert ET.fromstring(relay_xml(saved, console_log=None, disk=None)).find("devices/serial/log") is None


def test_migration_progress() -> None:
    listening = {"socket-address": [{"type": "inet", "host": "127.0.0.1", "port": "41051"}]}
    assert incoming_port(listening) == 41051
    assert incoming_port({}) is None
    answers = iter([{"status": "setup"}, {"status": "active"}, {"status": "completed", "total-time": 3}])
    assert wait_migration(lambda: next(answers), what="t", timeout=10)["total-time"] == 3
    with pytest.raises(QMPError, match="t: migration failed: no room"):
        wait_migration(lambda: {"status": "failed", "error-desc": "no room"}, what="t", timeout=10)
    with pytest.raises(QMPError, match="not done after"):
        wait_migration(lambda: {"status": "active"}, what="t", timeout=0.01)


def test_what_cannot_be_saved() -> None:
    spec = _spec()
    assert unsupported(spec) is None
    assert "9p share" in str(unsupported(dataclasses.replace(spec, shares=(Share("t", Path("/s")),))))
    assert "debugger" in str(unsupported(dataclasses.replace(spec, paused=True)))
    kept = dataclasses.replace(spec.root, kind=RootKind.DISK, persistent=True)
    assert "kept disk" in str(unsupported(dataclasses.replace(spec, root=kept)))


def test_a_share_boots_as_before_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Snapshots(workdir=tmp_path / "t", cache=tmp_path / "c")
    fleet = Fleet.single(QemuBackend(), 2)
    spec = dataclasses.replace(_spec(), shares=(Share("t", tmp_path),))
    caplog.set_level(logging.INFO, logger="kvmlab.vmm.snapshot")
    for _ in range(3):
        assert store.fleet(fleet, spec, TemplateRecipe(Timeouts())) is fleet
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "9p share" in said[0], said


def test_a_backend_that_cannot_save_boots(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Plain:
        name = "plain"

        def create(self, spec: VMSpec, *, workdir: Path, index: int) -> Any:
            raise AssertionError("not started here")

    fleet = Fleet.single(Plain(), 1)
    caplog.set_level(logging.INFO, logger="kvmlab.vmm.snapshot")
    store = Snapshots(workdir=tmp_path / "t", cache=tmp_path / "c")
    assert store.fleet(fleet, _spec(), TemplateRecipe(Timeouts())) is fleet
    assert "this backend cannot save a VM" in caplog.text


def test_clones_on_lab_hosts_leave_the_accelerator_to_each_host(tmp_path: Path) -> None:
    """On lab hosts ``accel: auto`` stays AUTO until a VM starts on a host,
    and a bisection's runs restore clones (``vm.snapshot: auto``): the fleet
    of clones must still let each host choose, or the pool refuses the spec
    before any VM starts ('resolve Accel.AUTO ... before starting a pool')."""
    class LabHost:
        name = "lab1"

        def per_host_accel(self) -> bool:
            return True

        def create(self, spec: VMSpec, *, workdir: Path, index: int) -> Any:
            raise AssertionError("not started here")

        def save(self, instance: Any, *, timeout: float) -> Any:
            raise AssertionError

        def restore(self, saved: Any, spec: VMSpec, *, workdir: Path, index: int, timeout: float) -> Any:
            raise AssertionError

        def discard(self, saved: Any) -> None:
            raise AssertionError

    fleet = Fleet.single(LabHost(), 2)
    assert fleet.per_host_accel()
    spec = dataclasses.replace(_spec(), accel=Accel.AUTO)
    store = Snapshots(workdir=tmp_path / "t", cache=tmp_path / "c")
    clones = store.fleet(fleet, spec, TemplateRecipe(Timeouts()))
    assert clones is not fleet, "the clones' fleet, not the one that boots every VM"
    assert clones.per_host_accel()
    assert not Fleet.single(QemuBackend(), 1).per_host_accel()


def test_vm_snapshot_setting() -> None:
    assert VMConfig().snapshot == "auto"
    assert VMConfig(snapshot="off").snapshot == "off"
    with pytest.raises(ConfigError, match=r"vm\.snapshot: 'on' is not one of auto, off"):
        VMConfig(snapshot="on")


@pytest.mark.parametrize(("word", "want"), [("off", "off"), ("no", "off"), ("false", "off"), ('"off"', "off"),
                                            ("auto", "auto")])
def test_vm_snapshot_off_in_a_config_file(tmp_path: Path, word: str, want: str) -> None:
    """The README's `vm.snapshot: off` as YAML writes it: a bare off is YAML's
    false, and it was refused ('expected a string, got False')."""
    conf = tmp_path / "config.yaml"
    conf.write_text(f"vm:\n  snapshot: {word}\n")
    assert load_config(conf).vm.snapshot == want


def test_vm_snapshot_on_in_a_config_file_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "config.yaml"
    conf.write_text("vm:\n  snapshot: on\n")
    with pytest.raises(ConfigError, match=r"vm\.snapshot: expected a string, got True \(YAML read it as a "
                                          r"number or a boolean: quote it\)"):
        load_config(conf)
