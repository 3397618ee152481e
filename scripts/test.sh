#!/usr/bin/env bash
# Set everything up (quick when nothing changed) and run the test suite, then the gates a maintainer relies on:
# ruff check, ruff format --check and mypy over ltms/. Extra arguments go to pytest (the configuration in
# pyproject.toml makes warnings errors and unknown markers errors). Every gate runs even after a failure; the
# exit status is non-zero if any failed, and the last line names them.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" --dev || exit
cd "$root" || exit
python="${LTMC_VENV:-$root/.venv}/bin/python"

failed=()
gate() {
    local name="$1"
    shift
    echo "test.sh: $name" >&2
    "$@" || failed+=("$name")
}
gate "pytest" "$python" -m pytest "$@"
gate "ruff check" "$python" -m ruff check .
gate "ruff format --check" "$python" -m ruff format --check .
gate "mypy" "$python" -m mypy

if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all gates passed (pytest, ruff check, ruff format --check, mypy)" >&2
