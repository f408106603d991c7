"""Configure a debootstrapped root directory into a bootable, SSH-reachable guest.

Everything here edits files under the root directory from the host: no chroot
mounts and no daemons. The only program run inside the tree is ``systemctl``
through plain ``chroot`` (it edits unit symlinks offline), given to the
functions as a callable so the file edits can be tested without root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvmlab.images.recipe import ExtraFile, Recipe

#: Packages the builder's own configuration depends on, added to every recipe:
#: an init (systemd, whose networkd does the DHCP), udev (serial getty and
#: networkd wait for udev to announce devices) and sshd.
REQUIRED_PACKAGES: tuple[str, ...] = ("systemd-sysv", "udev", "openssh-server")

#: Units that only slow boots down or touch the network on their own in a
#: throwaway guest; masked.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    # Starts gettys on tty2..6 when logind is missing; there is no VGA console.
    "getty-static.service",
    "man-db.timer",
    "systemd-networkd-wait-online.service",
)

NETWORK_UNIT = "20-kvmlab-dhcp.network"
SYSCTL_FILE = "90-kvmlab.conf"
SSHD_DROPIN = "90-kvmlab.conf"

#: Runs ``systemctl ARGS...`` against the root directory.
Systemctl = Callable[[Sequence[str]], None]


@dataclass(frozen=True)
class GuestFile:
    """One file the configuration writes, relative to the guest's ``/``."""

    path: str
    content: str
    mode: int = 0o644


def network_unit() -> str:
    """systemd-networkd: DHCP on the first Ethernet NIC, whatever its name."""
    return (
        "# Written by kvmlab: DHCP on the Ethernet NIC (eth0 or enp0sN alike).\n"
        "[Match]\n"
        "Name=e*\n"
        "\n"
        "[Network]\n"
        "DHCP=ipv4\n"
        "LinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n"
        "\n"
        "[DHCPv4]\n"
        "UseDomains=no\n"
    )


def sshd_config() -> str:
    """sshd drop-in: root by key only, and nothing that makes logins wait."""
    return (
        "# Written by kvmlab.\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "UseDNS no\n"
        "GSSAPIAuthentication no\n"
        "PrintMotd no\n"
    )


def ssh_service_dropin() -> str:
    # Debian's unit runs ``sshd -t`` before sshd: a second start of sshd that
    # costs seconds under TCG and checks a config kvmlab wrote itself.
    # (/run/sshd comes from the unit's RuntimeDirectory=.)
    return "[Service]\nExecStartPre=\n"


def sysctl_conf(sysctls: Sequence[tuple[str, str]]) -> str:
    lines = ["# Written by kvmlab from the image recipe."]
    lines += [f"{k} = {v}" for k, v in sysctls]
    return "\n".join(lines) + "\n"


def fstab(recipe: Recipe) -> str:
    # Pass 0: the root is mounted read-write by the kernel already; fsck on a
    # mounted read-write filesystem would do harm, and each VM's overlay is fresh.
    return (
        "# Written by kvmlab.\n"
        f"{recipe.root_device}\t/\t{recipe.filesystem}\trw,relatime,errors=remount-ro\t0\t0\n"
        "tmpfs\t/tmp\ttmpfs\tdefaults,nosuid,nodev\t0\t0\n"
    )


def autologin_dropin(tty: str) -> str:
    # The empty ExecStart= clears the unit's own before setting ours.
    return (
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 {tty} $TERM\n"
    )


def guest_files(recipe: Recipe, *, authorized_key: str, machine_id: str) -> list[GuestFile]:
    """Every file the configuration writes, in order (the recipe's own files last)."""
    files = [
        GuestFile("/etc/hostname", recipe.hostname + "\n"),
        GuestFile("/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{recipe.hostname}\n::1\tlocalhost\n"),
        GuestFile("/etc/fstab", fstab(recipe)),
        # A fixed id keeps systemd out of its first-boot path; per image, not per VM.
        GuestFile("/etc/machine-id", machine_id + "\n", 0o444),
        # The host's resolver (copied in by debootstrap) means nothing in the guest.
        GuestFile("/etc/resolv.conf", ""),
        GuestFile(f"/etc/systemd/network/{NETWORK_UNIT}", network_unit()),
        GuestFile(f"/etc/ssh/sshd_config.d/{SSHD_DROPIN}", sshd_config()),
        GuestFile("/etc/systemd/system/ssh.service.d/kvmlab-fast-start.conf", ssh_service_dropin()),
        GuestFile("/root/.ssh/authorized_keys", authorized_key.strip() + "\n", 0o600),
        GuestFile(f"/etc/sysctl.d/{SYSCTL_FILE}", sysctl_conf(recipe.sysctls)),
    ]
    if recipe.serial_autologin:
        files.append(
            GuestFile(
                f"/etc/systemd/system/serial-getty@{recipe.serial_console}.service.d/autologin.conf",
                autologin_dropin(recipe.serial_console),
            )
        )
    files += [GuestFile(f.path, f.content, f.mode) for f in recipe.files]
    return files


def systemctl_calls(recipe: Recipe) -> list[list[str]]:
    """The ``systemctl`` invocations that enable and mask units."""
    return [
        [
            "enable",
            "systemd-networkd.service",
            "ssh.service",
            f"serial-getty@{recipe.serial_console}.service",
        ],
        ["mask", *MASKED_UNITS],
    ]


def _inside(root: Path, guest_path: str) -> Path:
    rel = guest_path.lstrip("/")
    target = root / rel
    # Resolve parents only: a file may legitimately replace a symlink (resolv.conf).
    parent = target.parent.resolve()
    if not parent.is_relative_to(root.resolve()):
        raise ValueError(f"{guest_path} leaves the image root")
    return parent / target.name


def write_file(root: Path, f: GuestFile | ExtraFile) -> None:
    """Write one file into the tree at ``root``, replacing a file or symlink there."""
    target = _inside(root, f.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f.content)
    os.chmod(target, f.mode)  # not subject to the umask


def configure(
    root: Path, recipe: Recipe, *, authorized_key: str, machine_id: str, systemctl: Systemctl
) -> None:
    """Turn a debootstrapped tree into the guest the recipe describes."""
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    for f in guest_files(recipe, authorized_key=authorized_key, machine_id=machine_id):
        write_file(root, f)
    for args in systemctl_calls(recipe):
        systemctl(args)
    clean(root)


def clean(root: Path) -> None:
    """Drop what only the build needed: downloaded packages and apt lists."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = root / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.is_file() and not p.is_symlink() and p.name != "lock":
                p.unlink()
    debootstrap_dir = root / "debootstrap"
    if debootstrap_dir.is_dir():
        shutil.rmtree(debootstrap_dir)


def parse_dpkg_status(text: str) -> list[tuple[str, str]]:
    """``(package, version)`` of every installed package in a dpkg status file, sorted."""
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out.append((fields["Package"], fields.get("Version", "")))
    return sorted(out)
