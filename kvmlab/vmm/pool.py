"""Pools: boot N VMs together, hand them out, and tear every one down.

Nothing survives a pool — no qemu process, libvirt domain, overlay, port or
temp dir — whether the caller's block ends normally, raises, is interrupted
with Ctrl-C, or the process gets SIGTERM (turned into an exception while the
pool is open, so the same cleanup path runs).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from kvmlab import owner, signals
from kvmlab.errors import MissingFileError, UserError
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.backend import Backend, ResolvesAccel
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.modules import kernel_release
from kvmlab.vmm.spec import Accel, VMSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


def validate_spec(spec: VMSpec, backend: object = None) -> None:
    """User errors in a spec, found before anything starts (``Accel.AUTO``
    only for a ``backend`` that resolves it per host)."""
    if spec.accel is Accel.AUTO and not (isinstance(backend, ResolvesAccel) and backend.per_host_accel()):
        raise ValueError("resolve Accel.AUTO (kvmlab.vmm.accel.resolve_accel) before starting a pool")
    if not spec.kernel.is_file():
        raise MissingFileError(f"kernel {spec.kernel}: no such file")
    if kernel_release(spec.kernel) is None:
        raise UserError(f"kernel {spec.kernel}: not a bootable x86 bzImage")
    if not spec.root.path.is_file():
        raise MissingFileError(f"guest root {spec.root.path}: no such file")
    if not spec.root.ssh_key.is_file():
        raise MissingFileError(f"ssh key {spec.root.ssh_key}: no such file")
    if spec.cpus < 1 or spec.memory_mb < 64:
        raise UserError(f"vm size: cpus={spec.cpus} memory_mb={spec.memory_mb} is too small")


class Pool:
    """``count`` VMs of ``spec`` on ``backend``.

    ``workdir``: where each VM gets ``vm-<index>/`` (console log, overlay);
    by default a temp dir removed at the end. Given by the caller, it is kept
    (with the console logs) and only what the VMs made inside it is removed.
    """

    def __init__(
        self,
        spec: VMSpec,
        count: int,
        *,
        backend: Backend,
        timeouts: Timeouts,
        workdir: Path | None = None,
        ready_marker: str | None = None,
    ) -> None:
        if count < 1:
            raise UserError(f"pool size must be at least 1, got {count}")
        validate_spec(spec, backend)
        self.spec = spec
        self.count = count
        self.backend = backend
        self.timeouts = timeouts
        self.ready_marker = ready_marker
        self._own_workdir = workdir is None
        self.workdir = workdir or owner.mkdtemp("pool")
        self.machines: list[Machine] = []
        self._lock = threading.Lock()
        self._signals = contextlib.ExitStack()
        self._closed = False

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> Pool:
        self._install_sigterm()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _install_sigterm(self) -> None:
        # SIGTERM unwinds (kvmlab.signals) until the pool is closed.
        self._signals.enter_context(signals.unwinding())

    def _start_one(self, index: int) -> Machine:
        vmdir = self.workdir / f"vm-{index}"
        vmdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        inst = self.backend.create(self.spec, workdir=vmdir, index=index)
        machine = Machine(
            index, inst, self.spec.root, vmdir, self.timeouts,
            ready_marker=self.ready_marker, started=started,
        )
        with self._lock:
            self.machines.append(machine)
        return machine

    def start(self) -> None:
        """Start every VM concurrently (returns once all are started, not booted)."""
        with ThreadPoolExecutor(max_workers=self.count, thread_name_prefix="pool-start") as ex:
            futures = [ex.submit(self._start_one, i) for i in range(self.count)]
            errors = [f.exception() for f in futures]
        self.machines.sort(key=lambda m: m.index)
        for e in errors:
            if e is not None:
                raise e

    def map(self, fn: Callable[[Machine], T]) -> list[T]:
        """Run ``fn`` on every machine at once; results in index order.

        When waiting is cut short (Ctrl-C, SIGTERM, one ``fn`` raising), the
        others are not waited for: closing the pool, which comes next, stops
        their VMs and so ends them. (Waiting would hold the teardown until a
        command running in a guest finished or timed out.)
        """
        ex = ThreadPoolExecutor(max_workers=len(self.machines), thread_name_prefix="pool")
        try:
            results = signals.results([ex.submit(fn, m) for m in self.machines])
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        return results

    @property
    def closed(self) -> bool:
        """The pool is closed or closing: its VMs are (being) stopped."""
        return self._closed

    def close(self) -> None:
        """Stop every VM and remove what the pool made. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # A second SIGTERM during cleanup must not abort the cleanup itself.
        try:
            with signals.cleanup_window((signal.SIGTERM,)):
                with self._lock:
                    machines = list(self.machines)
                if machines:
                    with ThreadPoolExecutor(max_workers=len(machines), thread_name_prefix="pool-stop") as ex:
                        for m, err in zip(machines, ex.map(_close_quietly, machines), strict=True):
                            if err:
                                log.warning("vm %d: cleanup: %s", m.index, err)
                if self._own_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            self._signals.close()


def _close_quietly(m: Machine) -> str:
    try:
        m.close()
    except Exception as e:  # cleanup must go on for the others
        return str(e)
    return ""
