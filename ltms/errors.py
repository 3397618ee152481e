"""The exceptions the memory service raises. Transports turn them into protocol errors."""

from __future__ import annotations


class LTMCError(Exception):
    """Base class: every message is meant to be read by a person and acted on."""


class InvalidInput(LTMCError, ValueError):
    """A request that breaks a documented bound or type. Nothing was changed."""


class NotFound(LTMCError, LookupError):
    """No memory has the requested id."""


class ReadOnlyError(LTMCError):
    """A write was attempted on a server started read-only."""


class StorageError(LTMCError, OSError):
    """A file or directory could not be created, written or read. Always names the path and the reason."""

    def __init__(self, action: str, path: object, reason: object) -> None:
        super().__init__(f"cannot {action} {path}: {reason}")
        self.action = action
        self.path = path
        self.reason = reason


class EmbedderUnavailable(LTMCError, RuntimeError):
    """The configured embedding model's files are missing or unusable."""


class ModelMismatch(LTMCError):
    """The data directory was built with another embedding model than the one configured."""

    def __init__(self, stored: str, configured: str, db_path: object, setting: str | None = None) -> None:
        """`setting`: the LTMC_EMBEDDER value that gives the stored model, if one does."""
        found = (
            f"the memories in {db_path} were embedded with model {stored!r}, but the configured model is {configured!r}"
        )
        if setting:
            message = (
                f"{found}. Either configure {stored!r} again (LTMC_EMBEDDER={setting} or --embedder {setting}), "
                f"or re-embed every memory with the configured model: ltmc reindex --reembed"
            )
        else:
            message = (
                f"{found}, and no LTMC_EMBEDDER value gives {stored!r}. Re-embed every memory with the configured "
                f"model: ltmc reindex --reembed"
            )
        super().__init__(message)
        self.stored = stored
        self.configured = configured
        self.setting = setting
