#!/usr/bin/env bash
# First stage of the test lab host, run by `unshare --mount --pid --net --uts
# --ipc --fork` as pid 1 of the lab's new namespaces: mount the lab's own root
# (the cached image, read-only, under a RAM overlay), give it devices, its SSH
# host key and the client's public key, then pivot into it and exec its init.
# From there on the lab sees none of the client's files.
#
#   stage1.sh ROOT.img RUNDIR KEYDIR LAB_IP IFACE
set -euo pipefail
img=$1 run=$2 keys=$3 ip=$4 iface=$5

mount --make-rprivate /
# A limit, not an allocation: what the lab writes (uploads, overlays) lives in RAM.
mount -t tmpfs -o size=12g,mode=755 lab "$run"
mkdir -p "$run/lower" "$run/upper" "$run/work" "$run/root"
mount -o loop,ro "$img" "$run/lower"
mount -t overlay overlay -o "lowerdir=$run/lower,upperdir=$run/upper,workdir=$run/work" "$run/root"
r=$run/root

mount -t tmpfs -o mode=755 dev "$r/dev"
while read -r name major minor; do
  mknod -m 666 "$r/dev/$name" c "$major" "$minor"
done <<'EOF'
null 1 3
zero 1 5
full 1 7
random 1 8
urandom 1 9
tty 5 0
EOF
mkdir -p "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t proc proc "$r/proc"
mount -t sysfs sys "$r/sys"

install -m 600 "$keys/host_key" "$r/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$keys/host_key.pub" "$r/etc/ssh/ssh_host_ed25519_key.pub"
install -d -m 700 "$r/root/.ssh"
install -m 600 "$keys/client_key.pub" "$r/root/.ssh/authorized_keys"
cat >"$r/etc/ssh/sshd_config.d/kvmlab-lab.conf" <<EOF
HostKey /etc/ssh/ssh_host_ed25519_key
ListenAddress $ip
PermitRootLogin prohibit-password
UseDNS no
EOF
install -m 755 "$(dirname "$0")/lab-init.sh" "$r/sbin/kvmlab-lab-init"

hostname kvmlab-lab
cd "$r"
mkdir -p .oldroot
pivot_root . .oldroot
exec chroot . /sbin/kvmlab-lab-init "$ip" "$iface"
