"""Where the index lives: resolution order, the original bare-name bug, directory creation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ltms.errors import InvalidInput, StorageError
from ltms.vector_store.faiss_config import platform_data_dir, prepare_directories, resolve_paths
from tests.helpers import child_env, run_python


def test_default_is_the_platform_data_dir(tmp_path: Path) -> None:
    paths = resolve_paths(env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert paths.data_dir == tmp_path / "xdg" / "ltmc"
    assert paths.index_path == tmp_path / "xdg" / "ltmc" / "faiss_index"
    assert "platform" in paths.data_dir_source


def test_platform_dir_ignores_a_relative_xdg_value(tmp_path: Path) -> None:
    assert platform_data_dir({"HOME": str(tmp_path), "XDG_DATA_HOME": "relative"}) == tmp_path / ".local/share/ltmc"


def test_data_dir_from_environment(tmp_path: Path) -> None:
    paths = resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path / "d")})
    assert paths.data_dir == tmp_path / "d"
    assert paths.index_path == tmp_path / "d" / "faiss_index"
    assert paths.db_path == tmp_path / "d" / "ltmc.sqlite3"
    assert paths.data_dir_source == "environment LTMC_DATA_DIR"


def test_bare_index_name_resolves_inside_the_data_dir_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path / "d"), "FAISS_INDEX_PATH": "faiss_index"})
    assert paths.index_path == tmp_path / "d" / "faiss_index"
    assert "not the working directory" in paths.index_path_source


def test_relative_index_path_with_dirs_stays_inside_the_data_dir(tmp_path: Path) -> None:
    paths = resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path), "FAISS_INDEX_PATH": "sub/idx"})
    assert paths.index_path == tmp_path / "sub" / "idx"
    with pytest.raises(InvalidInput, match=r"\.\."):
        resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path), "FAISS_INDEX_PATH": "../escape"})


def test_explicit_absolute_path_beats_the_environment(tmp_path: Path) -> None:
    env = {"LTMC_DATA_DIR": str(tmp_path / "d"), "FAISS_INDEX_PATH": str(tmp_path / "env_index")}
    assert resolve_paths(env=env).index_path == tmp_path / "env_index"
    explicit = resolve_paths(index_path=tmp_path / "flag_index", env=env)
    assert explicit.index_path == tmp_path / "flag_index"
    assert explicit.index_path_source == "argument --index-path (absolute path)"
    assert explicit.data_dir == tmp_path / "d"  # the database still lives in the data directory


def test_index_path_must_name_a_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="must name a file"):
        resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path), "FAISS_INDEX_PATH": "."})


def test_diagnostics_name_the_winning_source(tmp_path: Path) -> None:
    rows = resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path), "FAISS_INDEX_PATH": "idx"}).diagnostics()
    by_name = {name: (value, source) for name, value, source in rows}
    assert by_name["index_path"][0] == str(tmp_path / "idx")
    assert "FAISS_INDEX_PATH" in by_name["index_path"][1]
    assert by_name["data_dir"][1] == "environment LTMC_DATA_DIR"


def test_data_dir_is_created_owner_only(tmp_path: Path) -> None:
    paths = resolve_paths(env={"LTMC_DATA_DIR": str(tmp_path / "a" / "b")})
    prepare_directories(paths)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_uncreatable_data_dir_names_the_path_and_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    paths = resolve_paths(env={"LTMC_DATA_DIR": str(blocker / "data")})
    with pytest.raises(StorageError) as info:
        prepare_directories(paths)
    assert str(blocker / "data") in str(info.value)
    assert "Not a directory" in str(info.value)


def test_original_bug_regression_bare_name_from_another_cwd(tmp_path: Path) -> None:
    """FAISS_INDEX_PATH=faiss_index, cwd elsewhere: the index lands in the data dir, the cwd stays empty."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    data = tmp_path / "data"
    env = child_env(data, FAISS_INDEX_PATH="faiss_index")
    code = (
        "from ltms.config import Settings\nfrom ltms.service import MemoryService\n"
        "with MemoryService(Settings.load()) as s:\n    s.store('remember the original bug')\n"
    )
    run_python(code, env, cwd=cwd)
    assert list(cwd.iterdir()) == []
    assert (data / "faiss_index").is_file()
    assert (data / "faiss_index.manifest.json").is_file()
    run_python(
        code.replace(
            "s.store('remember the original bug')",
            "assert s.index_state == 'loaded', s.index_state\n    assert s.storage.index.ntotal == 1",
        ),
        env,
        cwd=cwd,
    )
    assert list(cwd.iterdir()) == []
