"""kvmlab: reproduce and bisect Linux kernel crashes in QEMU/KVM virtual machines."""

__version__ = "0.1.0"
