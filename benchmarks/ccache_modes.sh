#!/bin/bash
# What an empty ccache costs a kernel build, by ccache mode: the same objects (DIRS, default
# kernel/ and mm/) built without ccache, with ccache's default mode and with its depend mode
# (kvmlab's builder), each from an empty cache, then depend mode again warm.
#
#   benchmarks/ccache_modes.sh TREE COMMIT CONFIG [WORKDIR]
#
# TREE: a kernel git tree (the demo tree), COMMIT in it, CONFIG a full .config (e.g. a kvmlab
# build's `config`). Measured 2026-12-03 (2 cores, base config, 162 objects): none 88.5 s,
# default 117.3 s, depend 87.4 s; depend warm 11.3 s (198/198 hits).
set -eu
TREE=$1; COMMIT=$2; CONFIG=$3; W=${4:-/tmp/kvmlab-ccache-modes}
DIRS=${DIRS:-"kernel/ mm/"}
SRC=$W/src; OBJ=$W/obj
mkdir -p "$W"
[ -d "$SRC" ] || git -C "$TREE" worktree add -f -q "$SRC" "$COMMIT"
mkdir -p "$OBJ"; cp "$CONFIG" "$OBJ/.config"
export LC_ALL=C KBUILD_BUILD_TIMESTAMP=@0 KBUILD_BUILD_USER=k KBUILD_BUILD_HOST=k
make -s -C "$SRC" O="$OBJ" CC=gcc HOSTCC=gcc olddefconfig >/dev/null
make -s -C "$SRC" O="$OBJ" CC=gcc HOSTCC=gcc -j"$(nproc)" prepare >/dev/null 2>&1
run() {  # variant, keep-cache
  (cd "$OBJ" && for d in $DIRS; do rm -rf "$d"; done)
  [ "$2" = keep ] || { rm -rf "$W/ccache"; mkdir -p "$W/ccache"; }
  CCACHE_DIR="$W/ccache" ccache -z >/dev/null
  local ccw="ccache gcc" extra=""
  case $1 in none) ccw=gcc;; depend) extra="CCACHE_DEPEND=1";; esac
  local t0 t1
  t0=$(date +%s.%N)
  env CCACHE_DIR="$W/ccache" CCACHE_BASEDIR="$W" CCACHE_NOHASHDIR=1 $extra \
    make -s -C "$SRC" O="$OBJ" CC="$ccw" HOSTCC=gcc -j"$(nproc)" $DIRS >/dev/null 2>&1
  t1=$(date +%s.%N)
  printf '%-14s %7.1f s  %s\n' "$1${2:+ ($2)}" "$(echo "$t1 - $t0" | bc)" \
    "$(CCACHE_DIR="$W/ccache" ccache -s 2>/dev/null | grep -E 'Hits|Misses' | head -2 | tr -s ' ' | tr '\n' ' ')"
}
run none ""
run default ""
run depend ""
run depend keep
