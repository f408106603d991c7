"""The QEMU command line for a VM, as a pure function."""

from __future__ import annotations

from pathlib import Path

from kvmlab.vmm.root import RootKind
from kvmlab.vmm.spec import Accel, VMSpec


def netdev_arg(ssh_port: int) -> str:
    """User-mode networking; SSH forwarded from 127.0.0.1 only. ``restrict=on``
    keeps the guest away from the host's other services and the outside."""
    return f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"


def accel_args(accel: Accel) -> list[str]:
    if accel is Accel.KVM:
        return ["-accel", "kvm", "-cpu", "host"]
    if accel is Accel.TCG:
        # Multi-threaded TCG lets an SMP guest use several host cores.
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]
    raise ValueError("Accel.AUTO must be resolved before building the argv")


def qemu_argv(
    spec: VMSpec,
    *,
    ssh_port: int,
    disk: Path | None,
    pidfile: Path | None = None,
    qmp: Path | None = None,
) -> list[str]:
    """argv for ``qemu-system-x86_64`` with the serial console on stdio.

    ``disk`` is the VM's own qcow2 overlay when the root is a disk image. The
    console is the process's stdout (and its input the process's stdin);
    QEMU's own messages go to stderr. ``qmp``: a unix socket QEMU listens on
    for QMP (the monitor kvmlab sends commands to).
    """
    argv = [
        spec.qemu,
        "-name", spec.name,
        "-machine", "q35",
        *accel_args(spec.accel),
        "-smp", str(spec.cpus),
        "-m", str(spec.memory_mb),
        "-display", "none",
        "-vga", "none",
        "-no-reboot",
        "-nodefaults",
        "-chardev", "stdio,id=con0,signal=off",
        "-serial", "chardev:con0",
        "-netdev", netdev_arg(ssh_port),
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-kernel", str(spec.kernel),
        "-append", spec.full_cmdline(),
    ]
    if spec.root.kind is RootKind.INITRAMFS:
        argv += ["-initrd", str(spec.root.path)]
    else:
        if disk is None:
            raise ValueError("a disk root needs the VM's overlay path")
        argv += ["-drive", f"file={disk},format=qcow2,if=virtio,cache=unsafe"]
        if spec.initrd is not None:
            argv += ["-initrd", str(spec.initrd)]
    for i, share in enumerate(spec.shares):
        # security_model=none: guest file ownership is the host's, and it
        # works for an unprivileged QEMU too.
        argv += ["-virtfs", f"local,path={share.path},mount_tag={share.tag},security_model=none,id=fs{i}"]
    if spec.paused:
        argv += ["-S"]
    if qmp is not None:
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if pidfile is not None:
        argv += ["-pidfile", str(pidfile)]
    argv += list(spec.extra_args)
    return argv
