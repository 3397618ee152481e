"""Where the index lives: path resolution, data directory creation and validation, diagnostics.

Resolution order for the index path, highest first:

1. an explicit absolute path (the `--index-path` flag or the `index_path` argument);
2. `FAISS_INDEX_PATH`;
3. a bare file name (or other relative path) from either of those, resolved *inside the data directory*;
4. `LTMC_DATA_DIR` (the index is `faiss_index` inside it);
5. the platform's per-user data directory.

A bare name such as `faiss_index` never resolves against the current working directory: that was the
original bug (`os.path.dirname('faiss_index') == ''`, `makedirs('')` failed, the failure was swallowed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ltms.errors import InvalidInput
from ltms.fsutil import ensure_directory

DEFAULT_INDEX_NAME = "faiss_index"
DB_NAME = "ltmc.sqlite3"


@dataclass(frozen=True)
class ResolvedPaths:
    data_dir: Path
    data_dir_source: str
    index_path: Path
    index_path_source: str

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_NAME

    @property
    def manifest_path(self) -> Path:
        return self.index_path.with_name(self.index_path.name + ".manifest.json")

    @property
    def lock_path(self) -> Path:
        return self.index_path.with_name(self.index_path.name + ".lock")

    def diagnostics(self) -> list[tuple[str, str, str]]:
        """(setting, value, which source won) for every path."""
        return [
            ("data_dir", str(self.data_dir), self.data_dir_source),
            ("index_path", str(self.index_path), self.index_path_source),
            ("manifest_path", str(self.manifest_path), "beside the index"),
            ("db_path", str(self.db_path), "inside the data directory"),
        ]


def platform_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory of this platform, for the app name `ltmc`."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "ltmc"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "ltmc"
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "ltmc"


def resolve_paths(
    index_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ResolvedPaths:
    """Resolve the data directory and the index path to absolute paths, recording which source won."""
    env = os.environ if env is None else env

    if data_dir is not None and str(data_dir):
        resolved_dir, dir_source = _absolute(data_dir), "argument --data-dir"
    elif env.get("LTMC_DATA_DIR"):
        resolved_dir, dir_source = _absolute(env["LTMC_DATA_DIR"]), "environment LTMC_DATA_DIR"
    else:
        resolved_dir, dir_source = platform_data_dir(env), "platform per-user data directory (default)"

    if index_path is not None and str(index_path):
        raw, origin = str(index_path), "argument --index-path"
    elif env.get("FAISS_INDEX_PATH"):
        raw, origin = env["FAISS_INDEX_PATH"], "environment FAISS_INDEX_PATH"
    else:
        raw, origin = "", ""

    if not raw:
        resolved_index = resolved_dir / DEFAULT_INDEX_NAME
        index_source = f"default name {DEFAULT_INDEX_NAME!r} inside the data directory"
    else:
        candidate = Path(raw).expanduser()
        if candidate.is_absolute():
            resolved_index, index_source = candidate, f"{origin} (absolute path)"
        else:
            if ".." in candidate.parts:
                raise InvalidInput(f"index path {raw!r} from {origin} must not contain '..'")
            resolved_index = resolved_dir / candidate
            index_source = f"{origin}={raw!r} (relative, resolved inside the data directory, not the working directory)"
    if resolved_index.name in ("", ".") or resolved_index == resolved_dir:
        raise InvalidInput(f"index path {raw!r} from {origin} must name a file, not a directory")
    return ResolvedPaths(resolved_dir, dir_source, resolved_index, index_source)


def prepare_directories(paths: ResolvedPaths) -> None:
    """Create the data directory and the index's directory (owner-only) and check both are writable.

    Raises StorageError naming the path and the reason.
    """
    ensure_directory(paths.data_dir)
    if paths.index_path.parent != paths.data_dir:
        ensure_directory(paths.index_path.parent)


def _absolute(raw: str | os.PathLike[str]) -> Path:
    # An explicitly configured data directory may be relative: it is made absolute once, at start-up.
    return Path(raw).expanduser().absolute()
