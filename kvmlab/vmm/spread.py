"""Spread runs over a fleet: each run in a fresh VM on the host with the most
free capacity, and a run its host spoiled run again on another host.

:func:`spread` is the multi-host counterpart of a :class:`~kvmlab.vmm.pool.Pool`
for callers that run one job per VM (the reproducer runner). A job's result
that ``host_failure`` calls a host failure (an infra result) counts against
that host (:meth:`Fleet.failed`, which quarantines a host that keeps failing)
and the run is started again on another usable host, up to ``max_attempts``
times; when no other host is usable the infra result stands. Nothing survives
the call: every VM is stopped when its job ends, and all of them on an
exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from kvmlab import signals
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.fleet import Fleet, NoFreeSlotError, NoUsableHostError, PlacedInstance, PlacementError
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.pool import validate_spec
from kvmlab.vmm.spec import VMSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts per run (the first and the retries after host failures).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Retried:
    """An attempt of run ``index`` that its host spoiled, run again elsewhere."""

    index: int
    host: str
    detail: str


@dataclass
class Spread(Generic[T]):
    results: list[T | None]
    """Per run index: the final result, None when the run was cancelled."""
    retried: list[Retried]


def spread(
    spec: VMSpec,
    count: int,
    *,
    fleet: Fleet,
    timeouts: Timeouts,
    workdir: Path,
    ready_marker: str | None,
    job: Callable[[Machine], T | None],
    host_failure: Callable[[T], str | None],
    no_host: Callable[[int, str], T],
    done: Callable[[T], None] | None = None,
    cancel: threading.Event | None = None,
    stop: threading.Event | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Spread[T]:
    """Run ``job`` once per run index ``0..count-1``, each in its own VM.

    ``job(machine)`` returns the run's result (None: cancelled);
    ``host_failure(result)`` says why a result is the host's fault (None: it
    is not); ``no_host(index, why)`` makes the result of a run no host could
    take; ``done(result)`` is called from the run's thread with each final
    result. ``cancel`` set: runs not started yet are skipped. ``stop`` (made
    here when not given) is set when the call is torn down (an exception,
    Ctrl-C, SIGTERM): runs that end after it are not results and ``done`` is
    not called for them (they were interrupted, not answered). VM ``i`` keeps
    its files in ``workdir/vm-<i>`` (a retry in ``vm-<i>.<attempt>``).
    """
    validate_spec(spec, fleet)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = stop if stop is not None else threading.Event()
    live: dict[int, Machine] = {}
    lock = threading.Lock()
    retried: list[Retried] = []

    def cancelled() -> bool:
        return stop.is_set() or (cancel is not None and cancel.is_set())

    def place(i: int, vmdir: Path, avoid: frozenset[str]) -> Machine | None:
        while not cancelled():
            started = time.monotonic()
            try:
                inst = fleet.place(spec, workdir=vmdir, index=i, avoid=avoid, wait=1.0)
            except NoFreeSlotError:
                continue
            return Machine(i, inst, spec.root, vmdir, timeouts, ready_marker=ready_marker, started=started)
        return None

    def one(i: int) -> T | None:
        avoid: frozenset[str] = frozenset()
        result: T | None = None
        for attempt in range(max_attempts):
            vmdir = workdir / (f"vm-{i}" if attempt == 0 else f"vm-{i}.{attempt}")
            vmdir.mkdir(parents=True, exist_ok=True)
            try:
                m = place(i, vmdir, avoid)
            except NoUsableHostError as e:
                return no_host(i, str(e))
            except PlacementError as e:
                if attempt + 1 >= max_attempts or not fleet.usable(avoid | {e.host}):
                    raise
                retried.append(Retried(i, e.host, str(e)))
                log.warning("run #%d: %s; starting it on another host", i, e)
                avoid |= {e.host}
                continue
            if m is None:
                return None
            with lock:
                live[i] = m
            host = m.instance.host if isinstance(m.instance, PlacedInstance) else ""
            why: str | None = None
            try:
                result = job(m)
                why = host_failure(result) if result is not None else None
                if why is not None:
                    # Before the slot frees, so no other run lands on a host
                    # that this failure quarantines.
                    fleet.failed(host, why)
            finally:
                with lock:
                    live.pop(i, None)
                m.close()
            if why is None or result is None:
                return result
            if attempt + 1 >= max_attempts or not fleet.usable(avoid | {host}):
                return result
            retried.append(Retried(i, host, why))
            log.warning("run #%d on %s: infra: %s; running it again on another host", i, host, why)
            avoid |= {host}
        return result

    def final(i: int) -> T | None:
        r = one(i)
        if r is not None and done is not None and not stop.is_set():
            done(r)
        return r

    workers = max(1, min(count, fleet.capacity()))
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spread")
    with signals.unwinding():
        try:
            futures = [ex.submit(final, i) for i in range(count)]
            results = signals.results(futures)
        except BaseException:
            stop.set()
            # A second SIGTERM must not cut the VMs' teardown short.
            with signals.cleanup_window((signal.SIGTERM,)):
                with lock:
                    machines = list(live.values())
                for m in machines:
                    try:
                        m.close()
                    except Exception as e:  # the others must still go
                        log.warning("vm %d: cleanup: %s", m.index, e)
                ex.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            ex.shutdown(wait=True)
    return Spread(results, retried)
