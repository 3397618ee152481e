"""The MCP tools: thin, typed, documented wrappers over MemoryService.

The service is the single source of truth for bounds and validation; the schemas below only carry the bounds a
client benefits from seeing up front (k, limit, offset, ids, scores), taken from `ltms.validation`.
Tools are sync functions on purpose: the SDK runs them in a worker thread, and the service is thread-safe.

No `from __future__ import annotations` here: the SDK evaluates the tools' annotations, and some of their
descriptions are built from the settings at registration time.
"""

import inspect
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from ltms import __version__, validation
from ltms.config import Settings
from ltms.errors import LTMCError
from ltms.ops.stats import NAMESPACE_LIMIT, limit_namespaces
from ltms.records import Memory, SearchHit, iso_utc
from ltms.server.arguments import RefusingTool, StrictTool
from ltms.service import MemoryService

log = logging.getLogger(__name__)

SERVER_NAME = "ltmc"
# Memory text in one retrieve/list response is shared out among its items, so a response stays small
# even at k=100 (each item still gets at least MIN_ITEM_CHARS). get_memory always returns the whole text.
RESPONSE_TEXT_BUDGET = 50_000
MIN_ITEM_CHARS = 100

INSTRUCTIONS = """\
LTMC is a long-term memory. Store facts, decisions and notes worth remembering with store_memory; find them \
later with retrieve_memory: a question in plain words, or the exact names, ids, numbers and error codes you \
remember, both work (by default it matches keywords and meaning together, in every part of a long memory, and \
shows the passage that matched). Write names capitalised as usual ("What did Mateo say about Lisbon?"): a \
question that names people, places or codes is also matched by its topic among the memories that mention them. \
Long texts are cut short in retrieve_memory and list_memories results \
(truncated: true); get_memory returns a memory whole. Use namespaces \
to keep projects apart and tags to label memories; filters on both apply before the top-k cut."""
READ_ONLY_NOTE = " This server is read-only: memories can be searched and read here, not stored or changed."
READ_ONLY_REFUSAL = (
    "this server is read-only (started with --read-only or LTMC_READ_ONLY=1): memories can be searched and read "
    "here, not stored, changed or deleted"
)
# What `score` and `similarity` mean, for the retrieve_memory description, the Hit schema and the README (figures:
# all-MiniLM-L6-v2 on tests/data/semantic_set.json, 20 paraphrased questions; tests/test_tools_scores.py).
SCORE_MEANING = (
    "ranks the results of this one query, higher first: in hybrid mode (the default) and keyword mode 0..1 "
    "relative to this query's candidates (the best gets close to 1 even when nothing is relevant); in semantic "
    "mode the same as similarity. Compare it within one answer, never across queries"
)
SIMILARITY_MEANING = (
    "cosine similarity between the query and the best-matching passage under the embedding model, -1..1, higher "
    "is closer; comparable across queries. min_score applies to it, in every mode"
)
NO_MATCH_ADVICE = (
    "To tell 'no good match': look at similarity and keyword_rank (null when none of the query's words occur in "
    "the memory), or pass min_score as a floor on similarity. Measured with the default model: right answers to "
    "paraphrased questions had similarity 0.34-0.80, the best memory for a question whose answer was not stored "
    "0.08-0.36; min_score 0.4 kept 16 of 20 right answers and dropped 20 of 20 non-answers"
)

T = TypeVar("T")
# The service's own bounds, published in the schemas too: unbounded, a 5,000-digit integer reached the service and
# failed as an internal error (Python will not print it in the error message).
MAX_ID = 2**63 - 1
MAX_OFFSET = 2**62


# -- output models (they are also the tools' published output schemas) ----------------------------------------


class MemoryView(BaseModel):
    id: int = Field(description="the memory's id: pass it to get_memory, update_memory or delete_memory")
    text: str = Field(description="the text; cut short with a marker when `truncated` is true")
    truncated: bool = Field(False, description="true when `text` was shortened; get_memory returns all of it")
    text_chars: int = Field(description="length of the whole text, in characters")
    namespace: str
    tags: list[str]
    metadata: dict[str, Any]
    metadata_truncated: bool = Field(False, description="true when metadata was too large to include here")
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str = Field(description="ISO 8601, UTC")


class Passage(BaseModel):
    start: int = Field(description="offset of the passage's first character in the memory's text")
    end: int = Field(description="offset just past its last character")
    text: str | None = Field(description="the passage; null when it lies within `text` as shown (use start/end there)")


class Hit(MemoryView):
    score: float = Field(description=SCORE_MEANING)
    similarity: float | None = Field(description=SIMILARITY_MEANING)
    keyword_rank: int | None = Field(
        description="1-based rank of this memory in the keyword leg (full-text search over the query's words); "
        "null when the keyword leg did not find it"
    )
    passage: Passage | None = Field(
        description="the part of the memory that matched best (a long memory is searched in overlapping "
        "passages of about 100 words; a short one is one passage, all of it)"
    )


class RetrieveResult(BaseModel):
    results: list[Hit] = Field(description="closest first")
    count: int


class ListResult(BaseModel):
    items: list[MemoryView] = Field(description="newest first")
    total: int = Field(description="memories matching the filters, over all pages")
    offset: int
    next_offset: int | None = Field(description="pass as `offset` for the next page; null on the last page")


class StoreResponse(BaseModel):
    # store_memory's reply (the service's is ltms.records.StoreResult). No docstring: it would join the published
    # schema, whose title stays what clients have seen.
    model_config = ConfigDict(title="StoreResult")

    id: int
    created: bool = Field(description="false when the same text already existed in the namespace (deduplicated)")
    namespace: str
    created_at: str | None = None


class DeleteResult(BaseModel):
    id: int
    deleted: bool


# -- turning service records into responses ---------------------------------------------------------------------


def item_limit(settings: Settings, count: int) -> int:
    """Characters of text each of `count` items may show."""
    budget = max(RESPONSE_TEXT_BUDGET, settings.max_result_chars)
    return min(settings.max_result_chars, max(MIN_ITEM_CHARS, budget // max(1, count)))


def view(memory: Memory, limit: int | None = None) -> dict[str, Any]:
    """A memory as a response item; with `limit`, long text and large metadata are cut short."""
    item = memory.to_dict()
    del item["content_hash"]
    item.update(truncated=False, text_chars=len(memory.text), metadata_truncated=False)
    if limit is not None:
        if len(memory.text) > limit:
            item["text"] = (
                f"{memory.text[:limit]}… [truncated: {limit} of {len(memory.text)} characters shown; "
                f"call get_memory with id {memory.id} for the whole text]"
            )
            item["truncated"] = True
        if len(json.dumps(memory.metadata, ensure_ascii=False, separators=(",", ":"))) > limit:
            item.update(metadata={}, metadata_truncated=True)
    return item


def hit_view(hit: SearchHit, limit: int) -> Hit:
    """A search hit as a response item. The passage's text is given only when it is part of a memory and lies
    beyond the text shown, and then the two share the item's budget."""
    passage = None
    text_limit = limit
    if hit.passage is not None:
        passage_text = None
        whole = hit.passage.start == 0 and hit.passage.end >= len(hit.memory.text)
        if not whole and hit.passage.end > min(limit, len(hit.memory.text)):
            text_limit = max(MIN_ITEM_CHARS, limit // 2)
            share = max(MIN_ITEM_CHARS, limit - text_limit)
            passage_text = hit.passage.text
            if len(passage_text) > share:
                passage_text = f"{passage_text[:share]}… [truncated]"
        passage = Passage(start=hit.passage.start, end=hit.passage.end, text=passage_text)
    return Hit(
        **view(hit.memory, text_limit),
        score=round(hit.score, 6),
        similarity=None if hit.similarity is None else round(hit.similarity, 6),
        keyword_rank=hit.keyword_rank,
        passage=passage,
    )


def call(tool: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a service call; its errors become ToolErrors with their message, anything else is logged, not leaked."""
    try:
        return fn(*args, **kwargs)
    except LTMCError as exc:
        raise ToolError(str(exc)) from exc
    except Exception:
        log.exception("%s failed unexpectedly", tool)
        raise ToolError(f"{tool} failed because of an internal server error; the server log has the details") from None


# -- parameter types -------------------------------------------------------------------------------------------

NamespaceIn = Annotated[
    str | None,
    Field(
        description="namespace to keep projects or agents apart: 1-64 characters from letters, digits and _ . : @ / -"
    ),
]
TagsFilter = Annotated[list[str] | None, Field(description="only memories carrying ALL of these tags")]
# strict: a JSON integer only. Lax validation turned `true` into id 1 (and "2" into 2), so delete_memory(id=true)
# deleted memory 1.
MemoryId = Annotated[
    int,
    Field(ge=1, le=MAX_ID, strict=True, description="a memory id, as returned by store_memory or retrieve_memory"),
]


# -- the server --------------------------------------------------------------------------------------------------


READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def build_server(
    service: MemoryService,
    settings: Settings,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
) -> MCPServer:
    """An MCPServer whose tools call `service`. With read-only settings the writing tools are still listed (so a
    client learns why they fail) but refuse every call, saying the server is read-only.

    `token_verifier` and `auth` (both or neither) protect the HTTP transports; stdio is never authenticated."""
    return MCPServer(
        name=SERVER_NAME,
        title="LTMC long-term memory",
        version=__version__,
        instructions=INSTRUCTIONS + (READ_ONLY_NOTE if settings.read_only else ""),
        log_level=settings.log_level,
        token_verifier=token_verifier,
        auth=auth,
        tools=[*_reading_tools(service, settings), *_writing_tools(service, settings)],
    )


def _reading_tools(service: MemoryService, settings: Settings) -> list[StrictTool]:
    def retrieve_memory(
        query: Annotated[
            str, Field(description="what to look for: a question in plain words, or exact words, names and ids")
        ],
        k: Annotated[int, Field(ge=1, le=validation.MAX_K, description="how many memories to return at most")] = 5,
        namespace: Annotated[str | None, Field(description="search only this namespace (default: all)")] = None,
        tags: TagsFilter = None,
        since: Annotated[
            str | None,
            Field(
                description="only memories created at or after this ISO 8601 date or date-time "
                "(UTC when no offset is given), e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
            ),
        ] = None,
        until: Annotated[str | None, Field(description="only memories created at or before this ISO 8601 time")] = None,
        min_score: Annotated[
            float | None,
            Field(
                ge=-1.0,
                le=1.0,
                allow_inf_nan=False,
                description="leave out results whose similarity is below this (-1..1; see similarity)",
            ),
        ] = None,
        mode: Annotated[
            Literal["hybrid", "semantic", "keyword"] | None,
            Field(
                description="hybrid: keywords and meaning fused (the default, LTMC_RETRIEVAL_MODE); semantic: by "
                "meaning only; keyword: full-text search only"
            ),
        ] = None,
    ) -> RetrieveResult:
        """Find the stored memories that best match `query`, best first, each with the passage that matched.

        Filters (namespace, tags, since/until) apply before the top-k cut. Long texts are shortened
        (truncated: true); call get_memory with the id for the whole text."""
        hits = call(
            "retrieve_memory",
            service.retrieve,
            query,
            k=k,
            namespace=namespace,
            tags=tags,
            since=since,
            until=until,
            min_score=min_score,
            mode=mode,
        )
        limit = item_limit(settings, len(hits))
        results = [hit_view(hit, limit) for hit in hits]
        return RetrieveResult(results=results, count=len(results))

    def get_memory(id: MemoryId) -> MemoryView:
        """Return one memory in full: its whole text, tags, metadata and timestamps."""
        return MemoryView(**view(call("get_memory", service.get, id)))

    def list_memories(
        namespace: Annotated[str | None, Field(description="list only this namespace (default: all)")] = None,
        tags: TagsFilter = None,
        limit: Annotated[int, Field(ge=1, le=validation.MAX_PAGE, description="page size")] = 20,
        offset: Annotated[
            int, Field(ge=0, le=MAX_OFFSET, description="how many memories to skip (from next_offset)")
        ] = 0,
    ) -> ListResult:
        """List memories newest first, a page at a time. Long texts are shortened (truncated: true)."""
        page = call("list_memories", service.list, namespace=namespace, tags=tags, limit=limit, offset=offset)
        per_item = item_limit(settings, len(page.items))
        return ListResult(
            items=[MemoryView(**view(m, per_item)) for m in page.items],
            total=page.total,
            offset=page.offset,
            next_offset=page.next_offset,
        )

    def memory_stats() -> dict[str, Any]:
        stats = limit_namespaces(call("memory_stats", service.stats))
        stats["read_only"] = settings.read_only
        stats["version"] = __version__
        return stats

    retrieve_doc = (
        f"{inspect.cleandoc(retrieve_memory.__doc__ or '')}\n\nscore: {SCORE_MEANING}. similarity: "
        f"{SIMILARITY_MEANING}. {NO_MATCH_ADVICE}."
    )
    stats_doc = (
        "Memory counts, the embedding model, and the state of the search index and its snapshot. `namespaces` maps "
        f"the {NAMESPACE_LIMIT} largest namespaces to their memory counts, largest first; `namespace_count` is how "
        "many there are and `namespaces_omitted` how many were left out."
    )
    return [
        StrictTool.build(retrieve_memory, "Retrieve memories by meaning", READ, retrieve_doc),
        StrictTool.build(get_memory, "Get one memory in full", READ),
        StrictTool.build(list_memories, "List memories", READ),
        StrictTool.build(memory_stats, "Memory statistics", READ, stats_doc),
    ]


def _writing_tools(service: MemoryService, settings: Settings) -> list[StrictTool]:
    """store, update and delete; with read-only settings, listed tools that refuse every call."""

    def store_memory(
        text: Annotated[
            str,
            Field(
                description=f"the memory: a fact, decision or note; non-empty, at most "
                f"{settings.max_text_bytes} bytes of UTF-8"
            ),
        ],
        tags: Annotated[
            list[str] | None,
            Field(
                description=f"labels to filter by later; at most {validation.MAX_TAGS} tags of up to "
                f"{validation.MAX_TAG_CHARS} characters"
            ),
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(
                description=f"any JSON object kept with the memory (source, author, ...); at most "
                f"{settings.max_metadata_bytes} bytes as JSON"
            ),
        ] = None,
        namespace: NamespaceIn = None,
    ) -> StoreResponse:
        """Store a memory so it can be retrieved later by meaning.

        Storing the same text again in the same namespace returns the existing id with created: false."""
        result = call("store_memory", service.store, text, tags=tags, metadata=metadata, namespace=namespace)
        try:
            memory = service.get(result.id)
        except LTMCError:  # deleted by someone else in between: the store itself succeeded
            return StoreResponse(id=result.id, created=result.created, namespace=validation.namespace(namespace))
        return StoreResponse(
            id=result.id, created=result.created, namespace=memory.namespace, created_at=iso_utc(memory.created_at)
        )

    def update_memory(
        id: MemoryId,
        text: Annotated[str | None, Field(description="new text (re-embedded); omit to keep the text")] = None,
        tags: Annotated[list[str] | None, Field(description="new tags, replacing the old; omit to keep")] = None,
        metadata: Annotated[
            dict[str, Any] | None, Field(description="new metadata, replacing the old; omit to keep")
        ] = None,
    ) -> MemoryView:
        """Change a memory's text, tags or metadata; what is omitted stays as it was. Returns the memory."""
        memory = call("update_memory", service.update, id, text=text, tags=tags, metadata=metadata)
        return MemoryView(**view(memory, settings.max_result_chars))

    def delete_memory(id: MemoryId) -> DeleteResult:
        """Delete a memory for good. It is no longer returned by any tool."""
        call("delete_memory", service.delete, id)
        return DeleteResult(id=id, deleted=True)

    # store is idempotent: the same text in the same namespace is deduplicated to the same id.
    writes: list[tuple[Callable[..., Any], str, bool]] = [
        (store_memory, "Store a memory", False),
        (update_memory, "Update a memory", True),
        (delete_memory, "Delete a memory", True),
    ]
    tools: list[StrictTool] = []
    for fn, title, destructive in writes:
        annotations = ToolAnnotations(
            read_only_hint=False, destructive_hint=destructive, idempotent_hint=True, open_world_hint=False
        )
        if settings.read_only:
            doc = f"Unavailable: {READ_ONLY_REFUSAL}. {inspect.cleandoc(fn.__doc__ or '')}"
            refusing = RefusingTool.build(fn, title, annotations, doc)
            refusing.refusal = READ_ONLY_REFUSAL
            tools.append(refusing)
        else:
            tools.append(StrictTool.build(fn, title, annotations))
    return tools
