"""The libvirt domain XML for a VM, as a pure function."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from kvmlab.vmm.qemu_argv import netdev_arg
from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import Accel, VMSpec

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def domain_xml(
    spec: VMSpec,
    *,
    name: str,
    ssh_port: int,
    kernel: Path,
    initrd: Path | None,
    disk: Path | None,
    run_as_root: bool,
) -> str:
    """A transient domain: direct kernel boot, serial console on a pty (read
    through libvirt's console stream), user-mode networking with SSH
    forwarded from 127.0.0.1 (passed to QEMU directly, as libvirt's own user
    networking can't forward ports without passt), and every lifecycle event
    ending the domain (the ``-no-reboot`` semantics: a panic stops the VM).

    ``run_as_root``: label the domain to run QEMU as root (only for a local
    ``qemu:///system``), so it can read kernels and images under any path.
    """
    if spec.accel is Accel.AUTO:
        raise ValueError("Accel.AUTO must be resolved before building the domain XML")
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type="kvm" if spec.accel is Accel.KVM else "qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mb)
    ET.SubElement(dom, "vcpu").text = str(spec.cpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(kernel)
    if initrd is not None:
        ET.SubElement(os_el, "initrd").text = str(initrd)
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
        ET.SubElement(d, "source", file=str(disk))
        ET.SubElement(d, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
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
    if run_as_root:
        label = ET.SubElement(dom, "seclabel", type="static", model="dac", relabel="no")
        ET.SubElement(label, "label").text = "+0:+0"
    cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    # An explicit address: libvirt allocates the low slots to its own devices.
    device = "virtio-net-pci,netdev=net0,bus=pcie.0,addr=0x10"
    for arg in ("-netdev", netdev_arg(ssh_port), "-device", device):
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"
