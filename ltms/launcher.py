"""Run an `ltmc` command for the checkout's top-level scripts (fix_faiss_persistence.py, start_dual_transport.py)
with the project's virtual environment, whatever `python` started them.

Users type `python fix_faiss_persistence.py`, and that `python` is usually the system's, without faiss or the MCP
SDK. So the script re-executes itself with `.venv/bin/python` (or $LTMC_VENV's) when that exists; without it, it
tries the current interpreter and, if LTMC's dependencies are missing there, says in one line to run the setup
script. Standard library only: this module must import under any Python.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

_REEXECUTED = "LTMC_LAUNCHER_REEXECUTED"  # set before re-executing, so a broken venv cannot loop


def project_venv(root: Path) -> Path:
    return Path(os.environ.get("LTMC_VENV") or root / ".venv")


def run_ltmc(script: str, argv: Sequence[str]) -> int:
    """Run `ltmc ARGV` for `script` (a file at the top of the checkout); returns the exit status."""
    root = Path(script).resolve().parent
    venv = project_venv(root)
    python = venv / "bin" / "python"
    if python.exists() and not _running_in(venv) and _REEXECUTED not in os.environ:
        os.environ[_REEXECUTED] = "1"
        os.execv(python, [str(python), script, *sys.argv[1:]])
    os.environ.pop(_REEXECUTED, None)  # not inherited by the server's own children
    try:
        from ltms.cli import main

        return main(list(argv))
    except ModuleNotFoundError as exc:  # a dependency of LTMC, loaded lazily by the command
        print(
            f"{Path(script).name}: {sys.executable} cannot run LTMC ({exc}): run {root / 'scripts' / 'setup.sh'} "
            f"once to create {venv}, which this script then uses",
            file=sys.stderr,
        )
        return 1


def _running_in(venv: Path) -> bool:
    try:
        return Path(sys.prefix).resolve() == venv.resolve()
    except OSError:
        return False
