#!/usr/bin/env bash
# Set the host up (scripts/setup.sh) and run kvmlab's whole test suite:
# ruff, mypy --strict, then pytest with every tier (unit, vm, libvirt, kernel, slow).
# Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/setup.sh
venv=${KVMLAB_VENV:-$here/.venv}
echo "== ruff"
"$venv/bin/ruff" check kvmlab tests benchmarks
echo "== mypy --strict"
"$venv/bin/mypy"
echo "== pytest"
exec "$venv/bin/pytest" "$@"
