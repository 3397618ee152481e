"""Helpers shared by the core tests: settings on a temp data directory, and child Python processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ltms.config import Settings

REPO = Path(__file__).resolve().parent.parent


def hash_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process on `data_dir`: no inherited LTMC_*/FAISS_* settings, the fast hashing
    embedder unless `extra` says otherwise, and this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTMC_", "FAISS_"))}
    env.update(
        {
            "LTMC_DATA_DIR": str(data_dir),
            "LTMC_EMBEDDER": "hash",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
    )
    env.update(extra)
    return env


def hash_settings(data_dir: Path, **extra: str) -> Settings:
    return Settings.load(env=hash_env(data_dir, **extra))


def run_python(
    code: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter; raise with its stderr when it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"child failed with {result.returncode}:\n{result.stderr}")
    return result
