"""Lab hosts without hosts: URI parsing, names, the XML kvmlab sends to
libvirt, and scheduling and quarantine over fake backends (spread, fleet,
the reproducer runner's retries)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmlab.config import HostConfig, VMConfig, load_config
from kvmlab.errors import ConfigError, InfraError
from kvmlab.host_uri import owned_name, parse_host_uri, parse_owned_name
from kvmlab.outcome import RunOutcome, RunStatus
from kvmlab.owner import Owner
from kvmlab.timeouts import Timeouts
from kvmlab.vmm import volume_cache as vc
from kvmlab.vmm.domain_xml import domain_owner, domain_xml, hostfwd_port
from kvmlab.vmm.fleet import Fleet, Member, NoUsableHostError
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.root import GuestRoot, RootKind
from kvmlab.vmm.spec import Accel, VMSpec
from kvmlab.vmm.spread import spread
from kvmlab.vmm.storage import overlay_volume_xml, qcow2_virtual_size, raw_volume_xml, volume_times

pytestmark = pytest.mark.unit

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; UPDATE_SNAPSHOTS=1 to accept"


# -- URIs and names ---------------------------------------------------------------------------------


def test_parse_remote_uri_with_key_and_known_hosts() -> None:
    a = parse_host_uri("qemu+ssh://root@lab1:2222/system?keyfile=/k/id&known_hosts=/k/kh&command=/x")
    assert (a.hostname, a.user, a.port, a.path, a.transport) == ("lab1", "root", 2222, "system", "ssh")
    assert (a.keyfile, a.known_hosts) == ("/k/id", "/k/kh")
    assert not a.local and a.label == "root@lab1:2222"


@pytest.mark.parametrize("uri, local, label", [
    ("qemu:///system", True, "local"),
    ("qemu+unix:///session", True, "local-session"),
    ("qemu+ssh://lab2/session", False, "lab2"),
    ("qemu+libssh://u@lab3/system", False, "u@lab3"),
])
def test_parse_uri_forms(uri: str, local: bool, label: str) -> None:
    a = parse_host_uri(uri)
    assert a.local is local and a.label == label


@pytest.mark.parametrize("uri, match", [
    ("xen:///system", "only qemu://"),
    ("qemu:///embed", "/system or /session"),
    ("qemu+tcp://lab/system", "reached over SSH"),
    ("qemu+ssh:///system", "needs a host name"),
    ("qemu+ssh://lab:x/system", "bad port"),
])
def test_bad_uris_name_the_problem(uri: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_host_uri(uri, where="vm.hosts[0].uri")


def test_owned_names_round_trip() -> None:
    who = Owner(4242, 170000000012, "0a1b2c3d", "ws-1.example~00ff00ff")
    name = owned_name(who, "0123abcd.kernel")
    assert name == "kvmlab-4242.170000000012.0a1b2c3d@ws-1.example~00ff00ff_0123abcd.kernel"
    assert parse_owned_name(name) == (who, "0123abcd.kernel")
    # An older kvmlab's name: its owner has no start time, boot or client id.
    assert parse_owned_name("kvmlab-4242@ws-1.example_1.abc.kernel") == (
        Owner(4242, 0, "", "ws-1.example"), "1.abc.kernel")
    assert parse_owned_name("default.qcow2") is None


# -- XML ---------------------------------------------------------------------------------------------


def test_domain_xml_names_host_paths_only_and_carries_its_owner() -> None:
    root = GuestRoot("bookworm", RootKind.DISK, Path("/client/bookworm.qcow2"), Path("/client/id"),
                     cmdline=("root=/dev/vda", "rw"))
    spec = VMSpec(kernel=Path("/client/bzImage"), root=root, accel=Accel.TCG, cpus=1, memory_mb=512,
                  name="vm")
    pool = "/var/lib/libvirt/images/kvmlab"
    xml = domain_xml(spec, name="kvmlab-1-vm-0-1-ws", kernel=f"{pool}/k.kernel", initrd=None,
                     disk=f"{pool}/o.qcow2", console_log=f"{pool}/c.console.log",
                     owner=Owner(1, 100, "b00f", "ws~0a0b0c0d"))
    _snapshot("domain_tcg_disk.xml", xml)
    assert "/client/" not in xml
    assert f'<log file="{pool}/c.console.log" append="off"' in xml
    assert "hostfwd=tcp:127.0.0.1:0-:22" in xml  # QEMU picks the port on the host
    assert domain_owner(xml) == Owner(1, 100, "b00f", "ws~0a0b0c0d")
    assert domain_owner("<domain><name>x</name></domain>") is None


def test_hostfwd_port_from_info_usernet() -> None:
    text = ("Hub -1 (net0):\r\n"
            "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
            "  TCP[HOST_FORWARD]  19       127.0.0.1 46431       10.0.2.15    22     0     0\r\n")
    assert hostfwd_port(text) == 46431
    assert hostfwd_port("Hub -1 (net0):\n") is None


def test_volume_xml() -> None:
    assert "<capacity unit=\"bytes\">123</capacity>" in raw_volume_xml("a.kernel", 123)
    xml = overlay_volume_xml("o.qcow2", backing="/p/base.disk", virtual_size=2 << 30)
    assert "<backingStore>" in xml and "<path>/p/base.disk</path>" in xml and 'type="qcow2"' in xml


def test_qcow2_virtual_size() -> None:
    header = b"QFI\xfb" + (3).to_bytes(4, "big") + bytes(16) + (2 << 30).to_bytes(8, "big")
    assert qcow2_virtual_size(header) == 2 << 30
    with pytest.raises(ValueError):
        qcow2_virtual_size(b"\0" * 32)


# -- config ------------------------------------------------------------------------------------------


def test_config_hosts(tmp_path: Path) -> None:
    from kvmlab.vmm.factory import close_backend, make_backend

    cfg = tmp_path / "c.yaml"
    cfg.write_text("vm:\n  backend: libvirt\n  hosts:\n    - {uri: 'qemu:///system', capacity: 2}\n"
                   "    - {uri: 'qemu+ssh://root@lab1/system', capacity: 8, cache_max_gb: 50}\n")
    c = load_config(cfg)
    assert c.vm.hosts == (HostConfig("qemu:///system", 2),
                          HostConfig("qemu+ssh://root@lab1/system", 8, cache_max_gb=50.0))
    hosts = make_backend(c.vm)
    try:
        assert [m.backend.host.cache_max_bytes for m in hosts.members] == [20 << 30, 50 << 30]
    finally:
        close_backend(hosts)


@pytest.mark.parametrize("text, match", [
    ("vm:\n  backend: libvirt\n  hosts:\n    - {uri: 'qemu+tcp://x/system'}\n", r"hosts\[0\]: uri: .*SSH"),
    ("vm:\n  backend: libvirt\n  hosts:\n    - {uri: 'qemu:///system', capacity: 0}\n", "capacity"),
    ("vm:\n  backend: libvirt\n  hosts:\n    - {uri: 'qemu:///system', cap: 2}\n", "unknown key 'cap'"),
    ("vm:\n  backend: libvirt\n  hosts:\n    - {uri: 'qemu:///system', cache_max_gb: -1}\n",
     r"hosts\[0\]: cache_max_gb: must be 0 \(no automatic collection\) or more, got -1"),
    ("vm:\n  hosts:\n    - {uri: 'qemu:///system'}\n", "needs vm.backend: libvirt"),
])
def test_config_bad_hosts(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


# -- scheduling over fakes ---------------------------------------------------------------------------


class FakeInstance:
    """A VM that is only a pipe for a console and a flag."""

    def __init__(self, name: str, host: str) -> None:
        self._name, self.host_label = name, host
        self.read_fd, self._w = os.pipe()
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    def connect(self, timeout: float) -> object:
        raise InfraError("fake")

    def console_fd(self) -> int:
        return self.read_fd

    def alive(self) -> bool:
        return not self.closed

    def close(self, timeout: float) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._w)


@dataclass
class FakeBackend:
    name: str
    fail_starts: int = 0
    started: list[int] = field(default_factory=list)
    running: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> FakeInstance:
        with self.lock:
            if self.fail_starts:
                self.fail_starts -= 1
                raise InfraError(f"{self.name}: upload failed")
            self.started.append(index)
            self.running += 1
            self.peak = max(self.peak, self.running)
        backend = self

        class Inst(FakeInstance):
            def close(self, timeout: float) -> None:
                if not self.closed:
                    with backend.lock:
                        backend.running -= 1
                super().close(timeout)

        return Inst(f"{self.name}-{index}", self.name)


@pytest.fixture
def spec(tmp_path: Path) -> VMSpec:
    kernel = tmp_path / "bzImage"
    # A bzImage header with a version string, enough for validate_spec.
    data = bytearray(0x300)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x100).to_bytes(2, "little")  # version string at 0x100 + 0x200
    data += b"6.1.0-test (kvmlab@test) #1\0" + bytes(64)
    kernel.write_bytes(bytes(data))
    root = tmp_path / "initramfs"
    root.write_bytes(b"x")
    key = tmp_path / "id"
    key.write_text("k")
    return VMSpec(kernel=kernel, root=GuestRoot("initramfs", RootKind.INITRAMFS, root, key), accel=Accel.TCG)


def _outcome(m: Machine, status: RunStatus, detail: str = "") -> RunOutcome:
    return RunOutcome(m.index, status, title="KASAN: use-after-free Read in f" if status is RunStatus.CRASHED
                      else None, detail=detail)


def _run(spec: VMSpec, tmp_path: Path, fleet: Fleet, count: int, job: object) -> object:
    return spread(spec, count, fleet=fleet, timeouts=Timeouts(), workdir=tmp_path / "runs", ready_marker=None,
                  job=job,  # type: ignore[arg-type]
                  host_failure=lambda o: o.detail if o.status is RunStatus.INFRA else None,
                  no_host=lambda i, why: RunOutcome(i, RunStatus.INFRA, detail=why))


def _host_of(m: Machine) -> str:
    return m.instance.host  # type: ignore[attr-defined, no-any-return]


def test_runs_spread_by_free_capacity(spec: VMSpec, tmp_path: Path) -> None:
    a, b = FakeBackend("a"), FakeBackend("b")
    fleet = Fleet([Member("a", a, 1), Member("b", b, 3)])
    seen: list[str] = []
    lock = threading.Lock()

    def job(m: Machine) -> RunOutcome:
        with lock:
            seen.append(_host_of(m))
        time.sleep(0.2)
        return _outcome(m, RunStatus.OK)

    got = _run(spec, tmp_path, fleet, 4, job)
    assert [o.status for o in got.results] == [RunStatus.OK] * 4  # type: ignore[attr-defined]
    assert sorted(seen) == ["a", "b", "b", "b"]
    assert a.peak <= 1 and b.peak <= 3 and a.running == 0 and b.running == 0


def test_capacity_is_never_exceeded_with_more_runs_than_slots(spec: VMSpec, tmp_path: Path) -> None:
    a, b = FakeBackend("a"), FakeBackend("b")
    fleet = Fleet([Member("a", a, 1), Member("b", b, 1)])
    got = _run(spec, tmp_path, fleet, 5, lambda m: (time.sleep(0.05), _outcome(m, RunStatus.OK))[1])
    assert len(got.results) == 5  # type: ignore[attr-defined]
    assert a.peak == 1 and b.peak == 1 and len(a.started) + len(b.started) == 5


def test_host_failure_is_retried_elsewhere_and_the_verdict_stands(spec: VMSpec, tmp_path: Path) -> None:
    lab, local = FakeBackend("lab"), FakeBackend("local")
    fleet = Fleet([Member("lab", lab, 2), Member("local", local, 2)], quarantine_after=3)

    def job(m: Machine) -> RunOutcome:
        if _host_of(m) == "lab":
            return _outcome(m, RunStatus.INFRA, "libvirt connection to lab lost (end of file)")
        return _outcome(m, RunStatus.CRASHED)

    got = _run(spec, tmp_path, fleet, 4, job)
    outs = got.results  # type: ignore[attr-defined]
    assert [o.status for o in outs] == [RunStatus.CRASHED] * 4
    assert {r.host for r in got.retried} == {"lab"}  # type: ignore[attr-defined]
    assert len(got.retried) >= 2  # type: ignore[attr-defined]  # lab's two slots each failed once at least
    # A retry keeps its first attempt's console dir and gets its own.
    assert any(p.name.endswith(".1") for p in (tmp_path / "runs").iterdir())


def test_quarantine_after_n_failures_with_one_log_line(spec: VMSpec, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    lab, local = FakeBackend("lab"), FakeBackend("local")
    fleet = Fleet([Member("lab", lab, 1), Member("local", local, 1)], quarantine_after=2)

    def job(m: Machine) -> RunOutcome:
        if _host_of(m) == "lab":
            return _outcome(m, RunStatus.INFRA, "lab: libvirtd gone")
        return _outcome(m, RunStatus.OK)

    with caplog.at_level(logging.WARNING, logger="kvmlab.vmm.fleet"):
        got = _run(spec, tmp_path, fleet, 8, job)
    assert [o.status for o in got.results] == [RunStatus.OK] * 8  # type: ignore[attr-defined]
    assert fleet.members[0].health.quarantined is not None
    assert len(lab.started) == 2  # two failures, then no more VMs there
    lines = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(lines) == 1 and "host lab quarantined" in lines[0] and "2 infra failures" in lines[0]


def test_failed_starts_count_and_move_the_run(spec: VMSpec, tmp_path: Path) -> None:
    lab, local = FakeBackend("lab", fail_starts=10), FakeBackend("local")
    fleet = Fleet([Member("lab", lab, 1), Member("local", local, 1)], quarantine_after=2)
    got = _run(spec, tmp_path, fleet, 3, lambda m: _outcome(m, RunStatus.OK))
    assert [o.status for o in got.results] == [RunStatus.OK] * 3  # type: ignore[attr-defined]
    assert fleet.members[0].health.quarantined is not None and not lab.started
    assert all("upload failed" in r.detail for r in got.retried)  # type: ignore[attr-defined]


def test_the_last_host_is_never_quarantined_and_infra_stays_infra(spec: VMSpec, tmp_path: Path) -> None:
    only = FakeBackend("only")
    fleet = Fleet.single(only, 2)
    got = _run(spec, tmp_path, fleet, 4,
               lambda m: _outcome(m, RunStatus.INFRA, "ssh transport failed, the guest is fine"))
    outs = got.results  # type: ignore[attr-defined]
    assert [o.status for o in outs] == [RunStatus.INFRA] * 4  # never a kernel verdict
    assert not got.retried and fleet.members[0].health.quarantined is None  # type: ignore[attr-defined]
    assert len(only.started) == 4  # one attempt each: nowhere else to go


def test_all_hosts_quarantined_gives_infra_runs(spec: VMSpec, tmp_path: Path) -> None:
    fleet = Fleet([Member("a", FakeBackend("a"), 1), Member("b", FakeBackend("b"), 1)])
    for m in fleet.members:
        m.health.quarantined = "test"
    got = _run(spec, tmp_path, fleet, 2, lambda m: _outcome(m, RunStatus.OK))
    assert [o.status for o in got.results] == [RunStatus.INFRA] * 2  # type: ignore[attr-defined]
    assert "quarantined" in got.results[0].detail  # type: ignore[attr-defined]
    with pytest.raises(NoUsableHostError):
        fleet.place(spec, workdir=tmp_path, index=0)


def test_interrupt_closes_every_running_vm(spec: VMSpec, tmp_path: Path) -> None:
    a = FakeBackend("a")
    fleet = Fleet.single(a, 3)
    started = threading.Event()

    def job(m: Machine) -> RunOutcome:
        started.set()
        m.watcher.wait_for(set(), timeout=0.0)
        if m.index == 0:
            time.sleep(0.3)
            raise KeyboardInterrupt
        while m.instance.alive():  # closed from outside by the cleanup
            time.sleep(0.02)
        return _outcome(m, RunStatus.OK)

    with pytest.raises(KeyboardInterrupt):
        _run(spec, tmp_path, fleet, 3, job)
    assert a.running == 0


def test_vm_config_default_has_no_hosts() -> None:
    assert VMConfig().hosts == () and VMConfig().quarantine_after == 3


def test_make_backend_with_hosts_is_a_fleet_that_connects_on_first_use() -> None:
    from kvmlab.vmm.factory import close_backend, make_backend

    cfg = VMConfig(backend="libvirt", hosts=(HostConfig("qemu:///system", 2),
                                             HostConfig("qemu+ssh://root@lab1.invalid/system", 3)),
                   quarantine_after=5)
    b = make_backend(cfg)
    assert isinstance(b, Fleet)
    assert [(m.label, m.capacity) for m in b.members] == [("local", 2), ("root@lab1.invalid", 3)]
    assert b.capacity() == 5 and b.quarantine_after == 5
    close_backend(b)  # nothing was opened: nothing to reach, nothing to remove


def test_doctor_reads_domain_types_from_capabilities() -> None:
    from kvmlab.vmm.host_accel import domain_types

    caps = """<capabilities><host/>
      <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch></guest>
      <guest><os_type>hvm</os_type><arch name='x86_64'><emulator>/usr/bin/qemu-system-x86_64</emulator>
        <domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>"""
    assert domain_types(caps) == ["qemu", "kvm"]
    assert domain_types(caps.replace("<domain type='kvm'/></arch></guest></capabilities>",
                                     "</arch></guest></capabilities>")) == ["qemu"]
    assert domain_types("<capabilities><host/></capabilities>") == []


# -- the host's volume cache ---------------------------------------------------------------------


def test_content_names_and_leases() -> None:
    digest = "ab" * 32
    name = vc.content_name(digest, "kernel")
    assert name == f"kvmlab-c-{'ab' * 16}.kernel" and vc.is_content(name)
    assert not vc.is_content(vc.done_name(name))
    who = Owner(7, 100, "b00f", "ws~0a0b0c0d")
    lease = owned_name(who, f"3.{vc.lease_what(digest, 'kernel')}")
    parsed = parse_owned_name(lease)
    assert parsed is not None and parsed[0] == who
    assert vc.leased_content(parsed[1]) == name
    assert vc.leased_content("3.abc.kernel") is None


def _cv(name: str, size: int, age: float, *, done: bool = True, leased: bool = False) -> vc.CachedVolume:
    return vc.CachedVolume(name, size, 1_000_000.0 - age, done, leased)


def test_gc_removes_old_and_least_recently_used_never_leased() -> None:
    day = 86400.0
    vols = [
        _cv("leased-old", 10, 100 * day, leased=True),
        _cv("old", 10, 30 * day),
        _cv("a", 10, 3 * day),
        _cv("b", 10, 2 * day),
        _cv("c", 10, 1 * day),
        _cv("partial-new", 10, 60, done=False),
        _cv("partial-old", 10, 2 * 3600, done=False),
        _cv("leased-new", 10, 10, leased=True),
    ]
    gone = vc.plan_gc(vols, now=1_000_000.0, max_bytes=50, max_age=14 * day)
    # Kept: 10+10 leased, 10 of the new partial; of a, b, c the least recently used go until 50 fit.
    assert [v.name for v in gone] == ["old", "partial-old", "a"]
    everything = vc.plan_gc(vols, now=1_000_000.0, max_bytes=0, max_age=14 * day)
    assert {v.name for v in everything} == {"old", "partial-old", "a", "b", "c"}


def test_volume_times_from_a_volumes_xml() -> None:
    xml = ("<volume><target><timestamps><atime>1700000100.5</atime><mtime>1700000000.25</mtime>"
           "</timestamps></target></volume>")
    assert volume_times(xml) == (1700000100.5, 1700000000.25)
    assert volume_times("<volume/>") == (0.0, 0.0)


def test_ctrl_c_that_the_kernel_hands_to_a_run_thread_stops_the_spread_at_once(spec: VMSpec,
                                                                              tmp_path: Path) -> None:
    # The kernel may deliver a process's SIGINT to any of its threads. The
    # main thread, waiting for the runs, must still act on it right away (and
    # the runs' VMs go), not once every run has ended on its own.
    fleet = Fleet([Member("a", FakeBackend("a"), 2)])
    release = threading.Event()
    workers: list[int] = []

    def job(m: Machine) -> RunOutcome:
        workers.append(threading.get_ident())
        # A run ends when its VM goes (as SSH does when QEMU is stopped).
        deadline = time.monotonic() + 6
        while m.instance.alive() and not release.wait(0.05) and time.monotonic() < deadline:
            pass
        return _outcome(m, RunStatus.OK)

    def interrupt() -> None:
        while len(workers) < 2:
            time.sleep(0.01)
        signal.pthread_kill(workers[0], signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(spec, tmp_path, fleet, 2, job)
        assert time.monotonic() - started < 3.0
    finally:
        release.set()
