"""Boot once per kernel, restore per run.

A :class:`Snapshots` store keeps, per backend (per host of a fleet) and per VM
spec, one *template*: a VM that booted the spec's kernel, got the run's files
(:class:`TemplateRecipe`) and was saved on its host by the backend's
:class:`~kvmlab.vmm.backend.Snapshotting` ability. :meth:`Snapshots.fleet`
gives a fleet whose backends start each VM as a clone of the template instead
of a boot. A clone is still a VM of its own: its own overlay, console, SSH
port; :class:`~kvmlab.vmm.machine.Machine` sets its clock and reseeds its RNG
from the host before it is ready (:mod:`kvmlab.vmm.refresh`).

Where a VM cannot be saved (a 9p share, a kept disk, a VM started paused, a
backend without the ability) or its template fails (the kernel does not boot,
the save fails), runs boot as before and one log line says why, once per
store and reason. A clone that fails to restore boots instead, with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from kvmlab.errors import InfraError, KvmlabError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm import refresh
from kvmlab.vmm.backend import (
    Backend,
    Instance,
    ResolvesAccel,
    SavedState,
    Snapshotting,
    WrappedInstance,
)
from kvmlab.vmm.fleet import Fleet, Member
from kvmlab.vmm.initramfs import EXTRA_DIR, with_files
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import VMSpec

log = logging.getLogger(__name__)

#: The values of ``vm.snapshot``.
MODES = ("auto", "off")
#: Where a disk root's template keeps the refresh helper.
DISK_HELPER = "/usr/local/sbin/" + refresh.NAME
#: Templates a store keeps per backend; older ones are discarded (each holds
#: the guest's memory on its host).
KEEP = 2
#: Boots of a template VM when its QEMU dies under it (a crash of QEMU
#: itself, seen with TCG): after that the runs boot.
TEMPLATE_TRIES = 2


@dataclass(frozen=True)
class TemplateRecipe:
    """What a template gets before it is saved, and how to wait for it."""

    timeouts: Timeouts
    ready_marker: str | None = None
    files: tuple[tuple[Path, str, int | None], ...] = ()
    """(host path, guest path, mode) copied in over SSH: a disk root's
    reproducer files (an initramfs root carries them in the image already)."""


@dataclass(frozen=True)
class Template:
    saved: SavedState
    spec: VMSpec
    """The spec the template booted (a clone is started with it)."""
    helper: str
    """The refresh helper's path in the guest."""
    boot_seconds: float
    save_seconds: float


def unsupported(spec: VMSpec) -> str | None:
    """Why a VM of ``spec`` cannot be saved and cloned (None: it can)."""
    if spec.shares:
        return "a 9p share (--share) cannot be saved with its VM (QEMU refuses to migrate a mounted export)"
    if spec.root.persistent:
        return "a kept disk is the VM's own: clones cannot share it"
    if spec.paused:
        return "a VM started paused (for a debugger) is not booted by kvmlab"
    return None


class RestoredInstance(WrappedInstance):
    """A clone, as the instance its backend started; tells the machine where
    the refresh helper is (:class:`~kvmlab.vmm.backend.IsRestored`)."""

    def __init__(self, inner: Instance, helper: str) -> None:
        super().__init__(inner)
        self._helper = helper

    def refresh_helper(self) -> str | None:
        return self._helper


class _Templates:
    """The templates of one backend, newest last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: OrderedDict[tuple[VMSpec, TemplateRecipe], Template | None] = OrderedDict()


class Snapshots:
    """Templates and their clones for one job; :meth:`close` discards them.

    ``workdir``: where each template keeps its console log
    (``template-<n>/``); ``cache``: where the refresh helper is compiled.
    """

    def __init__(self, *, workdir: Path, cache: Path, keep: int = KEEP) -> None:
        self.workdir = workdir
        self.cache = cache
        self.keep = keep
        self._lock = threading.Lock()
        self._per_backend: dict[int, tuple[Backend, _Templates]] = {}
        self._said: set[str] = set()
        self._count = 0
        self.templates: list[Template] = []
        """Every template made (for reports and benchmarks)."""

    def say_once(self, why: str) -> None:
        """Log, once per store, that runs boot instead of restoring, and why."""
        with self._lock:
            if why in self._said:
                return
            self._said.add(why)
        log.info("snapshot: booting every VM instead of restoring: %s", why)

    def fleet(self, fleet: Fleet, spec: VMSpec, recipe: TemplateRecipe) -> Fleet:
        """``fleet`` with each member's VMs started as clones of a template of
        ``spec`` on that member; ``fleet`` itself when nothing can be cloned."""
        why = unsupported(spec)
        if why is None:
            lacking = [m.label for m in fleet.members if not isinstance(m.backend, Snapshotting)]
            if lacking:
                why = f"{', '.join(lacking)}: this backend cannot save a VM"
        if why is None:
            try:
                refresh.helper_binary(self.cache)
            except KvmlabError as e:
                why = f"no clock and RNG helper for restored guests ({e})"
        if why is not None:
            self.say_once(why)
            return fleet
        members = [Member(m.label, _Restoring(self, m.backend, spec, recipe), m.capacity, m.health)
                   for m in fleet.members]
        return Fleet(members, quarantine_after=fleet.quarantine_after)

    def template(self, backend: Backend, spec: VMSpec, recipe: TemplateRecipe) -> Template | None:
        """The template of ``spec`` on ``backend``, made on first use (None:
        it could not be made; the runs boot)."""
        with self._lock:
            _, templates = self._per_backend.setdefault(id(backend), (backend, _Templates()))
        with templates.lock:
            key = (spec, recipe)
            if key in templates.made:
                templates.made.move_to_end(key)
                return templates.made[key]
            t = self._make(backend, spec, recipe)
            templates.made[key] = t
            while len(templates.made) > self.keep:
                _, old = templates.made.popitem(last=False)
                if old is not None:
                    self._discard(backend, old)
            return t

    def _make(self, backend: Backend, spec: VMSpec, recipe: TemplateRecipe) -> Template | None:
        assert isinstance(backend, Snapshotting)
        helper = refresh.helper_binary(self.cache)
        files = list(recipe.files)
        if spec.root.kind is RootKind.INITRAMFS:
            tspec = dataclasses.replace(spec, root=with_files(spec.root, [(helper, refresh.NAME, 0o755)]))
            guest_helper = f"{EXTRA_DIR}/{refresh.NAME}"
        else:
            tspec = spec
            files.append((helper, DISK_HELPER, 0o755))
            guest_helper = DISK_HELPER
        with self._lock:
            self._count += 1
            n = self._count
        tspec = dataclasses.replace(tspec, name=f"{spec.name}-t{n}")
        attempt = 0
        while True:  # until saved, or given up (at most TEMPLATE_TRIES boots)
            attempt += 1
            # Each attempt keeps its own console log.
            tdir = self.workdir / (f"template-{n}" if attempt == 1 else f"template-{n}-try{attempt}")
            tdir.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            try:
                inst = backend.create(tspec, workdir=tdir, index=0)
            except InfraError as e:
                self.say_once(f"the template VM could not start: {e}")
                return None
            m = Machine(0, inst, tspec.root, tdir, recipe.timeouts, ready_marker=recipe.ready_marker,
                        started=started)
            try:
                boot = m.wait_ready()
                if not boot.ok:
                    if m.died_on_host(boot) and attempt < TEMPLATE_TRIES:
                        # QEMU crashed or was killed: not the kernel's doing,
                        # and one more boot is cheaper than booting every run.
                        log.warning("snapshot: the template VM died while booting (%s; console in %s): "
                                    "booting it again", m.instance.name, tdir)
                        continue
                    # The runs will see the same boot failure themselves.
                    self.say_once(f"the template VM did not boot ({boot.reason})")
                    return None
                booted = time.monotonic()
                for d in sorted({str(Path(guest).parent) for _h, guest, _m in files}):
                    m.run(f"mkdir -p {d}")
                for host, guest, mode in files:
                    m.copy_in(host, guest, mode=mode)
                m.run("sync")
                m.ssh.close()
                saved = backend.save(inst, timeout=recipe.timeouts.restore)
                break
            except KvmlabError as e:
                self.say_once(f"the template VM could not be saved: {e}")
                return None
            finally:
                m.close()
        t = Template(saved, tspec, guest_helper, booted - started, time.monotonic() - booted)
        log.info("snapshot: template %s booted in %.1fs, saved in %.1fs; runs restore it",
                 saved.name, t.boot_seconds, t.save_seconds)
        with self._lock:
            self.templates.append(t)
        return t

    @staticmethod
    def _discard(backend: Backend, t: Template) -> None:
        assert isinstance(backend, Snapshotting)
        try:
            backend.discard(t.saved)
        except KvmlabError as e:
            log.warning("snapshot: could not remove %s: %s", t.saved.path, e)

    def close(self) -> None:
        """Discard every template (their states and disks on their hosts)."""
        with self._lock:
            entries = list(self._per_backend.values())
            self._per_backend.clear()
        for backend, templates in entries:
            with templates.lock:
                for t in templates.made.values():
                    if t is not None:
                        self._discard(backend, t)
                templates.made.clear()


class _Restoring:
    """A backend whose VMs of one spec are clones of that spec's template."""

    def __init__(self, store: Snapshots, inner: Backend, spec: VMSpec, recipe: TemplateRecipe) -> None:
        self.store = store
        self.inner = inner
        self.spec = spec
        self.recipe = recipe
        self.name = getattr(inner, "name", "backend")

    def per_host_accel(self) -> bool:
        """:class:`~kvmlab.vmm.backend.ResolvesAccel` as the wrapped backend:
        a lab host still chooses its own accelerator for a template and its
        clones (without this a fleet of lab hosts refused ``Accel.AUTO``)."""
        return isinstance(self.inner, ResolvesAccel) and self.inner.per_host_accel()

    def create(self, spec: VMSpec, *, workdir: Path, index: int) -> Instance:
        if spec != self.spec:
            return self.inner.create(spec, workdir=workdir, index=index)
        t = self.store.template(self.inner, spec, self.recipe)
        if t is None:
            return self.inner.create(spec, workdir=workdir, index=index)
        assert isinstance(self.inner, Snapshotting)
        clone = dataclasses.replace(t.spec, name=spec.name)
        t0 = time.monotonic()
        try:
            inst = self.inner.restore(t.saved, clone, workdir=workdir, index=index,
                                      timeout=self.recipe.timeouts.restore)
        except InfraError as e:
            log.warning("vm %d: could not restore %s (%s): booting it instead", index, t.saved.name, e)
            return self.inner.create(spec, workdir=workdir, index=index)
        log.debug("%s: restored from %s in %.1fs", inst.name, t.saved.name, time.monotonic() - t0)
        return RestoredInstance(inst, t.helper)
