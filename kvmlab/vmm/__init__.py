"""VM manager: backends (qemu, libvirt), pools, console watching, SSH."""
