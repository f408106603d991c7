"""Choose the accelerator: KVM when it really works on this host, else TCG.

``/dev/kvm`` opening fine proves little: under broken nested virtualisation a
KVM guest hangs in early boot, and ``-cpu host`` can abort on an MSR. So
``auto`` *boots* the kernel under KVM for a few seconds and looks for the
kernel's ``Linux version`` banner on the serial console. The answer is
remembered per host (qemu version, host kernel, CPU model) in the cache dir.
When KVM fails, kvmlab falls back to TCG with one warning and scales every
timeout by :data:`kvmlab.timeouts.TCG_SCALE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kvmlab import proc
from kvmlab.timeouts import TCG_SCALE
from kvmlab.vmm.console import BANNER_RE
from kvmlab.vmm.spec import Accel, VMSpec

log = logging.getLogger(__name__)

#: Seconds a KVM guest gets to print its banner (a working KVM needs < 1 s).
PROBE_SECONDS = 15.0


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    scale: float
    """Factor for every timeout (1 for KVM, TCG_SCALE for TCG)."""
    reason: str
    """Why, in one line (shown by ``kvmlab doctor``)."""


def _host_key(qemu: str) -> str:
    try:
        version = proc.run([qemu, "--version"], timeout=10).stdout.splitlines()[0]
    except Exception:  # a missing qemu is reported elsewhere
        version = "unknown"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    raw = f"{version}|{platform.release()}|{model}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _boots_to_banner(qemu: str, kernel: Path, accel_args: list[str], seconds: float) -> tuple[bool, str]:
    """Start ``kernel`` and watch the serial console for the banner."""
    argv = [
        qemu, *accel_args, "-m", "256", "-display", "none", "-vga", "none", "-nodefaults",
        "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=serial panic=-1",
    ]
    p = proc.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, die_with_us=True)
    assert p.stdout is not None
    out = b""
    deadline = time.monotonic() + seconds
    try:
        fd = p.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if BANNER_RE.search(out):
                return True, "booted"
    finally:
        proc.kill_group(p, grace=1.0)
        p.stdout.close()
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if "error" in line.lower() or "assert" in line.lower():
            return False, line.strip()
    return False, f"no kernel banner within {seconds:.0f}s"


def probe_kvm(qemu: str, kernel: Path, seconds: float = PROBE_SECONDS) -> AccelChoice:
    """Really boot ``kernel`` under KVM; fall back to TCG if it doesn't start."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice(Accel.TCG, TCG_SCALE, "/dev/kvm is missing or not accessible")
    ok, why = _boots_to_banner(qemu, kernel, ["-accel", "kvm", "-cpu", "host"], seconds)
    if ok:
        return AccelChoice(Accel.KVM, 1.0, "a KVM guest booted")
    # Make sure it is KVM and not the kernel: the same kernel must print its
    # banner under TCG, or we learned nothing about KVM.
    tcg_ok, _ = _boots_to_banner(qemu, kernel, ["-accel", "tcg"], seconds * 2)
    if not tcg_ok:
        raise _Inconclusive(f"kernel {kernel} printed no banner under TCG either")
    return AccelChoice(Accel.TCG, TCG_SCALE, f"KVM guest did not boot ({why})")


def with_accel(spec: VMSpec, choice: AccelChoice) -> VMSpec:
    """``spec`` with the accelerator of ``choice``; under TCG, the kernel's
    RCU stall detector gets the same slack as every other timeout (an
    emulated CPU starved by its neighbours is not an RCU stall; the kernel's
    default is 21 s)."""
    cmdline = spec.cmdline
    if choice.accel is Accel.TCG and not any(w.startswith(_RCU_STALL) for w in cmdline):
        cmdline = (f"{_RCU_STALL}{int(21 * choice.scale)}", *cmdline)
    return dataclasses.replace(spec, accel=choice.accel, cmdline=cmdline)


_RCU_STALL = "rcupdate.rcu_cpu_stall_timeout="


class _Inconclusive(Exception):
    pass


def resolve_accel(requested: Accel, *, qemu: str, kernel: Path | None, cache_dir: Path,
                  fresh: bool = False) -> AccelChoice:
    """Turn ``auto`` into KVM or TCG (probing once per host by booting
    ``kernel``; without one, TCG unless a probe is remembered); pass others through.
    ``fresh``: probe again with ``kernel`` even when an answer is remembered
    (and remember the new one); the choice's ``reason`` says which it was."""
    if requested is Accel.KVM:
        return AccelChoice(Accel.KVM, 1.0, "requested")
    if requested is Accel.TCG:
        return AccelChoice(Accel.TCG, TCG_SCALE, "requested")
    cache = cache_dir / "accel.json"
    key = _host_key(qemu)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and not (fresh and kernel is not None):
        entry = known[key]
        choice = AccelChoice(Accel(entry["accel"]), float(entry["scale"]),
                             f"{entry['reason']}; remembered from an earlier probe in {cache}")
    elif kernel is None:
        log.warning("no kernel to probe KVM with (the bad commit did not build?): using TCG")
        return AccelChoice(Accel.TCG, TCG_SCALE, "no kernel to probe KVM with")
    else:
        log.info("probing KVM on this host (boots %s for up to %.0fs)", kernel.name, PROBE_SECONDS)
        try:
            choice = probe_kvm(qemu, kernel)
        except _Inconclusive as e:
            log.warning("KVM probe inconclusive (%s); using TCG for this run", e)
            return AccelChoice(Accel.TCG, TCG_SCALE, str(e))
        known[key] = {"accel": choice.accel.value, "scale": choice.scale, "reason": choice.reason}
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")  # two kvmlabs may probe at once
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    if choice.accel is Accel.TCG:
        log.warning(
            "KVM is not usable on this host (%s): using TCG, timeouts scaled x%.0f",
            choice.reason, choice.scale,
        )
    return choice
