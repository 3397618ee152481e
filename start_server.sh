#!/usr/bin/env bash
# Start the LTMC MCP server:  start_server.sh [stdio|http|dual] [more `ltmc serve` options]
# Without a transport, `ltmc serve` picks it: stdio (what an agent that starts this command expects), or http when
# --host or --port is given. `start_server.sh --port 6000` and `start_server.sh --transport http` work too.
#
# Works from any working directory. On first use it creates the virtual environment and installs the project
# (scripts/setup.sh). It exports LTMC_DATA_DIR and FAISS_INDEX_PATH as absolute paths (defaults: the per-user data
# directory, e.g. ~/.local/share/ltmc, and faiss_index inside it; set either to override), checks that the data
# directory can be created and written, and then runs `ltmc serve`. Every other setting comes from the LTMC_*
# environment variables (see README). LTMC_VENV overrides the environment's location (default: .venv here).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LTMC_VENV:-$root/.venv}"
case "${1:-}" in
    stdio|http|dual) set -- --transport "$@" ;;
    ""|-*) ;;
    *) echo "usage: $0 [stdio|http|dual] [ltmc serve options]" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/ltmc" ] || ! "$venv/bin/python" -c "import ltms" 2>/dev/null; then
    echo "start_server: setting up $venv" >&2
    LTMC_VENV="$venv" "$root/scripts/setup.sh" >&2  # stdout belongs to the protocol in stdio mode
fi

# Path resolution and the writability check live in ltms (faiss_config), not here: one place decides.
paths="$("$venv/bin/python" -c '
import sys
from ltms.vector_store.faiss_config import prepare_directories, resolve_paths
try:
    paths = resolve_paths()
    prepare_directories(paths)
except Exception as exc:
    sys.exit(f"start_server: {exc}")
print(paths.data_dir)
print(paths.index_path)')"
{ read -r LTMC_DATA_DIR; read -r FAISS_INDEX_PATH; } <<<"$paths"
export LTMC_DATA_DIR FAISS_INDEX_PATH
echo "start_server: data directory $LTMC_DATA_DIR, index $FAISS_INDEX_PATH" >&2

exec "$venv/bin/ltmc" serve "$@"
