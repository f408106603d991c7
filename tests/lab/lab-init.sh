#!/bin/sh
# pid 1 of the test lab host, inside its own root: network, sshd, virtlogd,
# libvirtd; then reap children until the harness ends the lab.
#
#   kvmlab-lab-init LAB_IP IFACE
set -e
umount -l /.oldroot
rmdir /.oldroot

ip link set lo up
i=0
while ! ip link show "$2" >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -lt 200 ] || { echo "LAB FAILED: no $2"; exit 1; }
  sleep 0.05
done
ip addr add "$1/30" dev "$2"
ip link set "$2" up

mkdir -p /run/sshd /run/libvirt /var/log/libvirt /var/lib/libvirt/images
/usr/sbin/sshd -D -e 2>/var/log/sshd.log &
virtlogd -d
/usr/sbin/libvirtd 2>/var/log/libvirtd.log &
i=0
until virsh -c qemu:///system version >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -lt 300 ] || { echo "LAB FAILED: libvirtd"; tail -5 /var/log/libvirtd.log; exit 1; }
  sleep 0.1
done
echo "LAB READY"
while :; do
  wait || true
  sleep 1
done
