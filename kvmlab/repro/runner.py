"""Run a reproducer on a pool of VMs and turn each run into one outcome.

Per VM: boot (a boot that fails is ``boot-failed`` with the boot crash's
title or ``no output``), copy the reproducer in, run it for at most the run
time while the console is watched. A crash on the console is ``crashed``
(titled by :mod:`kvmlab.oops`, symbolized when a vmlinux is given) — also
when it took the SSH connection down with it. A run that ends without a crash
is ``ok``. Our own failures (qemu died without a crash on the console, the SSH
transport broke with no crash to explain it) are ``infra``.

The reproducer's own output (stdout and stderr) is kept in
``vm-<i>/repro.log``. A syzkaller program that syz-execprog could not run (it
does not parse, the executor does not start, ``SYZFAIL``) is ``repro-failed``
with the line that says why: such a run says nothing about the kernel. A C
program or command that exits before its run time is still a run (``ok``
when nothing crashed), and its outcome says after how long and with which
status it exited.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmlab import oops
from kvmlab.checks import write_result
from kvmlab.errors import InfraError, KvmlabError, SSHError, UserError
from kvmlab.kernel.config import read_config
from kvmlab.outcome import RunOutcome, RunStatus
from kvmlab.repro import syz
from kvmlab.repro.reproducer import GUEST_DIR, StagedRepro
from kvmlab.timeouts import Timeouts
from kvmlab.vmm.backend import Backend, HasFailure
from kvmlab.vmm.console import EventKind
from kvmlab.vmm.fleet import Fleet
from kvmlab.vmm.initramfs import EXTRA_DIR, with_files
from kvmlab.vmm.machine import Machine
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.snapshot import Snapshots, TemplateRecipe
from kvmlab.vmm.spec import VMSpec
from kvmlab.vmm.spread import Retried, spread
from kvmlab.vmm.ssh import keeping_status

log = logging.getLogger(__name__)

#: Seconds (before scaling) to keep watching the console after the
#: reproducer exits: a crash it caused may print a moment later (an oops in
#: a syscall prints before the process exits; this covers work it queued).
GRACE = 1.5

#: A reproducer that ends sooner than this many seconds before its run time
#: "exited", and the outcome says so.
EARLY_EXIT = 1.0

#: syzkaller's titles for a guest that stopped answering.
LOST_CONNECTION = "lost connection to test machine"
NO_OUTPUT = "no output from test machine"


@dataclass(frozen=True)
class ReproOptions:
    count: int = 2
    """VMs, one run each."""
    run_time: float = 120.0
    """Seconds the reproducer may run in a VM (not scaled: it is the user's)."""
    stop_when_decided: bool = False
    """End the other runs once the verdict can no longer change."""
    expect: str | None = None
    """Title of the bug we look for; crashes with another title are marked."""
    stop_after_crashes: int = 1
    """With ``stop_when_decided``: this many expected crashes decide."""


@dataclass(frozen=True)
class VMEvent:
    """A VM of a repro pool changed state (for live views)."""

    vm: int
    """The VM's index in its pool."""
    state: str
    """``booting``, ``running`` (booted, the reproducer goes in), then one of
    the run statuses (``crashed``, ``ok``, ``boot-failed``, ``infra``,
    ``repro-failed``) or ``cancelled``."""
    title: str | None = None
    """The crash title when there is one."""
    pid: int | None = None
    """``booting``: the pid of the VM's QEMU when it runs on this machine."""


VMObserver = Callable[[VMEvent], None]


@dataclass
class ReproResult:
    outcomes: list[RunOutcome]
    expected: list[bool | None] = field(default_factory=list)
    """Per run: does the crash match ``expect`` (None: no crash or no expect)."""
    wall: float = 0.0
    cancelled: int = 0
    """Runs ended by ``stop_when_decided`` before they had an answer (not in
    ``outcomes``: they neither crashed nor ran their time)."""
    retried: list[Retried] = field(default_factory=list)
    """Attempts a host spoiled (infra) that were run again on another host;
    their final outcomes are in ``outcomes``."""
    not_saved: str = ""
    """Why ``result.json`` could not be written in the workdir, when it could not."""

    def crashes(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status is RunStatus.CRASHED]

    def tested(self) -> list[RunOutcome]:
        """Runs that tested the kernel: it booted and the reproducer ran its
        course (crashed or not)."""
        return [o for o in self.outcomes if o.status in (RunStatus.CRASHED, RunStatus.OK)]

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [o.to_json() | {"expected": e}
                     for o, e in zip(self.outcomes, self.expected, strict=True)],
            "cancelled_runs": self.cancelled,
            "retried": [{"index": r.index, "host": r.host, "detail": r.detail} for r in self.retried],
            "crash_rate": len(self.crashes()) / max(1, len(self.outcomes)),
            "titles": dict(Counter(o.title for o in self.crashes())),
            "wall": round(self.wall, 3),
        }


def run_line(o: RunOutcome) -> str:
    """One run in the bisection log's words."""
    if o.status is RunStatus.CRASHED:
        return f"run #{o.index}: crashed: {o.title}"
    if o.status is RunStatus.OK:
        return f"run #{o.index}: OK"
    if o.status is RunStatus.BOOT_FAILED:
        return f"run #{o.index}: boot failed: {o.title}"
    if o.status is RunStatus.REPRO_FAILED:
        return f"run #{o.index}: reproducer failed: {o.detail}"
    if o.status is RunStatus.GUEST_STOPPED:
        return f"run #{o.index}: guest stopped: {o.detail}"
    return f"run #{o.index}: infra error: {o.detail}"


def summary_lines(result: ReproResult) -> list[str]:
    outs = result.outcomes
    lines = []
    statuses = {o.status for o in outs}
    titles = {o.title for o in outs}
    if statuses == {RunStatus.OK}:
        lines.append("all runs: OK")
    elif statuses == {RunStatus.CRASHED} and len(titles) == 1:
        lines.append(f"all runs: crashed: {outs[0].title}")
    crashed = result.crashes()
    lines.append(
        f"crash rate: {len(crashed)}/{len(outs)} ({100 * len(crashed) / max(1, len(outs)):.0f}%), "
        f"wall {result.wall:.1f}s, run durations "
        + ", ".join(f"{o.duration:.1f}s" for o in outs)
    )
    for title, n in Counter(o.title for o in crashed).most_common():
        lines.append(f"  {n} x {title}")
    for o, exp in zip(outs, result.expected, strict=True):
        if exp is False:
            lines.append(f"  run #{o.index} crashed with a different bug: {o.title}")
    logs = [o.repro_log for o in outs if o.repro_log]
    if logs:
        lines.append(f"reproducer output: {Path(logs[0]).parent.parent}/vm-<i>/repro.log")
    if outs and not result.tested():
        counts = Counter(o.status for o in outs)
        words = {RunStatus.BOOT_FAILED: "boot failed", RunStatus.INFRA: "infra error",
                 RunStatus.GUEST_STOPPED: "the guest stopped itself", RunStatus.REPRO_FAILED:
                 "the reproducer could not run"}
        parts = ", ".join(f"{n} x {words.get(st, st.value)}" for st, n in counts.most_common())
        lines.append(f"no run tested the kernel: {parts}")
        if set(counts) == {RunStatus.GUEST_STOPPED}:
            lines.append("  the reproducer powers the guest off or reboots it before anything else can show")
    for o in outs:
        where = f" (output: {o.repro_log})" if o.repro_log else ""
        if o.status is RunStatus.OK and o.detail:
            lines.append(f"  run #{o.index}: {o.detail}{where}")
        elif o.status is RunStatus.REPRO_FAILED:
            lines.append(f"  run #{o.index}: the reproducer could not run: {o.detail}{where}")
    return lines


class _Decider:
    """Tells the runs to stop once enough expected crashes were seen."""

    def __init__(self, enabled: bool, needed: int) -> None:
        self.enabled, self.needed = enabled, needed
        self._crashes = 0
        self._lock = threading.Lock()
        self.decided = threading.Event()

    def record(self, matched: bool) -> None:
        if not (self.enabled and matched):
            return
        with self._lock:
            self._crashes += 1
            if self._crashes >= self.needed:
                self.decided.set()


def _crash_outcome(m: Machine, started: float, vmlinux: Path | None) -> RunOutcome | None:
    """The crash on this VM's console, as an outcome (None: no crash)."""
    if m.watcher.crash is None:
        return None
    m.watcher.settle(quiet=1.0, limit=10.0 * m.timeouts.scale)
    text = m.watcher.text()
    rep = oops.parse(text)
    if rep is None:
        # The live watcher saw a crash start the parser doesn't title: keep
        # the raw line rather than lose the crash.
        ev = m.watcher.crash
        title = ev.line.strip() if ev else "unknown crash"
        return RunOutcome(m.index, RunStatus.CRASHED, title=title, report=m.watcher.crash_text(),
                          duration=time.monotonic() - started, console_log=str(m.console_log))
    body = rep.report
    if vmlinux is not None:
        with contextlib.suppress(KvmlabError, OSError):
            body = oops.symbolize(body, vmlinux)
    return RunOutcome(m.index, RunStatus.CRASHED, title=rep.title, alt_titles=tuple(rep.alt_titles),
                      crash_type=rep.type, report=body, duration=time.monotonic() - started,
                      console_log=str(m.console_log))


def _boot_failed(m: Machine, reason: str, started: float) -> RunOutcome:
    rep = oops.parse(m.watcher.text())
    title = rep.title if rep is not None else ("no output" if reason == "no output" else reason)
    return RunOutcome(m.index, RunStatus.BOOT_FAILED, title=title, detail=reason,
                      report=rep.report if rep else m.watcher.tail(), crash_type=rep.type if rep else None,
                      duration=time.monotonic() - started, console_log=str(m.console_log))


def run_one(m: Machine, prepared: StagedRepro, opts: ReproOptions, timeouts: Timeouts,
            decider: _Decider, vmlinux: Path | None, on_vm: VMObserver | None = None) -> RunOutcome | None:
    """One run in one VM, from boot to outcome; None when the run was
    cancelled (verdict decided elsewhere) before it had an answer."""
    started = m.started
    boot = m.wait_ready(cancel=decider.decided)
    if boot.reason == "cancelled":
        return None
    if boot.ok and on_vm is not None:
        on_vm(VMEvent(m.index, "running"))
    if not boot.ok:
        if m.died_on_host(boot):
            return _vm_died(m, started, f"vm died while booting: {boot.reason}")
        return _boot_failed(m, boot.reason, started)
    try:
        m.run(f"mkdir -p {GUEST_DIR}", timeout=timeouts.command)
        # A clone's template got the files before it was saved.
        for host, guest, mode in () if m.restored else prepared.files:
            m.copy_in(host, guest, mode=mode)
    except SSHError as e:
        return _after_transport_loss(m, started, vmlinux, f"copying the reproducer: {e}")
    run_started = time.monotonic()
    run_offset = m.watcher.size()
    result: dict[str, Any] = {}
    is_syz = prepared.kind == "syz"
    out = _ReproLog(m.workdir / "repro.log", is_syz)
    # A syz program's run time counts from its first execution: syz-execprog
    # first checks the machine, which takes a while in an emulated guest.
    limit = opts.run_time + (syz.SETUP_TIME * timeouts.scale if is_syz else 0.0)

    def go() -> None:
        try:
            result["res"] = m.run(keeping_status(prepared.command), timeout=limit, on_output=out.write)
        except SSHError as e:
            result["err"] = e
        finally:
            out.close()

    def program_started() -> float:
        return out.started if is_syz and out.started is not None else run_started

    runner = threading.Thread(target=go, name=f"repro-{m.index}", daemon=True)
    runner.start()
    stop = {EventKind.CRASH, EventKind.EOF, EventKind.HALT, EventKind.REBOOT}
    while runner.is_alive():
        runner.join(0.2)
        if m.watcher.first(EventKind.CRASH) or m.watcher.ended or _shut_down(m):
            break
        if decider.decided.is_set() or out.failed.is_set():
            break
        if is_syz and out.started is not None and time.monotonic() - out.started >= opts.run_time:
            break
    crash = _crash_outcome(m, started, vmlinux)
    if crash is not None:
        return crash
    if "err" in result:
        return _after_transport_loss(m, started, vmlinux, str(result["err"]))
    if m.watcher.ended or not m.instance.alive() or _shut_down(m):
        m.watcher.wait_for({EventKind.CRASH, EventKind.EOF}, timeout=2.0)
        crash = _crash_outcome(m, started, vmlinux) or _stopped_itself(m, started)
        if crash is not None:
            return crash
        return _vm_died(m, started, "vm stopped without a crash on the console")
    # The reproducer exited or ran for the whole run time (or the verdict
    # was decided elsewhere): a crash it caused may still be on its way.
    if not decider.decided.is_set():
        left = max(0.0, opts.run_time - (time.monotonic() - program_started()))
        m.watcher.wait_for(stop, timeout=min(left, GRACE * timeouts.scale) if left else 0.0)
        crash = _crash_outcome(m, started, vmlinux) or _stopped_itself(m, started)
        if crash is not None:
            return crash
    if decider.decided.is_set() and runner.is_alive() and not out.failed.is_set():
        return None
    # Is the guest still alive? A hung guest answers neither SSH nor console.
    if not _answers(m, timeouts.ssh_connect * 3):
        silent = m.watcher.first(EventKind.NO_OUTPUT) is not None
        return _stopped_answering(m, started, vmlinux, NO_OUTPUT if silent else LOST_CONNECTION)
    res = result.get("res")
    status = res.exit_status if res is not None else None
    if is_syz:
        why = syz.execprog_failure(out.text(), status)
        if why is None and out.started is None:
            why = _why_syz_failed(m, prepared, timeouts, res is not None and not res.timed_out, limit)
        if why is not None:
            return RunOutcome(m.index, RunStatus.REPRO_FAILED, detail=why,
                              duration=time.monotonic() - started, console_log=str(m.console_log))
    detail = ""
    if res is not None and not res.timed_out and res.duration < opts.run_time - EARLY_EXIT:
        detail = f"the reproducer exited after {res.duration:.1f}s {res.describe()}"
        killed = status is None or status < 0 or status > 128
        killer = oom_kill(m.watcher.text_from(run_offset)) if killed else None
        if killer is not None:
            detail += f": the guest's OOM killer ({killer})"
    return RunOutcome(m.index, RunStatus.OK, detail=detail, duration=time.monotonic() - started,
                      console_log=str(m.console_log))


def _vm_died(m: Machine, started: float, why: str) -> RunOutcome:
    """The VM went without a crash on its console: ours (infra), named by the
    host's failure when there was one, else by ``why``."""
    return RunOutcome(m.index, RunStatus.INFRA, detail=_host_failure(m) or why,
                      duration=time.monotonic() - started, console_log=str(m.console_log))


def _host_failure(m: Machine) -> str | None:
    """Why the VM's host failed it, when it did (a lost libvirt connection, a
    console log the disk had no room for)."""
    if m.watcher.log_error is not None:
        return m.watcher.log_error
    return m.instance.failure() if isinstance(m.instance, HasFailure) else None


def _shut_down(m: Machine) -> bool:
    """The kernel said it shuts the machine down or restarts it on request."""
    return m.watcher.halt is not None or m.watcher.first(EventKind.REBOOT) is not None


#: The kernel's line when its OOM killer kills a process.
_OOM_RE = re.compile(r"(?m)(?:Out of memory|Memory cgroup out of memory): Kill(?:ed)? process \d+ \((.*?)\)")


def oom_kill(console: str) -> str | None:
    """The OOM killer's line in ``console`` (None: it did not kill)."""
    m = _OOM_RE.search(console)
    return m.group(0) if m else None


def _stopped_itself(m: Machine, started: float) -> RunOutcome | None:
    """The guest shut itself down on request (``poweroff``, ``reboot(2)``)
    with no crash on the console: its own outcome, never a crash of the kernel
    nor ours (None: it did not)."""
    if m.watcher.crash is not None:
        return None
    halt = m.watcher.halt
    ev = halt or m.watcher.first(EventKind.REBOOT)
    if ev is None:
        return None
    if halt is None:
        said, what = "a second kernel banner", "rebooted itself"
    else:
        said = re.sub(r"^(?:\[[^]]*\])*\s*", "", ev.line.strip())
        what = "rebooted itself" if "Restarting" in said else "powered itself off"
    took = time.monotonic() - started
    return RunOutcome(m.index, RunStatus.GUEST_STOPPED,
                      detail=f"the guest {what} ({said}) after {took:.1f}s, with no crash on the console",
                      report=m.watcher.tail(), duration=took, console_log=str(m.console_log))


def _why_syz_failed(m: Machine, prepared: StagedRepro, timeouts: Timeouts, exited: bool, limit: float) -> str:
    """syz-execprog ended (or ran out of time) before running the program and
    said nothing: it shows syz-executor's own output only with -debug, so run
    it once more that way (output in repro-debug.log) and take its SYZFAIL."""
    what = ("syz-execprog exited before running the program" if exited else
            f"syz-execprog did not get to run the program in {limit:.0f}s")
    if not prepared.diagnose:
        return what
    debug = _ReproLog(m.workdir / "repro-debug.log", True)
    try:
        res = m.run(prepared.diagnose, timeout=syz.SETUP_TIME * timeouts.scale, on_output=debug.write)
        status = res.exit_status
    except SSHError as e:
        log.debug("%s: the -debug run broke: %s", m.name, e)
        status = None
    finally:
        debug.close()
    why = syz.execprog_failure(debug.text(), status)
    return f"{what}: {why}" if why else what


class _ReproLog:
    """The reproducer's output as it arrives: to ``path``, kept in memory (the
    last 1 MiB) for the verdict, and for a syz program watched for
    syz-execprog's own failures so that the run ends at once."""

    KEEP = 1 << 20

    def __init__(self, path: Path, watch_syz: bool) -> None:
        self.path = path
        self._f = path.open("w", encoding="utf-8", errors="replace")
        self._buf = ""
        self._lock = threading.Lock()
        self._watch = watch_syz
        self.failed = threading.Event()
        self.error: str | None = None
        """Why the log could not be written, when it could not."""
        self.started: float | None = None
        """When syz-execprog first ran the program (monotonic seconds)."""

    def write(self, chunk: str) -> None:
        with self._lock:
            if not self._f.closed and self.error is None:
                try:
                    self._f.write(chunk)
                    self._f.flush()
                except OSError as e:  # a full disk: kept in memory, the run says it
                    self.error = f"cannot write {self.path}: {e.strerror}"
            self._buf = (self._buf + chunk)[-self.KEEP:]
            if not self._watch:
                return
            # The new text and the line it may continue.
            recent = self._buf[-(len(chunk) + 4096):]
            if self.started is None and syz.execprog_started(recent):
                self.started = time.monotonic()
            if not self.failed.is_set() and syz.execprog_failure(recent, None):
                self.failed.set()

    def text(self) -> str:
        with self._lock:
            return self._buf

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._f.close()


def _after_transport_loss(m: Machine, started: float, vmlinux: Path | None, why: str) -> RunOutcome:
    """SSH broke: a crash on the console explains it, or the guest shutting
    itself down; otherwise it is ours."""
    m.watcher.wait_for({EventKind.CRASH, EventKind.EOF, EventKind.HALT, EventKind.REBOOT},
                       timeout=5.0 * m.timeouts.scale)
    crash = _crash_outcome(m, started, vmlinux) or _stopped_itself(m, started)
    if crash is not None:
        return crash
    if m.watcher.ended or not m.instance.alive():  # console closed: QEMU is on its way out
        return _vm_died(m, started, f"vm died with no crash on the console ({why})")
    # The VM runs: was it only our session that broke, or does the guest no
    # longer answer (hung, or the reproducer killed sshd)? syzkaller calls the
    # latter "lost connection to test machine", and so do we: it is the
    # guest's doing, and retrying it as ours would only repeat it.
    if _answers(m, m.timeouts.ssh_connect * 2, reconnect=True):
        return RunOutcome(m.index, RunStatus.INFRA, detail=f"ssh transport failed, the guest is fine ({why})",
                          duration=time.monotonic() - started, console_log=str(m.console_log))
    return _stopped_answering(m, started, vmlinux, LOST_CONNECTION,
                              f"the guest stopped answering SSH ({why})")


def _answers(m: Machine, timeout: float, *, reconnect: bool = False) -> bool:
    """Whether the guest runs a command over SSH (on a fresh connection when
    ``reconnect``: the old one broke)."""
    try:
        if reconnect:
            m.ssh.connect(timeout=timeout)
        return m.run("echo alive", timeout=timeout).exit_status == 0
    except SSHError:
        return False


def _stopped_answering(m: Machine, started: float, vmlinux: Path | None, title: str,
                       detail: str = "") -> RunOutcome:
    """The guest no longer answers: a crash on the console explains it,
    otherwise it is syzkaller's hang of that ``title``."""
    crash = _crash_outcome(m, started, vmlinux) or _stopped_itself(m, started)
    if crash is not None:
        return crash
    # A QEMU killed from outside breaks SSH at once, but its console's end
    # and its exit can trail by a moment: a VM that is gone is not a hang.
    m.watcher.wait_for({EventKind.EOF}, timeout=2.0)
    if m.watcher.ended or not m.instance.alive():
        return _vm_died(m, started, f"vm died, no crash on the console ({detail or title})")
    return RunOutcome(m.index, RunStatus.CRASHED, title=title, crash_type="HANG", detail=detail,
                      report=m.watcher.tail(), duration=time.monotonic() - started,
                      console_log=str(m.console_log))


def _files_in_initramfs(spec: VMSpec, prepared: StagedRepro) -> tuple[VMSpec, StagedRepro]:
    """The reproducer's files ride in the initramfs instead of being copied
    over SSH; the command first links them to where it expects them."""
    names = [Path(guest).name for _h, guest, _m in prepared.files]
    if len(set(names)) != len(names):
        return spec, prepared
    root = with_files(spec.root, [(host, Path(guest).name, mode) for host, guest, mode in prepared.files])
    links = " && ".join(f"ln -sf {EXTRA_DIR}/{Path(guest).name} {guest}" for _h, guest, _m in prepared.files)
    dirs = " ".join(sorted({str(Path(guest).parent) for _h, guest, _m in prepared.files}))
    command = f"mkdir -p {dirs} && {links} && {prepared.command}"
    return dataclasses.replace(spec, root=root), dataclasses.replace(prepared, files=(), command=command)


class MissingKernelOptionError(UserError):
    """The reproducer needs kernel options the kernel under test does not have."""


def check_kernel_needs(prepared: StagedRepro, kernel_config: Path) -> None:
    """Refuse (one line) a reproducer whose kernel needs ``kernel_config`` does
    not meet; a config that cannot be read is not checked."""
    if not prepared.kernel_needs:
        return
    try:
        config = read_config(kernel_config)
    except KvmlabError as e:
        log.warning("not checking what the reproducer needs: %s", e)
        return
    missing = syz.missing_needs(list(prepared.kernel_needs), config)
    if missing:
        raise MissingKernelOptionError(syz.describe_missing(missing, str(kernel_config)))


def run_repro(
    spec: VMSpec,
    prepared: StagedRepro,
    *,
    backend: Backend | Fleet,
    timeouts: Timeouts,
    options: ReproOptions,
    workdir: Path,
    ready_marker: str | None,
    vmlinux: Path | None = None,
    on_run: Callable[[RunOutcome, bool | None], None] | None = None,
    on_vm: VMObserver | None = None,
    kernel_config: Path | None = None,
    snapshots: Snapshots | None = None,
) -> ReproResult:
    """Boot ``options.count`` VMs of ``spec`` and run ``prepared`` in each.

    ``backend`` may be a :class:`~kvmlab.vmm.fleet.Fleet` of several hosts:
    the runs are spread over them by free capacity, and a run that comes out
    ``infra`` on one host is run again on another (the failed attempt is in
    ``ReproResult.retried``); with one backend, all runs start at once.

    ``on_run`` is called as each run ends (from the run's thread) with the
    outcome and whether it matches ``options.expect``; ``on_vm`` with each
    VM's :class:`VMEvent` (booting, running, its outcome). Console logs,
    reproducer output (``repro.log``) and reports are kept under
    ``workdir/vm-<i>/``; ``workdir/result.json`` holds the structured result.
    With ``kernel_config`` (the kernel's .config), a reproducer that needs
    kernel options the kernel lacks is refused before any VM boots
    (:class:`MissingKernelOptionError`). With ``snapshots``, each VM is a
    clone of a template that booted once and got the reproducer's files
    (kept in the store for the next call with the same spec), where the spec
    allows it (:mod:`kvmlab.vmm.snapshot`).
    """
    if kernel_config is not None:
        check_kernel_needs(prepared, kernel_config)
    workdir.mkdir(parents=True, exist_ok=True)
    if spec.root.kind is RootKind.INITRAMFS and prepared.files:
        spec, prepared = _files_in_initramfs(spec, prepared)
    decider = _Decider(options.stop_when_decided, options.stop_after_crashes)
    interrupted = threading.Event()  # set by spread when it is torn down
    fleet = backend if isinstance(backend, Fleet) else Fleet.single(backend, options.count)
    if snapshots is not None:
        recipe = TemplateRecipe(timeouts, ready_marker, files=prepared.files)
        fleet = snapshots.fleet(fleet, spec, recipe)
    t0 = time.monotonic()
    expected: dict[int, bool | None] = {}

    def matches(o: RunOutcome) -> bool | None:
        if o.status is not RunStatus.CRASHED or options.expect is None or o.title is None:
            return None
        return any(oops.same_bug(t, options.expect) for t in (o.title, *o.alt_titles))

    def job(m: Machine) -> RunOutcome | None:
        if on_vm is not None:
            on_vm(VMEvent(m.index, "booting", pid=m.qemu_pid()))
        o: RunOutcome | None
        try:
            o = run_one(m, prepared, options, timeouts, decider, vmlinux, on_vm)
        except KvmlabError as e:
            o = RunOutcome(m.index, RunStatus.INFRA, detail=str(e), duration=time.monotonic() - m.started,
                           console_log=str(m.console_log))
        except OSError as e:  # the host's (a full disk under the workdir)
            o = RunOutcome(m.index, RunStatus.INFRA, detail=f"host: {e.filename or ''}: {e.strerror}",
                           duration=time.monotonic() - m.started, console_log=str(m.console_log))
        if interrupted.is_set():
            return None  # torn down under it (Ctrl-C, SIGTERM): no outcome at all
        if o is not None and m.watcher.log_error is not None and o.status is not RunStatus.INFRA:
            # The run's evidence did not fit on the host's disk: ours, whatever the guest did.
            o = RunOutcome(m.index, RunStatus.INFRA, detail=f"host: {m.watcher.log_error}",
                           duration=o.duration, console_log=o.console_log)
        if o is not None and (m.workdir / "repro.log").is_file():
            o = dataclasses.replace(o, repro_log=str(m.workdir / "repro.log"))
        if on_vm is not None:
            on_vm(VMEvent(m.index, "cancelled") if o is None else VMEvent(m.index, o.status.value, o.title))
        return o

    def done(o: RunOutcome) -> None:
        exp = matches(o)
        expected[o.index] = exp
        if o.status is RunStatus.CRASHED:
            decider.record(exp is not False)
            if o.console_log:
                try:
                    (Path(o.console_log).parent / "report.txt").write_text(f"{o.title}\n\n{o.report}")
                except OSError as e:  # the outcome (and result.json, if it fits) still has it
                    log.warning("run #%d: report.txt not written: %s", o.index, e)
        if on_run is not None:
            on_run(o, exp)

    got = spread(
        spec, options.count, fleet=fleet, timeouts=timeouts, workdir=workdir, ready_marker=ready_marker,
        job=job, done=done, cancel=decider.decided, stop=interrupted,
        host_failure=lambda o: o.detail or "infra" if o.status is RunStatus.INFRA else None,
        no_host=lambda i, why: RunOutcome(i, RunStatus.INFRA, detail=why),
    )
    outs = [o for o in got.results if o is not None]
    result = ReproResult(outs, [expected.get(o.index) for o in outs], time.monotonic() - t0,
                         cancelled=len(got.results) - len(outs), retried=got.retried)
    for r in got.retried:
        log.info("run #%d: infra on %s (%s), run again on another host", r.index, r.host, r.detail)
    try:
        write_result(workdir / "result.json", json.dumps(result.to_json(), indent=1))
    except InfraError as e:  # the caller still has the outcomes: print them, then fail
        log.warning("%s", e)
        result.not_saved = str(e)
    return result
