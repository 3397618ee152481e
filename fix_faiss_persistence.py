#!/usr/bin/env python3
"""Diagnose and repair an LTMC data directory: the same as `ltmc doctor`.

    python fix_faiss_persistence.py            # check; exit status 0 when healthy, 1 naming each problem
    python fix_faiss_persistence.py --fix      # repair (moves aside, never deletes), then check again
    python fix_faiss_persistence.py --json     # machine-readable report

It keeps the name of the script that first repaired the original bug (a bare `faiss_index` path resolved
against the working directory, so the index was never saved). All logic lives in ltms.ops.doctor. It works from
any directory and with any `python`: it re-executes itself with the project's .venv (run scripts/setup.sh once).
"""

import sys

from ltms.launcher import run_ltmc  # standard library only; ltms is found beside this script

if __name__ == "__main__":
    sys.exit(run_ltmc(__file__, ["doctor", *sys.argv[1:]]))
