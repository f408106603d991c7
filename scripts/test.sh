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
