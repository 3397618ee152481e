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

    def __init__(self, stored: str, configured: str, db_path: object) -> None:
        super().__init__(
            f"the memories in {db_path} were embedded with model {stored!r}, but the configured model is "
            f"{configured!r}. Either configure {stored!r} again (LTMC_EMBEDDER), or re-embed every memory "
            f"with the new model: ltmc reindex --reembed"
        )
        self.stored = stored
        self.configured = configured
