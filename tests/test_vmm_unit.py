"""Unit tests of the VM manager's pure parts: argv and domain XML builders
(snapshots), timeouts, config validation, module resolution, the console
watcher fed from a pipe."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from kvmlab.config import VMConfig, load_config
from kvmlab.errors import ConfigError, MissingFileError, UserError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.console import ConsoleWatcher, EventKind
from kvmlab.vmm.initramfs import NEEDED_MODULES
from kvmlab.vmm.modules import kernel_release, resolve_modules
from kvmlab.vmm.ports import PortAllocator, PortExhaustedError
from kvmlab.vmm.qemu_argv import qemu_argv
from kvmlab.vmm.root import GuestRoot, RootKind
from kvmlab.vmm.spec import Accel, VMSpec

pytestmark = pytest.mark.unit

SNAPSHOTS = Path(__file__).parent / "snapshots"

INITRAMFS = GuestRoot("initramfs", RootKind.INITRAMFS, Path("/k/initramfs.cpio.gz"), Path("/k/id"))
DISK = GuestRoot("bookworm", RootKind.DISK, Path("/k/bookworm.qcow2"), Path("/k/id"),
                 cmdline=("root=/dev/vda", "rw"))


def _snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; UPDATE_SNAPSHOTS=1 to accept"


def test_qemu_argv_initramfs_tcg() -> None:
    spec = VMSpec(kernel=Path("/k/bzImage"), root=INITRAMFS, cpus=2, memory_mb=1024, accel=Accel.TCG,
                  name="vm", cmdline=("quiet",))
    argv = qemu_argv(spec, ssh_port=2222, disk=None)
    _snapshot("qemu_argv_initramfs_tcg.txt", "\n".join(argv) + "\n")
    assert "-no-reboot" in argv
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22" in argv


def test_qemu_argv_disk_kvm() -> None:
    spec = VMSpec(kernel=Path("/k/bzImage"), root=DISK, accel=Accel.KVM, name="vm")
    argv = qemu_argv(spec, ssh_port=2223, disk=Path("/w/overlay.qcow2"))
    _snapshot("qemu_argv_disk_kvm.txt", "\n".join(argv) + "\n")
    assert argv[argv.index("-cpu") + 1] == "host"
    assert "file=/w/overlay.qcow2,format=qcow2,if=virtio,cache=unsafe" in argv
    # The base image itself is never handed to QEMU.
    assert not any("bookworm.qcow2" in a for a in argv)


def test_qemu_argv_refuses_unresolved_accel() -> None:
    spec = VMSpec(kernel=Path("/k/bzImage"), root=INITRAMFS, accel=Accel.AUTO)
    with pytest.raises(ValueError, match="AUTO"):
        qemu_argv(spec, ssh_port=1, disk=None)


def test_timeouts_scale_every_field() -> None:
    t = Timeouts().scaled(4)
    base = Timeouts()
    assert t.scale == 4
    assert t.boot == base.boot * 4 and t.no_output == base.no_output * 4 and t.shutdown == base.shutdown * 4
    assert t.scaled(0.5).boot == base.boot * 2
    with pytest.raises(ValueError):
        base.scaled(0)


def test_config_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "kvmlab.yaml"
    cfg.write_text("vm:\n  cpus: 2\n  cpu: 4\n")
    with pytest.raises(ConfigError, match=r"kvmlab.yaml.vm: unknown key 'cpu'"):
        load_config(cfg)


@pytest.mark.parametrize(
    "text, match",
    [
        ("vm:\n  backend: xen\n", "vm.backend"),
        ("vm:\n  count: two\n", "count: expected a whole number"),
        ("vm:\n  count: 0\n", "count: must be positive"),
        ("timeouts:\n  boot: fast\n", "boot: expected a number"),
        ("timeouts:\n  scale: 2\n", "scale"),
        ("[1, 2]\n", "top level must be a mapping"),
        ("vm: [\n", "not valid YAML"),
    ],
)
def test_config_bad_values(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_config_defaults_and_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vm:\n  backend: libvirt\n  cmdline: [quiet]\ntimeouts:\n  boot: 30\n")
    c = load_config(cfg)
    assert c.vm == VMConfig(backend="libvirt", cmdline=("quiet",))
    assert c.timeouts.boot == 30.0
    with pytest.raises(MissingFileError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_kernel_release_rejects_non_bzimage(tmp_path: Path) -> None:
    junk = tmp_path / "bzImage"
    junk.write_bytes(b"\0" * 8192)
    assert kernel_release(junk) is None
    with pytest.raises(MissingFileError):
        kernel_release(tmp_path / "missing")


def test_resolve_modules_orders_deps_and_skips_builtin(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/net/virtio_net.ko: kernel/net/failover.ko kernel/drivers/virtio/virtio_ring.ko "
        "kernel/drivers/virtio/virtio.ko\n"
        "kernel/net/failover.ko:\n"
        "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko "
        "kernel/drivers/virtio/virtio.ko\n"
    )
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    mods = resolve_modules(tmp_path, NEEDED_MODULES)
    pos = {m.rsplit("/", 1)[-1]: i for i, m in enumerate(mods.paths)}
    order = list(mods.paths)
    assert pos["virtio.ko"] < pos["virtio_ring.ko"] < pos["virtio_net.ko"]
    assert "kernel/drivers/block/virtio_blk.ko.xz" in order
    assert not any("virtio_pci" in m for m in order)
    assert resolve_modules(tmp_path / "none", NEEDED_MODULES).paths == ()
    with pytest.raises(MissingFileError, match="has no module virtio_gpu"):
        resolve_modules(tmp_path, ["virtio_gpu"], strict=True)
    assert mods.plain_names()[pos["virtio_blk.ko.xz"]] == "kernel/drivers/block/virtio_blk.ko"


def test_port_allocator_exhaustion() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        alloc = PortAllocator(low=taken, high=taken)
        with pytest.raises(PortExhaustedError, match=f"{taken}-{taken}"):
            alloc.reserve()


def _feeder(chunks: list[tuple[float, bytes]]) -> tuple[int, threading.Thread]:
    r, w = os.pipe()

    def feed() -> None:
        for delay, data in chunks:
            time.sleep(delay)
            os.write(w, data)
        os.close(w)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return r, t


def test_console_watcher_events(tmp_path: Path) -> None:
    r, feeder = _feeder([
        (0.0, b"[    0.000000] Linux version 6.1.0 (gcc)\n[    0.1] booting\n"),
        (0.1, b"kvmlab-guest-ready\n"),
        (0.1, b"[   12.345678][  T123] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"),
        (0.05, b"[   12.345679][  T123] #PF: supervisor read access in kernel mode\n"),
        (0.05, b"[    0.000000] Linux version 6.1.0 (gcc)\n"),
    ])
    w = ConsoleWatcher(r, tmp_path / "console.log", no_output=30, ready_marker="kvmlab-guest-ready")
    assert w.wait_for({EventKind.EOF}, timeout=10) is not None
    feeder.join()
    kinds = [e.kind for e in w.events()]
    assert kinds == [EventKind.READY, EventKind.CRASH, EventKind.REBOOT, EventKind.EOF]
    crash = w.crash
    assert crash is not None and "BUG: kernel NULL pointer dereference" in crash.line
    assert w.crash_text().startswith("[   12.345678][  T123] BUG: kernel NULL")
    assert "#PF: supervisor read access" in w.crash_text()
    assert (tmp_path / "console.log").read_bytes().count(b"Linux version") == 2
    w.close()


def test_ready_marker_cut_by_a_kernel_line_is_still_seen(tmp_path: Path) -> None:
    # As a real TCG boot printed it (CI): the kernel's message landed inside
    # the marker, and the two halves arrived in separate reads.
    r, feeder = _feeder([
        (0.0, b"[    5.030966] ACPI: \\_SB_.GSIG: Enabled at IRQ 22\r\nkvmlab-guest-rea"),
        (0.1, b"[    6.005102] Not activating Mandatory Access Control as /sbin/tomoyo-init does not "
              b"exist.\r\n"),
        (0.1, b"dy\r\n\r\nBusyBox v1.35.0 built-in shell (ash)\r\n"),
    ])
    w = ConsoleWatcher(r, tmp_path / "console.log", no_output=30, ready_marker="kvmlab-guest-ready")
    assert w.wait_for({EventKind.EOF}, timeout=10) is not None
    feeder.join()
    assert [e.kind for e in w.events()] == [EventKind.READY, EventKind.EOF]
    w.close()
    # Once per boot; a marker that never completes is never seen.
    r, feeder = _feeder([(0.0, b"kvmlab-guest-ready\nkvmlab-guest-ready\n"), (0.1, b"kvmlab-guest-rea\nd\n")])
    w = ConsoleWatcher(r, tmp_path / "console2.log", no_output=30, ready_marker="kvmlab-guest-ready")
    assert w.wait_for({EventKind.EOF}, timeout=10) is not None
    feeder.join()
    assert [e.kind for e in w.events()] == [EventKind.READY, EventKind.EOF]
    w.close()
    r, feeder = _feeder([(0.0, b"kvmlab-guest-rea\r\n[    1.0] x\r\nd\r\n")])
    w = ConsoleWatcher(r, tmp_path / "console3.log", no_output=30, ready_marker="kvmlab-guest-ready")
    assert w.wait_for({EventKind.EOF}, timeout=10) is not None
    feeder.join()
    assert [e.kind for e in w.events()] == [EventKind.EOF]
    w.close()


def test_console_watcher_ignores_lookalikes_and_reports_silence(tmp_path: Path) -> None:
    r, feeder = _feeder([
        (0.0, b"systemd[1]: WARNING: this is not a kernel warning\n"),
        (0.0, b"echo 'BUG: in a shell string'\n"),
        (0.0, b"random: crng init done\n"),
        (1.2, b"done\n"),
    ])
    w = ConsoleWatcher(r, tmp_path / "console.log", no_output=0.5)
    assert w.wait_for({EventKind.NO_OUTPUT}, timeout=5) is not None
    assert w.wait_for({EventKind.EOF}, timeout=5) is not None
    feeder.join()
    assert w.crash is None
    w.close()


def test_pool_rejects_bad_spec(tmp_path: Path) -> None:
    from kvmlab.vmm.pool import validate_spec

    key = tmp_path / "id"
    key.write_text("k")
    img = tmp_path / "initrd"
    img.write_text("x")
    root = GuestRoot("initramfs", RootKind.INITRAMFS, img, key)
    with pytest.raises(MissingFileError, match="no-such-bzImage"):
        validate_spec(VMSpec(kernel=tmp_path / "no-such-bzImage", root=root))
    bogus = tmp_path / "bzImage"
    bogus.write_bytes(b"MZ" + b"\0" * 9000)
    with pytest.raises(UserError, match="not a bootable x86 bzImage"):
        validate_spec(VMSpec(kernel=bogus, root=root))


def test_spawn_names_a_missing_program_and_outlives_its_calling_thread() -> None:
    import threading

    from kvmlab import proc
    from kvmlab.errors import HostToolError

    with pytest.raises(HostToolError, match="no-such-program-kvmlab: not found"):
        proc.spawn(["no-such-program-kvmlab"], die_with_us=True)
    started = []

    def worker() -> None:  # like a pool's start-up thread: starts a VM, then ends
        started.append(proc.spawn(["sleep", "30"], die_with_us=True))
        time.sleep(0.3)  # setpriv has set the signal by now

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    time.sleep(0.3)  # a parent-death signal tied to the exited thread would have fired by now
    try:
        assert started[0].poll() is None
    finally:
        proc.kill_group(started[0])
