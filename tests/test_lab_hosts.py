"""Remote libvirt hosts, for real: a lab host on this machine that shares no
path with the client (tests/lab/harness.py: its own root filesystem, mount,
PID and network namespaces, reached over a veth pair as
``qemu+ssh://root@<lab>/system``), with a tripwire that fails the test if the
client opens a file inside the lab or reaches it other than through its sshd.

One lab per session (about 5 s to start; its root image is built once, 3-5
minutes cold, and cached under the test cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kvmlab import oops
from kvmlab import owner as owners
from kvmlab.config import HostConfig, VMConfig
from kvmlab.errors import KvmlabError
from kvmlab.outcome import RunOutcome, RunStatus
from kvmlab.owner import Owner
from kvmlab.repro.reproducer import ShellCommand
from kvmlab.repro.runner import ReproOptions, run_repro
from kvmlab.timeouts import Timeouts
from kvmlab.vmm import storage as storage_mod
from kvmlab.vmm import volume_cache as vc
from kvmlab.vmm.backend import HasLocalSSHPort
from kvmlab.vmm.console import EventKind
from kvmlab.vmm.factory import PER_HOST, choose_accel, make_backend
from kvmlab.vmm.fleet import Fleet, Member
from kvmlab.vmm.host import Host, HostTimeouts
from kvmlab.vmm.host_accel import resolve_host_accel
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.pool import Pool
from kvmlab.vmm.snapshot import Snapshots
from kvmlab.vmm.spec import Accel, VMSpec
from kvmlab.vmm.storage import Uploaded, raw_volume_xml
from tests.conftest import REPO, TEST_CACHE, session_process
from tests.fixtures_vm import MARKER
from tests.lab.harness import Lab, LabUnavailable, root_image, start_lab, tripwire, unavailable_reason
from tests.test_snapshot_real import AGE, CLONES, _run_clones

pytestmark = [pytest.mark.vm, pytest.mark.libvirt, pytest.mark.slow]

#: The title syzkaller's parser gives the sysrq-triggered panic.
SYSRQ_TITLE = "kernel panic: sysrq triggered crash"


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        image = root_image(TEST_CACHE)
        the_lab = start_lab(image)
    except LabUnavailable as e:
        pytest.skip(str(e))
    # The lab's libvirtd, sshd and QEMUs (a test may restart its libvirtd)
    # are the lab's: stopped with it, not a test's leftovers.
    session_process(the_lab.pid)
    try:
        yield the_lab
    finally:
        the_lab.stop()


def _jobs_volumes(lab: Lab) -> list[str]:
    """The lab's volumes other than its shared cache of uploaded content."""
    return [v for v in lab.volumes() if not vc.is_content(v.removesuffix(vc.DONE_SUFFIX))]


def _clear_cache(lab: Lab) -> None:
    for v in lab.volumes():
        lab.virsh("vol-delete", "--pool", "kvmlab", v, check=False)


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    """The lab, checked empty afterwards: no domain, no volume but the
    shared cache's (then emptied: each test starts with nothing uploaded),
    no QEMU. Its libvirtd runs at the start (a test that killed it and failed
    before starting it again is not the next test's failure)."""
    if not lab.libvirtd_pids():
        lab.start_libvirtd()
    _clear_cache(lab)
    yield lab
    deadline = time.monotonic() + 20
    while lab.qemu_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not lab.domains(), f"domains left on the lab host: {lab.domains()}"
    assert not _jobs_volumes(lab), f"volumes left on the lab host: {_jobs_volumes(lab)}"
    assert not lab.qemu_processes(), f"QEMU left running on the lab host: {lab.qemu_processes()}"
    _clear_cache(lab)


def _local_domains() -> set[str]:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        return {d.name() for d in conn.listAllDomains() if d.name().startswith(f"kvmlab-{os.getpid()}-")}
    finally:
        conn.close()


def _ssh_children(lab: Lab) -> list[psutil.Process]:
    """libvirt's ssh transport processes to the lab (children of this process)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name() == "ssh" and lab.ip in " ".join(p.cmdline()):
                out.append(p)
    return out


def test_remote_boot_ssh_console_and_crash_title(clean_lab: Lab, cloud_spec: VMSpec,
                                                  tcg_timeouts: Timeouts, tmp_path: Path) -> None:
    lab = clean_lab
    with tripwire(lab, strict=True) as tw:
        host = Host(lab.uri, capacity=1, timeouts=HostTimeouts(reconnect=30))
        try:
            with Pool(cloud_spec, 1, backend=LibvirtBackend(host), timeouts=tcg_timeouts, workdir=tmp_path,
                      ready_marker=MARKER) as pool:
                m = pool.machines[0]
                assert lab.domains() == [m.name]
                # Its SSH forward is on the lab's 127.0.0.1, not ours.
                assert not isinstance(m.instance, HasLocalSSHPort)
                boot = m.wait_ready()
                assert boot.ok, boot.console_tail
                assert m.run("cat /proc/cmdline", timeout=60).output.startswith("console=ttyS0")
                payload = tmp_path / "payload"
                payload.write_bytes(os.urandom(50_000))
                m.copy_in(payload, "/tmp/payload")
                assert m.run("wc -c < /tmp/payload", timeout=60).output.strip() == "50000"
                # The kernel and initramfs went up once; asking again sends nothing.
                sent = host.storage.bytes_uploaded
                assert sent >= cloud_spec.kernel.stat().st_size + cloud_spec.root.path.stat().st_size
                assert host.storage.upload(cloud_spec.kernel, "kernel").bytes_sent == 0
                assert host.storage.bytes_uploaded == sent
                # Drop the libvirt connection (its ssh transport dies): the VM
                # runs on; kvmlab reconnects and reads the console from the
                # host's log, so the crash below is still seen.
                before = len(m.watcher.text())
                for p in _ssh_children(lab):
                    p.kill()
                deadline = time.monotonic() + 30
                while host.connection_lost is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert host.connection_lost is not None
                with contextlib.suppress(KvmlabError):
                    m.run("echo kvmlab-after-drop > /dev/kmsg; echo c > /proc/sysrq-trigger", timeout=30)
                ev = m.watcher.wait_for({EventKind.CRASH}, timeout=120)
                assert ev is not None, m.watcher.tail()
                m.watcher.settle(quiet=1.0, limit=30)
                text = m.watcher.text()
                assert "kvmlab-after-drop" in text[before:]
                rep = oops.parse(text)
                assert rep is not None and rep.title == SYSRQ_TITLE
                # The stream and the log file are the same bytes: nothing
                # doubled around the switch.
                assert text.count("Linux version") == 1
                assert host.generation >= 2
        finally:
            host.close()
    assert not tw.trips, tw.trips


def test_pool_over_local_and_remote_runs_a_repro(clean_lab: Lab, cloud_spec: VMSpec,
                                                 tcg_timeouts: Timeouts, tmp_path: Path) -> None:
    lab = clean_lab
    hosts = [Host("qemu:///system", capacity=1), Host(lab.uri, capacity=1)]
    fleet = Fleet([Member(h.label, LibvirtBackend(h, owns_host=True), h.capacity, h.health) for h in hosts])
    prepared = ShellCommand("sleep 2; echo c > /proc/sysrq-trigger").prepare(tmp_path)
    with tripwire(lab, strict=False) as tw:
        try:
            result = run_repro(cloud_spec, prepared, backend=fleet, timeouts=tcg_timeouts,
                               options=ReproOptions(count=2, run_time=60), workdir=tmp_path / "runs",
                               ready_marker=MARKER)
        finally:
            if not lab.libvirtd_pids():
                lab.start_libvirtd()
            fleet.close()
    assert not tw.trips, tw.trips
    assert [o.status for o in result.outcomes] == [RunStatus.CRASHED] * 2, [o.detail for o in result.outcomes]
    assert {o.title for o in result.outcomes} == {SYSRQ_TITLE}
    ran_on = {(tmp_path / "runs" / f"vm-{i}" / "host").read_text().split()[0] for i in range(2)}
    assert ran_on == {"local", f"root@{lab.ip}"}
    assert not result.retried
    assert not _local_domains()


def test_remote_libvirtd_killed_mid_run(clean_lab: Lab, cloud_spec: VMSpec, tcg_timeouts: Timeouts,
                                        tmp_path: Path) -> None:
    """The lab's libvirtd dies while its run goes on: that run is infra, is
    run again on the local host, and the verdict is the same as with no
    failure. Afterwards nothing of the job is left on either host."""
    lab = clean_lab
    remote = Host(lab.uri, capacity=1, timeouts=HostTimeouts(reconnect=8, keepalive_interval=2))
    local = Host("qemu:///system", capacity=1)
    fleet = Fleet([Member(remote.label, LibvirtBackend(remote, owns_host=True), 1, remote.health),
                   Member(local.label, LibvirtBackend(local, owns_host=True), 1, local.health)])
    prepared = ShellCommand("sleep 25; echo c > /proc/sysrq-trigger").prepare(tmp_path)
    outcomes: list[RunOutcome] = []
    killed = threading.Event()

    def killer() -> None:
        # Once the remote guest runs the reproducer, kill libvirtd there.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            logs = list((tmp_path / "runs").glob("vm-*/console.log"))
            for log in logs:
                host_file = log.parent / "host"
                if host_file.is_file() and lab.ip in host_file.read_text() and MARKER in log.read_text(
                        errors="replace"):
                    time.sleep(5)
                    lab.kill_libvirtd()
                    killed.set()
                    return
            time.sleep(0.5)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    with tripwire(lab, strict=False) as tw:
        try:
            result = run_repro(cloud_spec, prepared, backend=fleet, timeouts=tcg_timeouts,
                               options=ReproOptions(count=2, run_time=120), workdir=tmp_path / "runs",
                               ready_marker=MARKER, on_run=lambda o, e: outcomes.append(o))
            assert killed.is_set()
            # The lab's libvirtd is back before the job ends: the job's
            # cleanup removes the VM and volumes it left there.
            lab.start_libvirtd()
        finally:
            if not lab.libvirtd_pids():
                lab.start_libvirtd()
            fleet.close()
    assert not tw.trips, tw.trips
    assert [o.status for o in result.outcomes] == [RunStatus.CRASHED] * 2, [o.detail for o in result.outcomes]
    assert {o.title for o in result.outcomes} == {SYSRQ_TITLE}
    assert [(r.host, "lost" in r.detail) for r in result.retried] == [(f"root@{lab.ip}", True)]
    retried = result.retried[0].index
    assert (tmp_path / "runs" / f"vm-{retried}.1" / "host").read_text().startswith("local")
    assert not _local_domains()


def test_doctor_checks_a_remote_host(clean_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab = clean_lab
    from kvmlab.commands.doctor import check_lab_host

    ok = check_lab_host(lab.uri)
    out = capsys.readouterr().out
    assert ok, out
    assert "MISSING kvm: not probed (no kernel to boot)" in out, out
    for what in ("libvirt", "domain type", "storage pool", "volume cache", "free space", "ssh forwarding"):
        assert f"OK      {what}" in out or f"OK     {what}" in out, out
    assert "0 cached volumes, 0 B, 0 in use by running jobs" in out, out
    assert not lab.volumes()



def test_a_killed_kvmlab_leaves_nothing_after_the_next_run(clean_lab: Lab, cloud_spec: VMSpec,
                                                           tmp_path: Path) -> None:
    """kill -9 gives kvmlab no chance to clean the lab host: its domain and
    volumes stay, with their owner in the domain's metadata and the volumes'
    names; the next kvmlab from this machine that connects removes them."""
    lab = clean_lab
    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from kvmlab.vmm.libvirt_backend import LibvirtBackend
        from kvmlab.vmm.root import GuestRoot, RootKind
        from kvmlab.vmm.spec import Accel, VMSpec
        root = GuestRoot("initramfs", RootKind.INITRAMFS, Path({str(cloud_spec.root.path)!r}),
                         Path({str(cloud_spec.root.ssh_key)!r}))
        spec = VMSpec(kernel=Path({str(cloud_spec.kernel)!r}), root=root, cpus=1, memory_mb=256,
                      accel=Accel.TCG, name="held")
        be = LibvirtBackend({lab.uri!r})
        be.create(spec, workdir=Path({str(tmp_path)!r}), index=0)
        print("READY", flush=True)
        time.sleep(600)
    """))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                         start_new_session=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "READY"
        doms, vols = lab.domains(), _jobs_volumes(lab)
        assert len(doms) == 1 and doms[0].startswith(f"kvmlab-{p.pid}-held-0-")
        # Two leases (kernel, initramfs) and the console log.
        assert len(vols) == 3 and all(v.startswith(f"kvmlab-{p.pid}.") for v in vols), vols
        assert f"pid=\"{p.pid}\"" in lab.virsh("dumpxml", doms[0]).replace("'", '"')
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert lab.domains() and _jobs_volumes(lab)  # nobody cleaned up
    cached = set(lab.volumes()) - set(_jobs_volumes(lab))
    assert len(cached) == 4, cached  # kernel and initramfs, each with its marker
    host = Host(lab.uri)
    try:
        host.conn()  # connecting reaps what dead owners from this machine left
        assert not lab.domains() and not _jobs_volumes(lab)
        assert set(lab.volumes()) == cached, "the shared cache stays"
        report = host.storage.cache()
        assert len(report.volumes) == 2 and report.leased == 0, report
    finally:
        host.close()


def test_the_tripwire_catches_a_client_that_reaches_around_the_lab_sshd(lab: Lab) -> None:
    """The tripwire itself: opening a file of the lab's root from outside,
    and connecting to the lab anywhere but its sshd, are each caught."""
    with tripwire(lab, strict=True) as tw:
        (Path(f"/proc/{lab.pid}/root") / "etc" / "hostname").read_text()
        with contextlib.suppress(OSError), socket.create_connection((lab.ip, 16509), timeout=2):
            pass
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 9), timeout=2):
            pass
    kinds = [t.what for t in tw.trips]
    assert kinds.count("file") >= 1, tw.trips
    assert kinds.count("socket") == 2, tw.trips
    assert kinds.count("packet") == 1, tw.trips
    assert any("/etc/hostname" in t.detail for t in tw.trips), tw.trips


def test_clones_restored_on_a_lab_host_from_a_state_that_stays_there(clean_lab: Lab, cloud_spec: VMSpec,
                                                                     tcg_timeouts: Timeouts,
                                                                     tmp_path: Path) -> None:
    """Boot once, restore per run, on a remote host: the template is saved into
    the host's pool (no path the client has), every clone is restored there,
    independent (console, urandom, clock: see tests/test_snapshot_real.py), and
    the state goes with the store."""
    lab = clean_lab
    backend = LibvirtBackend(Host(lab.uri, capacity=CLONES), owns_host=True)
    store = Snapshots(workdir=tmp_path / "templates", cache=tmp_path / "tools")
    with tripwire(lab, strict=False) as tw:
        try:
            seen = _run_clones(backend, cloud_spec, tcg_timeouts, tmp_path / "runs", store)
            saved = store.templates[0].saved
            assert saved.path.rsplit("/", 1)[-1] in lab.volumes(), "the state lives in the host's pool"
        finally:
            store.close()
            backend.close()
    assert not tw.trips, tw.trips
    assert not Path(saved.path).exists(), "a path on the lab host, not on this machine"
    runs = [s for s in seen if s is not None]
    assert len(runs) == CLONES and all(s.restored for s in runs)
    assert len({s.urandom for s in runs}) == CLONES
    assert all(abs(s.clock_skew) < AGE / 2 for s in runs), runs
    assert len(store.templates) == 1


# -- the host's cache of uploaded content ------------------------------------------------------


def _other_client(n: int) -> Owner:
    """A kvmlab process of another client machine (same host name, another id)."""
    me = owners.me()
    return Owner(100_000 + n, me.started, me.boot, f"{me.client.split('~')[0]}~0000000{n}")


def _volume_sha256(lab: Lab, path: str) -> str:
    return lab.run(["sha256sum", path]).split()[0]


def _upload_as_a_new_command(lab: Lab, path: Path, kind: str) -> Uploaded:
    """Upload ``path`` through a Host of its own, as one kvmlab command does."""
    host = Host(lab.uri)
    try:
        return host.storage.upload(path, kind)
    finally:
        host.close()


def test_uploads_are_cached_on_the_host_for_later_commands_and_other_clients(clean_lab: Lab,
                                                                             tmp_path: Path) -> None:
    """Two commands in a row: the second sends nothing. Two clients uploading
    the same content at once: one sends it, the other waits and reuses it,
    and the volume holds exactly the file."""
    lab = clean_lab
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(os.urandom(24 << 20))
    digest = hashlib.sha256(kernel.read_bytes()).hexdigest()
    up = _upload_as_a_new_command(lab, kernel, "kernel")
    assert up.bytes_sent == kernel.stat().st_size
    again = _upload_as_a_new_command(lab, kernel, "kernel")
    assert (again.bytes_sent, again.path) == (0, up.path)
    assert _volume_sha256(lab, up.path) == digest

    other = tmp_path / "initrd"
    other.write_bytes(os.urandom(24 << 20))
    hosts = [Host(lab.uri, owner=_other_client(i)) for i in (1, 2)]
    got: dict[int, object] = {}
    start = threading.Barrier(2)

    def up_from(i: int) -> None:
        start.wait()
        try:
            got[i] = hosts[i].storage.upload(other, "initrd")
        except Exception as e:
            got[i] = e

    try:
        threads = [threading.Thread(target=up_from, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        results = [got[0], got[1]]
        assert all(isinstance(r, Uploaded) for r in results), results
        ups = [r for r in results if isinstance(r, Uploaded)]
        assert sorted(u.bytes_sent for u in ups) == [0, other.stat().st_size], ups
        assert ups[0].path == ups[1].path
        assert _volume_sha256(lab, ups[0].path) == hashlib.sha256(other.read_bytes()).hexdigest()
    finally:
        for h in hosts:
            h.close()


def test_a_cached_qcow2_disk_is_reused_after_the_host_probes_it(clean_lab: Lab, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """An image's qcow2 disk uploaded as content reads, once libvirt probes
    the pool (a refresh: snapshot overlays do one), as its virtual size: the
    next command must still find it whole, not delete and send it again."""
    lab = clean_lab
    disk = tmp_path / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
    with disk.open("ab") as f:
        f.write(os.urandom(1 << 20))  # content of its own: no other test's volume
    up = _upload_as_a_new_command(lab, disk, "disk")
    assert up.bytes_sent == disk.stat().st_size
    lab.virsh("pool-refresh", "kvmlab")
    assert f"{1 << 30}" in lab.virsh("vol-dumpxml", up.path), "libvirt reads it as a 1 GiB qcow2 now"
    caplog.set_level(logging.INFO, logger="kvmlab.vmm.storage")
    again = _upload_as_a_new_command(lab, disk, "disk")
    assert (again.bytes_sent, again.path) == (0, up.path), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "wrong size" in r.getMessage()]


def test_gc_keeps_what_a_running_job_uses(clean_lab: Lab, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A job holds its volumes (leases) while ``kvmlab host gc --max-size 0``
    runs from another client: they stay; once the job ends, gc takes them.
    A volume whose uploader died mid-upload is uploaded again by the next
    client once its upload has stalled."""
    lab = clean_lab
    files = []
    for name in ("a", "b"):
        f = tmp_path / name
        f.write_bytes(os.urandom(4 << 20))
        files.append(f)
    running = Host(lab.uri, owner=_other_client(1))
    try:
        held = running.storage.upload(files[0], "kernel")
        done = Host(lab.uri)
        try:
            loose = done.storage.upload(files[1], "kernel")
        finally:
            done.close()
        from kvmlab.cli import main

        assert main(["host", "cache", lab.uri]) == 0
        assert "2 cached volumes, 8.0 MiB, 1 in use by running jobs" in capsys.readouterr().out
        assert main(["host", "gc", lab.uri, "--max-size", "0"]) == 0
        out = capsys.readouterr().out
        assert f"removed {loose.path.rsplit('/', 1)[1]}" in out, out
        vols = lab.volumes()
        assert held.path.rsplit("/", 1)[1] in vols and loose.path.rsplit("/", 1)[1] not in vols
        assert _volume_sha256(lab, held.path) == hashlib.sha256(files[0].read_bytes()).hexdigest()
    finally:
        running.close()
    assert main(["host", "gc", lab.uri, "--max-size", "0"]) == 0
    assert not lab.volumes(), lab.volumes()

    # A killed uploader: the volume is there, unfinished, and does not grow.
    stalled = Host(lab.uri)
    try:
        pool = stalled.storage.pool()
        name = vc.content_name(hashlib.sha256(files[1].read_bytes()).hexdigest(), "kernel")
        pool.createXML(raw_volume_xml(name, files[1].stat().st_size), 0)
        del pool
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(storage_mod, "UPLOAD_STALL", 2.0)
            t0 = time.monotonic()
            up = stalled.storage.upload(files[1], "kernel")
        assert up.bytes_sent == files[1].stat().st_size and time.monotonic() - t0 >= 2.0
        assert _volume_sha256(lab, up.path) == hashlib.sha256(files[1].read_bytes()).hexdigest()
    finally:
        stalled.close()


def test_a_job_that_uploaded_keeps_the_hosts_cache_within_its_limit(clean_lab: Lab, tmp_path: Path) -> None:
    """At its end, a job that uploaded to a host collects the host's volume
    cache to its limit (``vm.hosts[].cache_max_gb``): the volumes used longest
    ago go first, never one a running job leases; a job that uploaded nothing
    leaves the cache alone, and so does a limit of 0."""
    lab = clean_lab
    files = []
    for name in ("held", "old", "new"):
        f = tmp_path / name
        f.write_bytes(os.urandom(4 << 20))
        files.append(f)

    def there(up: Uploaded) -> bool:
        return up.path.rsplit("/", 1)[1] in lab.volumes()

    running = Host(lab.uri, owner=_other_client(3))
    try:
        held = running.storage.upload(files[0], "kernel")
        unlimited = Host(lab.uri, cache_max_bytes=0)
        try:
            old = unlimited.storage.upload(files[1], "kernel")
        finally:
            unlimited.close()
        assert there(held) and there(old)
        time.sleep(1.1)  # the volumes' use times
        job = Host(lab.uri, cache_max_bytes=9 << 20)
        try:
            new = job.storage.upload(files[2], "kernel")
        finally:
            job.close()
        # 12 MiB against 9: the oldest unleased volume goes, the leased one stays.
        assert there(held) and there(new) and not there(old), lab.volumes()
        reuse = Host(lab.uri, cache_max_bytes=1)
        try:
            assert reuse.storage.upload(files[2], "kernel").bytes_sent == 0
        finally:
            reuse.close()
        assert there(new), lab.volumes()  # uploaded nothing: collected nothing
    finally:
        running.close()


def test_a_job_that_leases_while_gc_runs_keeps_its_volume(clean_lab: Lab, tmp_path: Path) -> None:
    """The two orders of a collection and a job that starts meanwhile. (1) The
    job leases after gc listed the volume as unused and before gc removes it:
    gc sees the lease on its second look and keeps the volume. (2) gc has
    marked the volume doomed when the job leases: the job waits for gc, then
    uploads it again; a mark left by a killed gc is removed after its age."""
    lab = clean_lab
    f = tmp_path / "k"
    f.write_bytes(os.urandom(2 << 20))
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    first = Host(lab.uri)
    try:
        first.storage.upload(f, "kernel")
    finally:
        first.close()
    collector, job = Host(lab.uri), Host(lab.uri, owner=_other_client(2))
    try:
        real = storage_mod.HostStorage._collect
        took: list[Uploaded] = []

        def lease_first(self: storage_mod.HostStorage, pool: object, name: str, now: float) -> bool:
            took.append(job.storage.upload(f, "kernel"))  # between gc's listing and its removal
            return real(self, pool, name, now)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(storage_mod.HostStorage, "_collect", lease_first)
            report = collector.storage.cache(gc=True, max_bytes=0)
        assert not report.removed and took and took[0].bytes_sent == 0, report
        assert _volume_sha256(lab, took[0].path) == digest
        assert not [v for v in lab.volumes() if v.endswith(vc.DOOMED_SUFFIX)]
    finally:
        job.close()
    # (2) A collection holds the mark; the job waits, then finds the volume gone.
    name = vc.content_name(digest, "kernel")
    pool = collector.storage.pool()
    pool.createXML(raw_volume_xml(vc.doomed_name(name), 0), 0)

    def finish_gc() -> None:
        time.sleep(1.5)
        p = collector.storage.pool()
        for n in (vc.done_name(name), name, vc.doomed_name(name)):
            p.storageVolLookupByName(n).delete(0)

    t = threading.Thread(target=finish_gc)
    late = Host(lab.uri, owner=_other_client(3))
    try:
        t0 = time.monotonic()
        t.start()
        up = late.storage.upload(f, "kernel")
        t.join()
        assert time.monotonic() - t0 >= 1.5 and up.bytes_sent == f.stat().st_size, up
        assert _volume_sha256(lab, up.path) == digest
    finally:
        late.close()
    # A mark whose collection was killed does not hold a job for long.
    pool.createXML(raw_volume_xml(vc.doomed_name(name), 0), 0)
    again = Host(lab.uri, owner=_other_client(4))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(vc, "DOOMED_MAX_AGE", 0.0)
            time.sleep(1.1)
            assert again.storage.upload(f, "kernel").bytes_sent == 0
        assert vc.doomed_name(name) not in lab.volumes()
    finally:
        again.close()
        del pool
        collector.close()
    from kvmlab.cli import main

    assert main(["host", "gc", lab.uri, "--max-size", "0"]) == 0
    assert not lab.volumes(), lab.volumes()


# -- the accelerator, chosen on each host ---------------------------------------------------------


def _per_host_fleet(cloud_spec: VMSpec, *hosts: HostConfig) -> Fleet:
    """A libvirt fleet over ``hosts`` that leaves the accelerator to each host."""
    vm = VMConfig(backend="libvirt", hosts=hosts)
    assert choose_accel(vm, cloud_spec.kernel) is PER_HOST
    fleet = make_backend(vm)
    assert isinstance(fleet, Fleet)
    return fleet


def _crash_twice_on(fleet: Fleet, cloud_spec: VMSpec, tmp_path: Path,
                    snapshots: Snapshots | None = None) -> None:
    """Two sysrq crashes on ``fleet`` with the spec left to ``auto``, as a
    bisection's tester asks for them."""
    spec = dataclasses.replace(cloud_spec, accel=Accel.AUTO)
    prepared = ShellCommand("sleep 2; echo c > /proc/sysrq-trigger").prepare(tmp_path)
    result = run_repro(spec, prepared, backend=fleet, timeouts=Timeouts(),
                       options=ReproOptions(count=2, run_time=60), workdir=tmp_path / "runs",
                       ready_marker=MARKER, snapshots=snapshots)
    assert [o.status for o in result.outcomes] == [RunStatus.CRASHED] * 2, [o.detail for o in result.outcomes]


def test_each_host_chooses_its_own_accelerator(clean_lab: Lab, cloud_spec: VMSpec, tmp_path: Path) -> None:
    """A fleet of this machine's libvirt (``auto``: probed by booting there,
    through libvirt) and the lab host (``accel: tcg`` in the config): each VM
    runs with its own host's answer, and the lab, left to ``auto``, resolves
    its own (it has no /dev/kvm, this machine has)."""
    lab = clean_lab
    fleet = _per_host_fleet(cloud_spec, HostConfig("qemu:///system", capacity=1),
                            HostConfig(lab.uri, capacity=1, accel="tcg"))
    try:
        _crash_twice_on(fleet, cloud_spec, tmp_path)
        chosen = {m.label: m.backend.accel_for(cloud_spec.kernel) for m in fleet.members
                  if isinstance(m.backend, LibvirtBackend)}
    finally:
        fleet.close()
    local, remote = chosen["local"], chosen[f"root@{lab.ip}"]
    assert remote.accel is Accel.TCG and remote.reason == f"set for root@{lab.ip}", remote
    assert "on local" in local.reason and "remembered" not in local.reason, local
    assert local.reason.startswith(("a KVM guest booted", "KVM guest did not boot")), local
    types = {}
    for i in range(2):
        d = tmp_path / "runs" / f"vm-{i}"
        host = (d / "host").read_text().split()[0]
        types[host] = ET.fromstring((d / "domain.xml").read_text()).get("type")
    assert types == {"local": "kvm" if local.accel is Accel.KVM else "qemu", f"root@{lab.ip}": "qemu"}

    # Left to auto, the lab answers for itself: it offers no KVM domains.
    host = Host(lab.uri)
    try:
        own = resolve_host_accel(host, cloud_spec.kernel, cache_dir=tmp_path / "probe")
    finally:
        host.close()
    assert own.accel is Accel.TCG and own.reason == f"root@{lab.ip} offers no KVM domains", own


def test_a_lab_host_left_to_auto_restores_clones_it_chose_the_accelerator_for(
        clean_lab: Lab, cloud_spec: VMSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The defaults on a lab host (``accel: auto``, ``vm.snapshot: auto``): the
    spec stays AUTO until a VM starts there, the template and its clones are
    the host's choice (TCG: the lab has no KVM), and the runs restore. The
    pool refused that spec ('resolve Accel.AUTO') once the fleet was wrapped
    for restoring."""
    fleet = _per_host_fleet(cloud_spec, HostConfig(clean_lab.uri, capacity=2))
    store = Snapshots(workdir=tmp_path / "templates", cache=tmp_path / "tools")
    caplog.set_level(logging.DEBUG, logger="kvmlab.vmm.snapshot")
    try:
        _crash_twice_on(fleet, cloud_spec, tmp_path, snapshots=store)
    finally:
        store.close()
        fleet.close()
    assert len(store.templates) == 1 and store.templates[0].spec.accel is Accel.AUTO
    restored = [r.getMessage() for r in caplog.records if "restored from" in r.getMessage()]
    assert len(restored) == 2, caplog.text
