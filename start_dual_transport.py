#!/usr/bin/env python3
"""Start LTMC in dual mode: MCP over stdio and over HTTP (/mcp, /sse, /health) in one process, one memory.

    python start_dual_transport.py [ltmc serve options, e.g. --port 5050 --data-dir DIR]

The same as `ltmc serve --transport dual ...`. The data directory and index path come from --data-dir/--index-path,
LTMC_DATA_DIR/FAISS_INDEX_PATH or the per-user default, and are resolved to absolute paths and checked by ltms
(never against the working directory). All logic lives in the `ltms` package; this file only forwards. It works
from any directory and with any `python`: it re-executes itself with the project's .venv (run scripts/setup.sh once).
"""

import sys

from ltms.launcher import run_ltmc  # standard library only; ltms is found beside this script

if __name__ == "__main__":
    sys.exit(run_ltmc(__file__, ["serve", "--transport", "dual", *sys.argv[1:]]))
