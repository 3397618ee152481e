"""One Settings object: environment variables and CLI flags, validated, with defaults.

Precedence for every setting: a CLI flag, then the environment variable, then the default. `sources`
records which one won, for `ltmc doctor` and the start-up log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ltms.embeddings import EMBEDDER_CHOICES
from ltms.errors import InvalidInput
from ltms.vector_store.faiss_config import ResolvedPaths, resolve_paths

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip().lower() for name in raw.split(",") if name.strip())


def _log_level(raw: str) -> str:
    return _choice("debug", "info", "warning", "error")(raw).upper()


# name -> (environment variable, parser, default, description)
SETTINGS_TABLE: dict[str, tuple[str, Callable[[str], Any], Any, str]] = {
    "embedder": (
        "LTMC_EMBEDDER",
        _choice(*EMBEDDER_CHOICES),
        "minilm",
        "embedding model: minilm (all-MiniLM-L6-v2, offline) or hash (tests only)",
    ),
    "max_text_bytes": (
        "LTMC_MAX_TEXT_BYTES",
        _int_in(1, 10 * 1024 * 1024),
        32 * 1024,
        "largest memory text, in UTF-8 bytes",
    ),
    "max_metadata_bytes": (
        "LTMC_MAX_METADATA_BYTES",
        _int_in(2, 1024 * 1024),
        16 * 1024,
        "largest metadata object, as compact JSON",
    ),
    "snapshot_every": (
        "LTMC_SNAPSHOT_EVERY",
        _int_in(1, 10_000_000),
        1000,
        "save the index snapshot after this many changes",
    ),
    "snapshot_quiet_seconds": (
        "LTMC_SNAPSHOT_QUIET_SECONDS",
        _positive_float,
        5.0,
        "...or after this many seconds without a change",
    ),
    "index": (
        "LTMC_INDEX",
        _choice("auto", "exact", "hnsw"),
        "auto",
        "vector index: auto (exact search, approximate HNSW from 50k chunks), exact or hnsw",
    ),
    "read_only": ("LTMC_READ_ONLY", _bool, False, "expose only the reading tools"),
    "http_host": ("LTMC_HTTP_HOST", str, "127.0.0.1", "HTTP listen address"),
    "http_port": ("LTMC_HTTP_PORT", _int_in(0, 65535), 5050, "HTTP listen port"),
    "auth_token": ("LTMC_AUTH_TOKEN", str, None, "bearer token required on /mcp and /sse when set"),
    "allowed_hosts": (
        "LTMC_ALLOWED_HOSTS",
        _names,
        (),
        "extra Host names the HTTP server accepts, comma-separated (e.g. behind a reverse proxy)",
    ),
    "allow_insecure": ("LTMC_ALLOW_INSECURE", _bool, False, "allow a non-loopback host without a token"),
    "log_level": ("LTMC_LOG_LEVEL", _log_level, "INFO", "debug, info, warning or error (logs go to stderr)"),
    "max_result_chars": (
        "LTMC_MAX_RESULT_CHARS",
        _int_in(100, 1024 * 1024),
        2000,
        "longest text returned per memory by retrieve/list before truncation",
    ),
    "retrieval_mode": (
        "LTMC_RETRIEVAL_MODE",
        _choice("hybrid", "semantic", "keyword"),
        "hybrid",
        "default retrieve_memory mode: hybrid (keywords + meaning), semantic or keyword",
    ),
}


@dataclass(frozen=True)
class Settings:
    paths: ResolvedPaths
    embedder: str = "minilm"
    max_text_bytes: int = 32 * 1024
    max_metadata_bytes: int = 16 * 1024
    snapshot_every: int = 1000
    snapshot_quiet_seconds: float = 5.0
    index: str = "auto"
    read_only: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = 5050
    auth_token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allow_insecure: bool = False
    log_level: str = "INFO"
    max_result_chars: int = 2000
    retrieval_mode: str = "hybrid"
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        index_path: str | os.PathLike[str] | None = None,
        **flags: Any,
    ) -> Settings:
        """Build settings from CLI flags (`flags`, None meaning "not given") over the environment."""
        env = os.environ if env is None else env
        unknown = set(flags) - set(SETTINGS_TABLE)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, (var, parse, default, _doc) in SETTINGS_TABLE.items():
            flag = flags.get(name)
            if flag is not None:
                option = f"--{name.replace('_', '-')}"
                try:  # a flag goes through the same parser and bounds as its environment variable
                    values[name] = flag if isinstance(flag, bool) else parse(str(flag))
                except ValueError as exc:
                    raise InvalidInput(f"{option} {flag!r} is invalid: {exc}") from exc
                sources[name] = f"flag {option}"
            elif env.get(var, "") != "":
                try:
                    values[name] = parse(env[var])
                except ValueError as exc:
                    raise InvalidInput(f"{var}={env[var]!r} is invalid: {exc}") from exc
                sources[name] = f"environment {var}"
            else:
                values[name], sources[name] = default, "default"
        paths = resolve_paths(index_path=index_path, data_dir=data_dir, env=env)
        sources["data_dir"] = paths.data_dir_source
        sources["index_path"] = paths.index_path_source
        return cls(paths=paths, sources=sources, **values)

    def diagnostics(self) -> list[tuple[str, str, str]]:
        """(setting, value, source) for every setting; the token itself is never shown."""
        rows = self.paths.diagnostics()
        for name in SETTINGS_TABLE:
            value = getattr(self, name)
            if name == "auth_token" and value:
                value = "(set, hidden)"
            if isinstance(value, tuple):
                value = ",".join(value)
            rows.append((name, str(value), self.sources.get(name, "default")))
        return rows
