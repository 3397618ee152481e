"""Check: can the configured embedder be constructed (its files located; the weights are not loaded)."""

from __future__ import annotations

from ltms.config import Settings
from ltms.embeddings import make_embedder
from ltms.errors import LTMCError
from ltms.ops.doctor.report import OK, PROBLEM, Check, Problem


def check_embedder(settings: Settings) -> tuple[Check, list[Problem], tuple[str, int] | None]:
    """The check, its problems, and the configured (model, dimension) when it can be used."""
    try:
        embedder = make_embedder(settings.embedder)  # construction only locates files; weights load lazily
        name, dimension = str(embedder.name), int(embedder.dimension)
    except LTMCError as exc:  # whatever stops it here stops the server too
        message = f"the configured embedder {settings.embedder!r} cannot be used: {exc}"
        problem = Problem(
            "embedder_unavailable",
            message,
            "install the model, or configure another LTMC_EMBEDDER",
            None,
            blocks_rebuild=True,
        )
        return Check("embedder", PROBLEM, message), [problem], None
    return (
        Check(
            "embedder",
            OK,
            f"{name}, {dimension} dimensions (model not loaded by doctor)",
            {"model": name, "dimension": dimension},
        ),
        [],
        (name, dimension),
    )
