#!/usr/bin/env bash
# Set everything up from scratch (idempotent) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" --dev
cd "$root"
exec "${LTMC_VENV:-$root/.venv}/bin/python" -m pytest "$@"
