"""What each QEMU of a job costs this machine, sampled while the job runs: CPU
(percent of one host core) and resident memory, with psutil, into a JSON-lines
file of the job's workdir (``resources.jsonl``) that the HTML report draws in
its timeline. Only QEMU processes on this machine can be sampled (a local
QEMU or a local libvirt's); a remote lab host's VMs have no samples."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

#: File name in a job's workdir.
SAMPLES_NAME = "resources.jsonl"
#: Seconds between samples.
INTERVAL = 2.0


@dataclass(frozen=True)
class Sample:
    t: float
    """Seconds since the epoch."""
    vm: int
    """The VM's index in its pool."""
    cpu: float
    """Percent of one host core since the previous sample."""
    rss: int
    """Bytes."""


class ResourceSampler:
    """Samples the QEMU processes it is told about (:meth:`watch`) every
    ``interval`` seconds in a thread, appending to ``path``; a process that
    ends is dropped. A sampler that cannot write stops sampling, never the job."""

    def __init__(self, path: Path, *, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._procs: dict[int, tuple[int, psutil.Process]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, vm: int, pid: int | None) -> None:
        """Sample QEMU process ``pid`` as the pool's VM ``vm`` from now on."""
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            proc.cpu_percent(None)  # the first call only starts the interval
        except psutil.Error:
            return
        with self._lock:
            self._procs[pid] = (vm, proc)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def __enter__(self) -> ResourceSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sample(self) -> list[Sample]:
        """One sample of every live process watched (dead ones are dropped)."""
        now = time.time()
        out = []
        with self._lock:
            procs = list(self._procs.items())
        for pid, (vm, proc) in procs:
            try:
                with proc.oneshot():
                    out.append(Sample(now, vm, proc.cpu_percent(None), proc.memory_info().rss))
            except psutil.Error:
                with self._lock:
                    self._procs.pop(pid, None)
        return out

    def _loop(self) -> None:
        # Stop signals are the main thread's (it unwinds the job): a signal the
        # kernel delivered to this thread would wake nobody there until the
        # main thread's blocking wait ended on its own.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        while not self._stop.wait(self.interval):
            got = self.sample()
            if not got:
                continue
            try:
                with self.path.open("a") as f:
                    for s in got:
                        f.write(json.dumps({"t": round(s.t, 2), "vm": s.vm, "cpu": round(s.cpu, 1),
                                            "rss": s.rss}) + "\n")
            except OSError as e:
                log.warning("resource samples not written to %s: %s", self.path, e)
                return


def read_samples(path: Path) -> Iterator[Sample]:
    """The samples of a job's file (lines that do not parse are skipped: the
    file of a killed job may end mid-line)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            d = json.loads(line)
            yield Sample(float(d["t"]), int(d["vm"]), float(d["cpu"]), int(d["rss"]))
        except (ValueError, KeyError, TypeError):
            continue
