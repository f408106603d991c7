"""Boot once, restore per run, against real components: QEMU under TCG, a real
libvirtd, the Debian cloud kernel with kvmlab's initramfs.

One template boots, is saved, and three clones are restored from it at once:
each runs a command over SSH, has its own console log (a line it writes to
/dev/kmsg is in its log and no other), reads different bytes from
/dev/urandom than its siblings, and has the host's clock. Nothing survives
the store's close (no QEMU, no domain, no state file).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from kvmlab.errors import LibvirtError
from kvmlab.images.build import BuildResult
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.backend import Backend
from kvmlab.vmm.factory import close_backend
from kvmlab.vmm.fleet import Fleet
from kvmlab.vmm.libvirt_backend import LibvirtBackend
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.qemu_backend import QemuBackend, QemuInstance
from kvmlab.vmm.snapshot import Snapshots, TemplateRecipe
from kvmlab.vmm.spec import Accel, Share, VMSpec
from kvmlab.vmm.spread import spread
from tests.fixtures_vm import MARKER
from tests.test_images_boot import disk_kernel

pytestmark = pytest.mark.vm

CLONES = 3


def _backend(name: str) -> Backend:
    if name == "qemu":
        return QemuBackend()
    try:
        return LibvirtBackend("qemu:///system")
    except LibvirtError as e:
        pytest.skip(f"libvirtd not reachable: {e}")


@dataclasses.dataclass(frozen=True)
class Seen:
    index: int
    restored: bool
    urandom: str
    clock_skew: float
    console_log: Path


#: Seconds between the template's save and its clones: a clone that kept the
#: template's clock would be behind by at least that much.
AGE = 10.0


def _run_clones(backend: Backend, spec: VMSpec, timeouts: Timeouts, workdir: Path,
                store: Snapshots) -> list[Seen | None]:
    recipe = TemplateRecipe(timeouts, MARKER)
    assert store.template(backend, spec, recipe) is not None, "the template was made"
    time.sleep(AGE)
    fleet = store.fleet(Fleet.single(backend, CLONES), spec, recipe)
    all_up = threading.Barrier(CLONES, timeout=timeouts.boot * 2)

    def job(m: Machine) -> Seen:
        boot = m.wait_ready()
        assert boot.ok, boot.console_tail
        host_now = time.time()
        out = m.run(f"echo kvmlab-clone-{m.index} > /dev/kmsg; date +%s; "
                    "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'", timeout=60)
        assert out.ok, out.output
        guest_now, rnd = out.output.split()
        all_up.wait()  # every clone lives at once
        m.watcher.settle(quiet=0.5, limit=5)
        return Seen(m.index, m.restored, rnd, float(guest_now) - host_now, m.console_log)

    got = spread(spec, CLONES, fleet=fleet, timeouts=timeouts, workdir=workdir, ready_marker=MARKER,
                 job=job, host_failure=lambda _s: None, no_host=lambda _i, why: pytest.fail(why))
    return got.results


BACKENDS = [pytest.param("qemu"), pytest.param("libvirt", marks=[pytest.mark.libvirt, pytest.mark.slow])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_clones_of_one_template_are_independent(backend: str, cloud_spec: VMSpec, tcg_timeouts: Timeouts,
                                                no_leftovers: Path) -> None:
    be = _backend(backend)
    store = Snapshots(workdir=no_leftovers / "templates", cache=no_leftovers / "tools")
    try:
        seen = _run_clones(be, cloud_spec, tcg_timeouts, no_leftovers / "runs", store)
        assert len(store.templates) == 1, "one template for every clone"
        saved = store.templates[0].saved
    finally:
        store.close()
        close = getattr(be, "close", None)
        if callable(close):
            close()
    runs = [s for s in seen if s is not None]
    assert len(runs) == CLONES
    assert all(s.restored for s in runs), "every VM is a clone, none booted"
    assert len({s.urandom for s in runs}) == CLONES, [s.urandom for s in runs]
    for s in runs:
        # The template was saved AGE seconds and more ago: a clone that kept
        # its clock would be behind by that much.
        assert abs(s.clock_skew) < AGE / 2, s
        text = s.console_log.read_text(errors="replace")
        assert f"kvmlab-clone-{s.index}" in text, text[-2000:]
        others = [o.index for o in runs if o.index != s.index and f"kvmlab-clone-{o.index}" in text]
        assert not others, f"clone {s.index}'s console has clone {others}'s line"
    if backend == "qemu":
        assert not Path(saved.path).exists(), "the saved state outlived the store"
    else:
        import libvirt

        conn = libvirt.open("qemu:///system")
        try:
            names = {d.name() for d in conn.listAllDomains()}
        finally:
            conn.close()
        assert not {n for n in names if n.startswith(f"kvmlab-{os.getpid()}-")}, names


def test_a_9p_share_boots_as_before_and_says_so_once(cloud_spec: VMSpec, tcg_timeouts: Timeouts,
                                                     no_leftovers: Path, caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    shared = no_leftovers / "shared"
    shared.mkdir()
    spec = dataclasses.replace(cloud_spec, shares=(Share("kvmlab", shared),))
    store = Snapshots(workdir=no_leftovers / "templates", cache=no_leftovers / "tools")
    caplog.set_level(logging.INFO, logger="kvmlab.vmm.snapshot")
    fleet = Fleet.single(QemuBackend(), 1)
    try:
        for _ in range(2):
            assert store.fleet(fleet, spec, TemplateRecipe(tcg_timeouts, MARKER)) is fleet

        def job(m: Machine) -> bool:
            assert m.wait_ready().ok, m.watcher.tail()
            return m.restored

        got = spread(spec, 1, fleet=store.fleet(fleet, spec, TemplateRecipe(tcg_timeouts, MARKER)),
                     timeouts=tcg_timeouts, workdir=no_leftovers / "runs", ready_marker=MARKER, job=job,
                     host_failure=lambda _r: None, no_host=lambda _i, why: pytest.fail(why))
    finally:
        store.close()
    assert got.results == [False], "the VM booted"
    assert not store.templates
    said = [r.getMessage() for r in caplog.records if "9p share" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("snapshot: booting every VM instead of restoring")


class _CrashesFirstQemu(QemuBackend):
    """QEMU whose first VM dies of SIGSEGV once its kernel prints: what
    QEMU 7.2's TCG did once to a template in CI."""

    def __init__(self) -> None:
        super().__init__()
        self.created = 0
        self.killer: threading.Thread | None = None

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> QemuInstance:
        inst = super().create(spec, workdir=workdir, index=index)
        self.created += 1
        if self.created == 1:
            console = workdir / "console.log"
            self.killer = threading.Thread(target=self._kill_when_booting, args=(inst, console))
            self.killer.start()
        return inst

    @staticmethod
    def _kill_when_booting(inst: QemuInstance, console: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if console.is_file() and b"Linux version" in console.read_bytes():
                pid = inst.qemu_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGSEGV)
                return
            time.sleep(0.05)


def test_a_template_whose_qemu_dies_while_booting_boots_again(cloud_spec: VMSpec, tcg_timeouts: Timeouts,
                                                              no_leftovers: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Not the kernel's doing: one more template boot, not a boot per run;
    the first attempt's console log is kept."""
    be = _CrashesFirstQemu()
    store = Snapshots(workdir=no_leftovers / "templates", cache=no_leftovers / "tools")
    caplog.set_level(logging.INFO, logger="kvmlab.vmm.snapshot")
    try:
        t = store.template(be, cloud_spec, TemplateRecipe(tcg_timeouts, MARKER))
    finally:
        store.close()
        if be.killer is not None:
            be.killer.join()
    assert t is not None, [r.getMessage() for r in caplog.records]
    assert be.created == 2
    said = [r.getMessage() for r in caplog.records]
    assert any("the template VM died while booting" in m and "booting it again" in m for m in said), said
    assert not any("instead of restoring" in m for m in said), said
    tdir = no_leftovers / "templates"
    first = (tdir / "template-1" / "console.log").read_text(errors="replace")
    assert "Linux version" in first
    assert MARKER not in first, "the first VM was killed before its userspace"
    assert MARKER in (tdir / "template-1-try2" / "console.log").read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_disk_root_clones_write_to_overlays_of_their_own(backend: str, bookworm_image: BuildResult,
                                                         tcg_timeouts: Timeouts, no_leftovers: Path) -> None:
    """A Debian disk image: the template's disk is frozen at its save, each
    clone writes to its own overlay on top of it (a file one clone writes is
    not in another's), and the reproducer's files copied into the template
    are in every clone."""
    kernel, initrd = disk_kernel(no_leftovers)
    spec = VMSpec(kernel=kernel, root=bookworm_image.entry.root(), accel=Accel.TCG, memory_mb=1024,
                  name="kvmlab-test", initrd=initrd)
    payload = no_leftovers / "payload"
    payload.write_text("from the template\n")
    recipe = TemplateRecipe(tcg_timeouts, None, files=((payload, "/tmp/kvmlab-repro/payload", 0o644),))
    be = _backend(backend)
    store = Snapshots(workdir=no_leftovers / "templates", cache=no_leftovers / "tools")
    n = 2
    both = threading.Barrier(n, timeout=tcg_timeouts.boot * 2)

    def job(m: Machine) -> tuple[bool, str]:
        boot = m.wait_ready()
        assert boot.ok, boot.console_tail
        assert m.run(f"echo {m.index} > /root/clone-{m.index} && sync", timeout=60).ok
        both.wait()
        out = m.run("cat /tmp/kvmlab-repro/payload; ls /root", timeout=60)
        return m.restored, out.output

    try:
        got = spread(spec, n, fleet=store.fleet(Fleet.single(be, n), spec, recipe), timeouts=tcg_timeouts,
                     workdir=no_leftovers / "runs", ready_marker=None, job=job,
                     host_failure=lambda _r: None, no_host=lambda _i, why: pytest.fail(why))
    finally:
        store.close()
        close_backend(be)
    for i, r in enumerate(got.results):
        assert r is not None
        restored, out = r
        assert restored
        assert "from the template" in out, out
        assert f"clone-{i}" in out and f"clone-{1 - i}" not in out, out
