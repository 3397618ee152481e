#!/usr/bin/env python3
"""Diagnose and repair an LTMC data directory: the same as `ltmc doctor`.

    python fix_faiss_persistence.py            # check; exit status 0 when healthy, 1 naming each problem
    python fix_faiss_persistence.py --fix      # repair (moves aside, never deletes), then check again
    python fix_faiss_persistence.py --json     # machine-readable report

It keeps the name of the script that first repaired the original bug (a bare `faiss_index` path resolved
against the working directory, so the index was never saved). All logic lives in ltms.ops.doctor; this file
works from any directory, with or without the package installed.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ltms.cli import main  # noqa: E402  (needs the repo root on sys.path first)

if __name__ == "__main__":
    sys.exit(main(["doctor", *sys.argv[1:]]))
