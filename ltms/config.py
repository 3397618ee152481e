"""One Settings object: environment variables and CLI flags, validated, with defaults.

Precedence for every setting: a CLI flag, then the environment variable, then the default. `sources`
records which one won, for `ltmc doctor` and the start-up log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar, cast

from ltms.embeddings import EMBEDDER_CHOICES
from ltms.errors import InvalidInput
from ltms.storage.pg_url import redact_url
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
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number between {low} and {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number greater than 0") from None
    if not value > 0 or value == float("inf"):
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


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _log_level(raw: str) -> LogLevel:
    return cast(LogLevel, _choice("debug", "info", "warning", "error")(raw).upper())


T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """How one setting is read: its environment variable, parser (type and bounds), CLI flag and documentation.

    `name` and `default` come from the Settings field that declares it, so nothing is written twice."""

    env: str
    parse: Callable[[str], Any]
    doc: str
    flag: str | None = None  # the real `ltmc` option, named in errors and sources
    name: str = ""
    default: Any = None

    @property
    def shown_default(self) -> str:
        """The default as --help and the README's configuration table show it."""
        return show(self.default)


def show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value) or "empty"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower()


def setting(env: str, parse: Callable[[str], T], default: T, doc: str, flag: str | None = None) -> T:
    """Declare a Settings field: its default plus how it is read (typed as the default, for the type checker)."""
    result: T = field(default=default, metadata={"setting": Setting(env, parse, doc, flag)})
    return result


MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Every setting, each declared once: environment variable, parser with its bounds, default, flag, doc."""

    paths: ResolvedPaths
    embedder: str = setting(
        "LTMC_EMBEDDER",
        _choice(*EMBEDDER_CHOICES),
        "minilm",
        "embedding model: minilm (all-MiniLM-L6-v2, offline) or hash (tests only)",
        "--embedder",
    )
    max_text_bytes: int = setting(
        "LTMC_MAX_TEXT_BYTES", _int_in(1, 10 * MiB), 32 * 1024, "largest memory text, in UTF-8 bytes"
    )
    max_metadata_bytes: int = setting(
        "LTMC_MAX_METADATA_BYTES", _int_in(2, MiB), 16 * 1024, "largest metadata object, as compact JSON"
    )
    snapshot_every: int = setting(
        "LTMC_SNAPSHOT_EVERY", _int_in(1, 10_000_000), 1000, "save the index snapshot after this many changes"
    )
    snapshot_quiet_seconds: float = setting(
        "LTMC_SNAPSHOT_QUIET_SECONDS", _positive_float, 5.0, "...or after this many seconds without a change"
    )
    index: str = setting(
        "LTMC_INDEX",
        _choice("auto", "exact", "hnsw"),
        "auto",
        "vector index: auto (exact search, approximate HNSW from 50k chunks), exact or hnsw",
    )
    read_only: bool = setting("LTMC_READ_ONLY", _bool, False, "refuse every write", "--read-only")
    http_host: str = setting("LTMC_HTTP_HOST", str, "127.0.0.1", "HTTP listen address", "--host")
    http_port: int = setting("LTMC_HTTP_PORT", _int_in(0, 65535), 5050, "HTTP port; 0 picks a free one", "--port")
    auth_token: str | None = setting("LTMC_AUTH_TOKEN", str, None, "bearer token required on /mcp and /sse when set")
    allowed_hosts: tuple[str, ...] = setting(
        "LTMC_ALLOWED_HOSTS",
        _names,
        (),
        "extra Host names the HTTP server accepts, comma-separated, name or name:port (e.g. behind a reverse proxy)",
    )
    allowed_origins: tuple[str, ...] = setting(
        "LTMC_ALLOWED_ORIGINS",
        _names,
        (),
        "extra browser Origins the HTTP server accepts, exactly, comma-separated (e.g. http://localhost:6274)",
    )
    http_max_connections: int = setting(
        "LTMC_HTTP_MAX_CONNECTIONS",
        _int_in(8, 100_000),
        500,
        "open HTTP connections at most; at the cap the oldest one still sending its headers is closed",
    )
    http_header_timeout: float = setting(
        "LTMC_HTTP_HEADER_TIMEOUT",
        _positive_float,
        10.0,
        "seconds a connection gets to send its request headers before it is closed",
    )
    session_idle_seconds: float = setting(
        "LTMC_SESSION_IDLE_SECONDS",
        _positive_float,
        300.0,
        "a streamable-HTTP session with no request in flight and no open stream ends after this many seconds",
    )
    max_sessions: int = setting(
        "LTMC_MAX_SESSIONS",
        _int_in(1, 1_000_000),
        1000,
        "open streamable-HTTP sessions at most; at the cap the least recently used idle one is ended",
    )
    max_sessions_per_client: int = setting(
        "LTMC_MAX_SESSIONS_PER_CLIENT",
        _int_in(1, 1_000_000),
        100,
        "open sessions per client address at most; over it that client's least recently used idle one is ended",
    )
    allow_insecure: bool = setting(
        "LTMC_ALLOW_INSECURE", _bool, False, "allow a non-loopback host without a token", "--allow-insecure"
    )
    log_level: LogLevel = setting(  # noqa: RUF009 - setting() returns an immutable default, like the others
        "LTMC_LOG_LEVEL", _log_level, "INFO", "debug, info, warning or error (logs go to stderr)", "--log-level"
    )
    backend: str = setting(
        "LTMC_BACKEND", _choice("sqlite", "postgres"), "sqlite", "storage: sqlite (embedded, one machine) or postgres"
    )
    database_url: str | None = setting(
        "LTMC_DATABASE_URL",
        str,  # never validated here: an error message would echo the password; the backend reports it redacted
        None,
        "PostgreSQL URL for LTMC_BACKEND=postgres, e.g. postgresql://ltmc:PASSWORD@db:5432/ltmc",
    )
    database_pool_size: int = setting(
        "LTMC_DATABASE_POOL_SIZE", _int_in(1, 1000), 10, "most PostgreSQL connections one LTMC process opens"
    )
    max_result_chars: int = setting(
        "LTMC_MAX_RESULT_CHARS",
        _int_in(100, MiB),
        2000,
        "longest text returned per memory by retrieve/list before truncation",
    )
    retrieval_mode: str = setting(
        "LTMC_RETRIEVAL_MODE",
        _choice("hybrid", "semantic", "keyword"),
        "hybrid",
        "default retrieve_memory mode: hybrid (keywords and meaning fused), semantic or keyword",
    )
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        index_path: str | os.PathLike[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        **flags: Any,
    ) -> Settings:
        """Build settings from CLI flags (`flags` by setting name, None meaning "not given") over the environment
        over the defaults. `defaults` replaces declared defaults (operator commands log only warnings)."""
        env = os.environ if env is None else env
        defaults = defaults or {}
        for name in (*flags, *defaults):
            if name not in SETTINGS or (name in flags and SETTINGS[name].flag is None):
                raise TypeError(f"{name!r} is not a setting with a command-line flag")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, spec in SETTINGS.items():
            flag = flags.get(name)
            if flag is not None:
                try:  # a flag goes through the same parser and bounds as its environment variable
                    values[name] = flag if isinstance(flag, bool) else spec.parse(str(flag))
                except ValueError as exc:
                    raise InvalidInput(f"{spec.flag} {str(flag)!r} is invalid: {exc}") from exc
                sources[name] = f"flag {spec.flag}"
            elif env.get(spec.env, "") != "":
                try:
                    values[name] = spec.parse(env[spec.env])
                except ValueError as exc:
                    raise InvalidInput(f"{spec.env}={env[spec.env]!r} is invalid: {exc}") from exc
                sources[name] = f"environment {spec.env}"
            else:
                values[name], sources[name] = defaults.get(name, spec.default), "default"
        paths = resolve_paths(index_path=index_path, data_dir=data_dir, env=env)
        sources["data_dir"] = paths.data_dir_source
        sources["index_path"] = paths.index_path_source
        return cls(paths=paths, sources=sources, **values)

    def diagnostics(self) -> list[tuple[str, str, str]]:
        """(setting, value, source) for every setting; the token itself is never shown."""
        rows = self.paths.diagnostics()
        for name in SETTINGS:
            value = getattr(self, name)
            if name == "auth_token" and value:
                value = "(set, hidden)"
            if name == "database_url" and value:
                value = redact_url(value)
            if isinstance(value, tuple):
                value = ",".join(value)
            rows.append((name, str(value), self.sources.get(name, "default")))
        return rows


# Every declared setting by name, with its name and default filled in from the field that declares it.
SETTINGS: dict[str, Setting] = {
    f.name: replace(f.metadata["setting"], name=f.name, default=f.default)
    for f in fields(Settings)
    if "setting" in f.metadata
}
