#!/usr/bin/env bash
# Prepare a Debian host for kvmlab: system packages, the project venv, and the
# libvirt daemons (started by hand: these machines have no systemd).
# Idempotent: a second run only checks and starts what is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${KVMLAB_VENV:-$here/.venv}

APT_PACKAGES=(
  # VMs
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  # guest roots
  busybox-static openssh-server openssh-client cpio debootstrap e2fsprogs
  # kernel builds
  build-essential flex bison bc libelf-dev libssl-dev dwarves ccache
  git xz-utils kmod binutils
  # clang builds (LLVM=1; syzbot builds its 6.1 kernels with clang 15)
  clang-15 lld-15 llvm-15
  # test kernels
  linux-source-6.1 linux-image-cloud-amd64
  # python headers for libvirt-python
  python3-dev
)

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install_packages() {
  local missing
  missing=$(missing_packages)
  if [ -z "$missing" ]; then
    log "system packages: all present"
    return
  fi
  log "installing:" $missing
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # shellcheck disable=SC2086
  as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

start_daemons() {
  # No systemd here: start the daemons ourselves when they are not running.
  if ! pgrep -x virtlogd >/dev/null; then
    log "starting virtlogd"
    as_root virtlogd -d
  fi
  if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd"
    as_root libvirtd -d
  fi
  local i
  for i in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "libvirtd did not answer on qemu:///system"
  return 1
}

make_venv() {
  local stamp="$venv/.kvmlab-stamp" want
  want=$(cat "$here/pyproject.toml" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "venv: up to date ($venv)"
    return
  fi
  log "creating venv at $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[test]"
  echo "$want" >"$stamp"
}

install_packages
make_venv
start_daemons
log "ready: $venv/bin/kvmlab"
