#!/usr/bin/env bash
# Prepare a Debian host for kvmlab: system packages, the project venv, and the
# libvirt daemons (started by hand: these machines have no systemd).
# Idempotent: a second run only checks and starts what is missing.
# Says what it installs and how long each step took.
#
# Environment: KVMLAB_VENV (default: .venv in the checkout); KVMLAB_NO_APT=1
# skips the system packages (a host without apt, prepared by hand).
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
  # kvmlab boot: gdb for --gdb, tmux for its terminal tests
  gdb tmux
  # python headers for libvirt-python
  python3-dev
  # the report's browser check (headless) and the live view's terminal test
  chromium tmux
)

log() { printf 'setup: %s\n' "$*" >&2; }
started=$SECONDS
step_started=$SECONDS
took() { echo "$((SECONDS - step_started)) s"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

check_host() {
  # One line saying what is needed when this is not a Debian-like host.
  if [ "${KVMLAB_NO_APT:-}" != 1 ] && ! { command -v apt-get && command -v dpkg-query; } >/dev/null 2>&1; then
    local os
    os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}") || true
    log "needs a Debian 12 (apt) host, this is ${os:-unknown}: install the equivalents of" \
        "${APT_PACKAGES[*]} and python3 >= 3.11 with venv, then run again with KVMLAB_NO_APT=1"
    exit 1
  fi
  if ! python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "needs python3 >= 3.11 with the venv module (python3 is $(python3 --version 2>&1 || echo missing))"
    exit 1
  fi
}

missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install_packages() {
  step_started=$SECONDS
  if [ "${KVMLAB_NO_APT:-}" = 1 ]; then
    log "system packages: skipped (KVMLAB_NO_APT=1)"
    return
  fi
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  if [ -z "${missing// /}" ]; then
    log "system packages: all ${#APT_PACKAGES[@]} present"
    return
  fi
  log "apt-get install:" $missing
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  local before after
  before=$(dpkg-query -W -f='${Package}\n' 2>/dev/null | sort)
  # shellcheck disable=SC2086
  as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
  after=$(dpkg-query -W -f='${Package}\n' 2>/dev/null | sort)
  local added
  added=$(comm -13 <(echo "$before") <(echo "$after") | wc -l)
  log "system packages: installed $(echo $missing | wc -w) asked for ($added with dependencies) in $(took)"
}

make_venv() {
  step_started=$SECONDS
  local stamp="$venv/.kvmlab-stamp" want
  want=$(cat "$here/pyproject.toml" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "venv: up to date ($venv)"
    return
  fi
  log "venv: creating $venv, pip install -e '$here[test]'"
  python3 -m venv "$venv"
  local out
  out=$(mktemp)
  if ! { "$venv/bin/pip" install --upgrade pip && "$venv/bin/pip" install -e "$here[test]"; } >"$out" 2>&1; then
    tail -n 20 "$out" >&2
    rm -f "$out"
    log "venv: pip install failed (above)"
    return 1
  fi
  grep '^Successfully installed' "$out" | sed 's/^/setup: venv: /' >&2 || true
  rm -f "$out"
  echo "$want" >"$stamp"
  log "venv: ready in $(took)"
}

start_daemons() {
  step_started=$SECONDS
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
    if virsh -c qemu:///system version >/dev/null 2>&1; then
      log "libvirtd: answering on qemu:///system ($(took))"
      return 0
    fi
    sleep 0.2
  done
  log "libvirtd did not answer on qemu:///system"
  return 1
}

check_host
install_packages
make_venv
start_daemons
log "ready: $venv/bin/kvmlab (setup took $((SECONDS - started)) s)"
