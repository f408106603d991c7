"""The accelerator of a libvirt host, found on that host.

A client's own KVM says nothing about a lab host's (a laptop without KVM
drives a bare-metal KVM host; a workstation with KVM drives a host that has
none), and a host's capabilities lie the way ``/dev/kvm`` does (nested KVM
advertises ``kvm`` and hangs). So, as :mod:`kvmlab.vmm.accel` does for this
machine, ``auto`` *boots* the kernel on the host, through libvirt: a
transient ``kvm`` domain for :data:`~kvmlab.vmm.accel.PROBE_SECONDS`,
watching its console log (a volume in the host's pool) for the kernel's
banner; when KVM fails, the same kernel under TCG must print it, or the probe
learned nothing. The answer is remembered per host (its libvirt, hypervisor
and CPU) and kernel type (the guest kernel's version, major.minor) in
``accel-hosts.json`` in the cache dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from kvmlab.errors import LibvirtError
from kvmlab.owner import Owner
from kvmlab.timeouts import TCG_SCALE
from kvmlab.vmm.accel import PROBE_SECONDS, AccelChoice
from kvmlab.vmm.console import BANNER_RE
from kvmlab.vmm.domain_xml import owner_metadata
from kvmlab.vmm.host import Host
from kvmlab.vmm.modules import kernel_release
from kvmlab.vmm.spec import Accel
from kvmlab.vmm.storage import download

log = logging.getLogger(__name__)

CACHE_FILE = "accel-hosts.json"
#: Seconds between looks at a probe's console log.
_POLL = 0.5


class Inconclusive(Exception):
    """The kernel printed no banner under TCG either: the probe learned nothing."""


# -- pure parts ---------------------------------------------------------------------------------


def probe_domain_xml(name: str, *, kernel: str, console_log: str, kvm: bool, owner: Owner) -> str:
    """A transient domain that only boots ``kernel`` (a path on the host) far
    enough to print its banner on the serial console (logged to
    ``console_log``, a path on the host)."""
    dom = ET.Element("domain", type="kvm" if kvm else "qemu")
    ET.SubElement(dom, "name").text = name
    owner_metadata(dom, owner)
    ET.SubElement(dom, "memory", unit="MiB").text = "256"
    ET.SubElement(dom, "vcpu").text = "1"
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_el, "kernel").text = kernel
    ET.SubElement(os_el, "cmdline").text = "console=ttyS0 earlyprintk=serial panic=-1"
    if kvm:
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(dom, event).text = "destroy"
    devices = ET.SubElement(dom, "devices")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=console_log, append="off")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def domain_types(capabilities_xml: str) -> list[str]:
    """Domain types (``qemu``, ``kvm``) a host offers for x86_64 guests."""
    root = ET.fromstring(capabilities_xml)
    found: list[str] = []
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is None or arch.get("name") != "x86_64" or guest.findtext("os_type") != "hvm":
            continue
        for d in arch.findall("domain"):
            t = d.get("type", "")
            if t in ("qemu", "kvm") and t not in found:
                found.append(t)
    return found


def qemu_error(message: str) -> str:
    """libvirt's report of a QEMU that would not start, as one line: QEMU's
    own first complaint (``error: failed to set MSR 0x10a to 0x69``)."""
    first = message.strip().splitlines()[0] if message.strip() else "QEMU did not start"
    return re.sub(r"^.*?qemu-system-\S+: ", "", first)[:200]


def kernel_kind(kernel: Path | None) -> str:
    """The guest kernel's type for the probe cache: its version, major.minor."""
    release = kernel_release(kernel) if kernel is not None else None
    if not release:
        return "unknown"
    return ".".join(release.split(".")[:2]).split("-")[0]


def host_key(label: str, capabilities_xml: str, lib_version: int, hv_version: int) -> str:
    """A host, as the probe's answer depends on it: its name, libvirt and
    hypervisor versions, and CPU model."""
    root = ET.fromstring(capabilities_xml)
    cpu = root.findtext("host/cpu/model") or ""
    raw = f"{label}|{lib_version}|{hv_version}|{cpu}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


# -- the probe ----------------------------------------------------------------------------------


def _boots(host: Host, kernel: Path, *, kvm: bool, seconds: float) -> tuple[bool, str]:
    """Boot ``kernel`` on ``host`` (KVM or TCG) and watch its console log for
    the banner, at most ``seconds``."""
    conn = host.conn()
    kvol = host.storage.upload(kernel, "kernel").path
    name = host.new_domain_name("accel-probe", 0)
    what = f"{name}.console.log"
    dom: Any = None
    try:
        xml = probe_domain_xml(name, kernel=kvol, console_log=host.storage.file_path(what), kvm=kvm,
                               owner=host.owner)
        try:
            dom = conn.createXML(xml, 0)
        except libvirt.libvirtError as e:
            return False, qemu_error(e.get_error_message())
        deadline = time.monotonic() + seconds
        text = b""
        while time.monotonic() < deadline:
            vol = host.storage.volume(what)
            if vol is not None:
                with contextlib.suppress(libvirt.libvirtError, OSError):
                    text = download(conn, vol, 0)
                del vol
                if BANNER_RE.search(text):
                    return True, "booted"
            with contextlib.suppress(libvirt.libvirtError):
                if not dom.isActive():
                    break
            time.sleep(_POLL)
        for line in text.decode(errors="replace").splitlines():
            if "error" in line.lower():
                return False, line.strip()
        return False, f"no kernel banner within {seconds:.0f}s"
    finally:
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
        host.forget_domain(name)
        with contextlib.suppress(LibvirtError):
            host.storage.delete(what)


Boots = Callable[..., tuple[bool, str]]


def probe_host(host: Host, kernel: Path, seconds: float = PROBE_SECONDS, *,
               boots: Boots = _boots) -> AccelChoice:
    """Really boot ``kernel`` on ``host`` under KVM; TCG when it does not
    (``boots``: how, a seam for tests). Raises :class:`Inconclusive` when it
    does not boot under TCG either."""
    try:
        types = domain_types(host.conn().getCapabilities())
    except libvirt.libvirtError as e:
        raise LibvirtError(f"{host.label}: capabilities: {e.get_error_message()}") from e
    if "kvm" not in types:
        return AccelChoice(Accel.TCG, TCG_SCALE, f"{host.label} offers no KVM domains")
    ok, why = boots(host, kernel, kvm=True, seconds=seconds)
    if ok:
        return AccelChoice(Accel.KVM, 1.0, f"a KVM guest booted on {host.label}")
    tcg_ok, _ = boots(host, kernel, kvm=False, seconds=seconds * 2)
    if not tcg_ok:
        raise Inconclusive(f"kernel {kernel} printed no banner on {host.label} under TCG either")
    return AccelChoice(Accel.TCG, TCG_SCALE, f"KVM guest did not boot on {host.label} ({why})")


def resolve_host_accel(host: Host, kernel: Path | None, *, cache_dir: Path, fresh: bool = False,
                       probe: Callable[[Host, Path], AccelChoice] = probe_host) -> AccelChoice:
    """The accelerator for VMs of ``kernel`` on ``host``: the host's own
    setting (``host.accel``: kvm or tcg), else probed there once per host and
    kernel type (``fresh``: probe again) and remembered in the cache dir."""
    if host.accel is Accel.KVM:
        return AccelChoice(Accel.KVM, 1.0, f"set for {host.label}")
    if host.accel is Accel.TCG:
        return AccelChoice(Accel.TCG, TCG_SCALE, f"set for {host.label}")
    conn = host.conn()
    try:
        key = (host_key(host.label, conn.getCapabilities(), conn.getLibVersion(), conn.getVersion())
               + "|" + kernel_kind(kernel))
    except libvirt.libvirtError as e:
        raise LibvirtError(f"{host.label}: host info: {e.get_error_message()}") from e
    cache = cache_dir / CACHE_FILE
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and not (fresh and kernel is not None):
        entry = known[key]
        return AccelChoice(Accel(entry["accel"]), float(entry["scale"]),
                           f"{entry['reason']}; remembered from an earlier probe in {cache}")
    if kernel is None:
        return AccelChoice(Accel.TCG, TCG_SCALE, f"no kernel to probe KVM on {host.label} with")
    log.info("%s: probing KVM there (boots %s for up to %.0fs)", host.label, kernel.name, PROBE_SECONDS)
    try:
        choice = probe(host, kernel)
    except Inconclusive as e:
        log.warning("%s: KVM probe inconclusive (%s); using TCG there for this run", host.label, e)
        return AccelChoice(Accel.TCG, TCG_SCALE, str(e))
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    known[key] = {"accel": choice.accel.value, "scale": choice.scale, "reason": choice.reason,
                  "host": host.label, "kernel": kernel_kind(kernel)}
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{CACHE_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    if choice.accel is Accel.TCG:
        log.warning("%s: KVM is not usable there (%s): TCG on that host, its timeouts scaled x%.0f",
                    host.label, choice.reason, choice.scale)
    return choice
