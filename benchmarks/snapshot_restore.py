"""Boot vs restore: time from "start" to "reproducer running", and the demo's
flaky bug's crash rate with each.

    .venv/bin/python benchmarks/snapshot_restore.py times --kernel base=PATH --kernel cloud=PATH
    .venv/bin/python benchmarks/snapshot_restore.py rates --kernel PATH --repro SRC.c [--runs 40]

``times``: for each kernel and backend (qemu, libvirt), ``--rounds`` calls of
the real runner (:func:`kvmlab.repro.runner.run_repro`) with a pool of
``--vms`` VMs and a reproducer that starts at once, every VM booted (the
baseline, measured in the same run) and every VM a clone of one template
(``vm.snapshot: auto``; the first round boots and saves the template). A VM's
time is from the runner's call to the VM's "running" event (booted or
restored, clock and RNG refreshed, the reproducer going in).

``rates``: the flaky reproducer (crashes about a third of runs) ``--runs``
times with boots and ``--runs`` times with restores, in batches of ``--vms``;
the two crash rates and Fisher's exact test (two-sided) on them.

Measured here (2 cores shared with other jobs, TCG, 1 vCPU / 512 MiB guests, 2 VMs, 3 rounds; medians of
rounds 2-3, the first round also boots and saves the template; load average ~3-5):

    kernel                               backend   boot    restore   template (once a kernel)
    base,nodwarf (demo head)             qemu       5.6 s   2.0 s    boot 4.4 s + save 0.3 s
    base,nodwarf (demo head)             libvirt   10.0 s   5.5 s    boot 4.9 s + save 2.2 s
    base,kasan,smp,preempt,share,gdb     qemu      18.0 s   2.3 s    boot 8.7 s + save 0.4 s
    base,kasan,smp,preempt,share,gdb     libvirt   22.4 s   6.7 s    boot 15.7 s + save 2.5 s

(at load ~11 the base kernel was 16.7 s vs 5.0 s on qemu and 29.4 s vs 9.6 s on libvirt). A libvirt
clone also waits for the relay restore of the one before it in the same batch (one at a time).
Rates, flaky_culprit's reproducer on the demo head, qemu: boot 15/40 crashed (38%), restore 17/40
(42%), Fisher's exact test p = 0.82; 354 s for the 40 boots, 193 s for the 40 restores.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvmlab.config import VMConfig
from kvmlab.outcome import RunStatus
from kvmlab.repro.reproducer import CProgram, ShellCommand, StagedRepro
from kvmlab.repro.runner import ReproOptions, VMEvent, run_repro
from kvmlab.timeouts import TCG_SCALE, Timeouts
from kvmlab.vmm.backend import Backend
from kvmlab.vmm.factory import close_backend, make_backend
from kvmlab.vmm.initramfs import READY_MARKER, build_initramfs
from kvmlab.vmm.snapshot import Snapshots
from kvmlab.vmm.spec import Accel, VMSpec


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test on the table [[a, b], [c, d]]."""
    n1, n2, k = a + b, c + d, a + c
    total = math.comb(n1 + n2, k)

    def p(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / total

    observed = p(a)
    lo, hi = max(0, k - n2), min(k, n1)
    return min(1.0, sum(p(x) for x in range(lo, hi + 1) if p(x) <= observed * (1 + 1e-7)))


def _spec(kernel: Path, cache: Path) -> VMSpec:
    root = build_initramfs(cache / "initramfs", kernel=kernel)
    return VMSpec(kernel=kernel, root=root, cpus=1, memory_mb=512, accel=Accel.TCG, name="kvmlab-bench")


def _round(spec: VMSpec, staged: StagedRepro, be: Backend, vms: int, run_time: float, workdir: Path,
           snapshots: Snapshots | None) -> tuple[list[float], list[RunStatus]]:
    started = time.monotonic()
    running: dict[int, float] = {}
    lock = threading.Lock()

    def on_vm(ev: VMEvent) -> None:
        if ev.state == "running":
            with lock:
                running[ev.vm] = time.monotonic() - started

    res = run_repro(spec, staged, backend=be, timeouts=Timeouts().scaled(TCG_SCALE),
                    options=ReproOptions(count=vms, run_time=run_time), workdir=workdir,
                    ready_marker=READY_MARKER, on_vm=on_vm, snapshots=snapshots)
    return [running[i] for i in sorted(running)], [o.status for o in res.outcomes]


def times(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kvmlab-bench-") as d:
        tmp = Path(d)
        staged = ShellCommand("true").prepare(tmp)
        print(f"{'kernel':<8} {'backend':<8} {'mode':<8} {'round':>5} {'start->running (s), per VM':<28}")
        for label, kernel in args.kernel:
            spec = _spec(kernel, tmp)
            for backend in args.backends:
                be = make_backend(VMConfig(backend=backend))
                base: list[float] = []
                for r in range(args.rounds):
                    t, _ = _round(spec, staged, be, args.vms, 1.0, tmp / f"{label}-{backend}-b{r}", None)
                    base += t
                    print(f"{label:<8} {backend:<8} {'boot':<8} {r:>5} {', '.join(f'{x:.1f}' for x in t)}",
                          flush=True)
                store = Snapshots(workdir=tmp / f"{label}-{backend}-templates", cache=tmp / "tools")
                restored: list[float] = []
                try:
                    for r in range(args.rounds):
                        t, _ = _round(spec, staged, be, args.vms, 1.0,
                                      tmp / f"{label}-{backend}-restore-{r}", store)
                        if r:
                            restored += t
                        print(f"{label:<8} {backend:<8} {'restore':<8} {r:>5} "
                              f"{', '.join(f'{x:.1f}' for x in t)}", flush=True)
                    tpl = store.templates[0] if store.templates else None
                finally:
                    store.close()
                    close_backend(be)
                tdesc = (f"template boot {tpl.boot_seconds:.1f} s + save {tpl.save_seconds:.1f} s"
                         if tpl else "no template")
                print(f"== {label} {backend}: boot median {statistics.median(base):.1f} s, restore median "
                      f"{statistics.median(restored):.1f} s (rounds 2..{args.rounds}; {tdesc}, once a kernel)"
                      if restored else f"== {label} {backend}: no restore measured", flush=True)


def rates(args: argparse.Namespace) -> None:
    kernel = args.kernel[0][1]
    with tempfile.TemporaryDirectory(prefix="kvmlab-bench-") as d:
        tmp = Path(d)
        staged = CProgram(args.repro).prepare(tmp)
        spec = _spec(kernel, tmp)
        counts: dict[str, tuple[int, int]] = {}
        be = make_backend(VMConfig(backend=args.backends[0]))
        for mode in ("boot", "restore"):
            store = Snapshots(workdir=tmp / "templates", cache=tmp / "tools") if mode == "restore" else None
            crashed = answered = 0
            t0 = time.monotonic()
            try:
                for b in range(math.ceil(args.runs / args.vms)):
                    n = min(args.vms, args.runs - answered)
                    _, st = _round(spec, staged, be, n, args.run_time, tmp / f"{mode}{b}", store)
                    crashed += sum(s is RunStatus.CRASHED for s in st)
                    answered += sum(s in (RunStatus.CRASHED, RunStatus.OK) for s in st)
                    others = [s.value for s in st if s not in (RunStatus.CRASHED, RunStatus.OK)]
                    if others:
                        print(f"  {mode} batch {b}: not counted: {others}", flush=True)
            finally:
                if store is not None:
                    store.close()
            counts[mode] = (crashed, answered)
            if mode == "restore":
                close_backend(be)
            print(f"{mode:<8} {crashed}/{answered} crashed ({100 * crashed / max(1, answered):.0f}%), "
                  f"{time.monotonic() - t0:.0f} s", flush=True)
        (a, n1), (c, n2) = counts["boot"], counts["restore"]
        p = fisher_exact(a, n1 - a, c, n2 - c)
        print(f"Fisher's exact test (two-sided), boot {a}/{n1} vs restore {c}/{n2}: p = {p:.3f}")


def _kernel(s: str) -> tuple[str, Path]:
    label, _, path = s.rpartition("=")
    return (label or Path(path).name), Path(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("times", "rates"))
    ap.add_argument("--kernel", type=_kernel, action="append", required=True, help="[LABEL=]bzImage")
    ap.add_argument("--backends", type=lambda s: s.split(","), default=["qemu", "libvirt"])
    ap.add_argument("--vms", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--run-time", type=float, default=10.0)
    ap.add_argument("--repro", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    if args.what == "rates":
        if args.repro is None:
            ap.error("rates needs --repro")
        rates(args)
    else:
        times(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
