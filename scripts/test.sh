#!/usr/bin/env bash
# Set the host up (scripts/setup.sh) and run kvmlab's whole test suite:
# ruff, mypy --strict, then pytest with every tier (unit, vm, libvirt, kernel, slow).
# Extra arguments go to pytest. The run must fit the budget (README: Test budget);
# pytest ends with a "test budget" summary of where the time went.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
# The test budget counts from here, setup included (tests/budget.py).
export KVMLAB_SUITE_STARTED=${KVMLAB_SUITE_STARTED:-$(date +%s)}
# A run writes about 8 GiB into the test cache (kernel builds, images) and
# under 1 GiB of temporary files at a time (measured: 8.6 GiB at the peak, a
# clean checkout with empty caches): say so in one line now rather than fail
# half-way with "No space left on device".
cache=${KVMLAB_TEST_CACHE:-$here/.test-cache}
declare -A need=()
for spec in "$cache:${KVMLAB_TEST_CACHE_GIB:-9}" "${TMPDIR:-/tmp}:${KVMLAB_TEST_TMP_GIB:-2}"; do
  dir=${spec%:*}
  case ${spec##*:} in
    ''|*[!0-9]*) echo "scripts/test.sh: KVMLAB_TEST_CACHE_GIB / KVMLAB_TEST_TMP_GIB: '${spec##*:}' is not a whole number of GiB" >&2
                 exit 2 ;;
  esac
  while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
  mount=$(df -P "$dir" | awk 'NR == 2 {print $6}')
  need[$mount]=$(( ${need[$mount]:-0} + ${spec##*:} ))
done
for mount in "${!need[@]}"; do
  free_gib=$(df -Pk "$mount" | awk 'NR == 2 {printf "%d", $4 / 1048576}')
  if [ "$free_gib" -lt "${need[$mount]}" ]; then
    echo "scripts/test.sh: only $free_gib GiB free on $mount (test cache $cache, temporary files" \
      "${TMPDIR:-/tmp}); a full run writes about ${need[$mount]} GiB there: free some space, or point" \
      "KVMLAB_TEST_CACHE or TMPDIR at a larger disk" >&2
    exit 1
  fi
done
bash scripts/setup.sh
venv=${KVMLAB_VENV:-$here/.venv}
SECONDS=0
echo "== ruff"
"$venv/bin/ruff" check kvmlab tests benchmarks
echo "== mypy --strict"
"$venv/bin/mypy"
echo "== pytest (ruff and mypy took ${SECONDS} s)"
# exec: a signal for this script (kill PID, Ctrl-C) goes to pytest itself.
exec "$venv/bin/pytest" "$@"
