"""The libvirt domain XML for a VM, and what kvmlab reads back from a domain,
as pure functions."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from kvmlab.owner import Owner
from kvmlab.vmm.qemu_argv import netdev_arg
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import Accel, VMSpec

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
#: Namespace of kvmlab's own element in a domain's ``<metadata>``.
KVMLAB_NS = "https://kvmlab.dev/xmlns/domain/1"


def owner_metadata(dom: ET.Element, owner: Owner) -> None:
    """Who started the domain, in its ``<metadata>`` (a later run of the same
    client reaps it once that process is gone; see kvmlab.owner)."""
    ET.register_namespace("kvmlab", KVMLAB_NS)
    meta = ET.SubElement(dom, "metadata")
    ET.SubElement(meta, f"{{{KVMLAB_NS}}}owner", pid=str(owner.pid), started=str(owner.started),
                  boot=owner.boot, host=owner.client)


def domain_xml(
    spec: VMSpec,
    *,
    name: str,
    kernel: str,
    initrd: str | None,
    disk: str | None,
    console_log: str | None,
    owner: Owner,
    ssh_port: int = 0,
    incoming: bool = False,
) -> str:
    """A transient domain: direct kernel boot, serial console on a pty (read
    through libvirt's console stream, and also kept in ``console_log`` on the
    host), user-mode networking with SSH forwarded from the host's 127.0.0.1
    (passed to QEMU directly, as libvirt's own user networking can't forward
    ports without passt), and every lifecycle event ending the domain (the
    ``-no-reboot`` semantics: a panic stops the VM).

    Every path is a path *on the libvirt host* (storage volumes). The SSH
    port 0 lets QEMU pick a free one (read back with ``info usernet``, see
    :func:`hostfwd_port`). ``incoming``: QEMU starts waiting for a
    migration (``-incoming defer``; a clone of a saved VM).
    """
    if spec.accel is Accel.AUTO:
        raise ValueError("Accel.AUTO must be resolved before building the domain XML")
    ET.register_namespace("qemu", QEMU_NS)
    ET.register_namespace("kvmlab", KVMLAB_NS)
    dom = ET.Element("domain", type="kvm" if spec.accel is Accel.KVM else "qemu")
    ET.SubElement(dom, "name").text = name
    owner_metadata(dom, owner)
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mb)
    ET.SubElement(dom, "vcpu").text = str(spec.cpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_el, "kernel").text = kernel
    if initrd is not None:
        ET.SubElement(os_el, "initrd").text = initrd
    ET.SubElement(os_el, "cmdline").text = spec.full_cmdline()
    if spec.accel is Accel.KVM:
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    else:
        ET.SubElement(dom, "cpu", mode="maximum", migratable="off")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(dom, event).text = "destroy"
    devices = ET.SubElement(dom, "devices")
    if spec.root.kind is RootKind.DISK:
        if disk is None:
            raise ValueError("a disk root needs the VM's overlay path")
        d = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(d, "driver", name="qemu", type="qcow2", cache="unsafe")
        ET.SubElement(d, "source", file=disk)
        ET.SubElement(d, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    if console_log is not None:
        ET.SubElement(serial, "log", file=console_log, append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    for share in spec.shares:
        # 9p (libvirt's default driver for a mount filesystem); passthrough:
        # the guest sees and makes files with the host's owners.
        fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="passthrough")
        ET.SubElement(fs, "source", dir=str(share.path))
        ET.SubElement(fs, "target", dir=share.tag)
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    ET.SubElement(devices, "memballoon", model="none")
    cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    # An explicit address libvirt does not allocate (its root ports take the
    # functions of slot 1, then 2). A low slot also gets a legacy interrupt
    # from q35's ACPI tables: a kernel without MSI (the demo's base config)
    # gets none at slot 0x10.
    device = "virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x3"
    args = ["-netdev", netdev_arg(ssh_port), "-device", device]
    if incoming:
        args += ["-incoming", "defer"]
    for arg in args:
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def domain_owner(xml: str) -> Owner | None:
    """The kvmlab owner recorded in a domain's XML (None: not kvmlab's)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{{{KVMLAB_NS}}}owner")
    if el is None:
        return None
    try:
        return Owner(int(el.get("pid", "")), int(el.get("started") or 0), el.get("boot", ""),
                     el.get("host", ""))
    except ValueError:
        return None


_HOSTFWD_RE = re.compile(r"^\s*TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+\S+\s+22\b", re.M)


def hostfwd_port(info_usernet: str) -> int | None:
    """The host port QEMU bound for the guest's port 22, from the output of
    the monitor command ``info usernet`` (None when there is no such line)."""
    m = _HOSTFWD_RE.search(info_usernet)
    return int(m.group(2)) if m else None


def relay_xml(saved_xml: str, *, console_log: str | None, disk: str | None) -> str:
    """A saved domain's XML (as libvirt stored it with the state) with its
    console log and disk moved to other files on the host: what restoring it
    once more, next to its clones, needs."""
    ET.register_namespace("qemu", QEMU_NS)
    ET.register_namespace("kvmlab", KVMLAB_NS)
    root = ET.fromstring(saved_xml)
    log_el = root.find("devices/serial/log")
    if log_el is not None:
        if console_log is None:
            serial = root.find("devices/serial")
            assert serial is not None
            serial.remove(log_el)
        else:
            log_el.set("file", console_log)
    if disk is not None:
        src = root.find("devices/disk/source")
        if src is not None:
            src.set("file", disk)
    return ET.tostring(root, encoding="unicode") + "\n"
