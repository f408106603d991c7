#!/usr/bin/env bash
# Build the root filesystem of the test "lab host": Debian bookworm with
# libvirt, QEMU and sshd, as an ext4 image the lab mounts read-only (under a
# RAM overlay) in its own mount namespace. The client never sees its files.
#
#   build-root.sh OUT.img MIRROR
#
# About 3-5 minutes (debootstrap, then ~300 MB of packages); the test harness
# caches the image by this script's hash.
set -euo pipefail

out=$1
mirror=$2
suite=bookworm
packages=(
  libvirt-daemon-system qemu-system-x86 qemu-utils openssh-server iproute2 procps
)

work=$(mktemp -d "$(dirname "$out")/.lab-root.XXXXXX")
tree=$work/root
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$tree/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

debootstrap --variant=minbase "$suite" "$tree" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

# No daemon starts while packages install: the lab starts its own at boot.
printf '#!/bin/sh\nexit 101\n' >"$tree/usr/sbin/policy-rc.d"
chmod 755 "$tree/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$tree/etc/resolv.conf"
mount -t proc proc "$tree/proc"
chroot "$tree" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "${packages[@]}" >"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; exit 1; }
chroot "$tree" apt-get clean
umount "$tree/proc"
rm -f "$tree/usr/sbin/policy-rc.d" "$tree/etc/ssh/ssh_host_"*
rm -rf "$tree/var/lib/apt/lists/"*

size=$(( $(du -sm "$tree" | cut -f1) + 512 ))
mkfs.ext4 -q -L kvmlab-lab -d "$tree" "$work/root.img" "${size}M"
mv "$work/root.img" "$out"
