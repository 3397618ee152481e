"""Retrieval through the real parts: long memories found by any part of their text, the FTS5 keyword leg with
any user text, updates and deletes in both legs, and another process's stores found at once.

Every test stores through MemoryService into a real SQLite file with a real FAISS index. The hashing embedder is
used where meaning is not the point; the long-memory tests use the default model (all-MiniLM-L6-v2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ltms.embeddings.minilm import MiniLMEmbedder
from ltms.errors import InvalidInput
from ltms.retrieval import keywords
from ltms.retrieval.fusion import fuse
from ltms.retrieval.keywords import ROW_BUDGET, query_terms, rare_terms
from ltms.service import MODES, MemoryService
from ltms.storage.base import Filter, KeywordHit, VectorHit
from tests.helpers import REPO, child_env, hash_settings, run_python

DATASET = REPO / "bench" / "retrieval" / "dataset.json"


def ids_of(hits: list) -> list[int]:
    return [hit.memory.id for hit in hits]


# -- a fact deep inside a 30 KiB memory (the default model) ---------------------------------------------------------

FACT = (
    "The staging cluster's break-glass admin password rotates every nineteen days, and the current one is kept "
    "in the vault under ops/staging/breakglass."
)
FACT_QUESTION = "How often does the staging admin password change, and where is it stored?"
FACT_AT = 20_000


def documents_text(size: int) -> str:
    """At least `size` characters of the retrieval benchmark's documents: natural text about other things."""
    docs = [m["text"] for m in json.loads(DATASET.read_text())["memories"] if m["source"] == "document"]
    text = ""
    for doc in docs:
        text += doc + "\n\n"
        if len(text) >= size:
            return text
    raise AssertionError(f"the benchmark's documents hold fewer than {size} characters")


def long_text_with_fact() -> tuple[str, int]:
    """30 KiB of documents with FACT planted at the first sentence boundary from character 20,000. Returns the
    text and where FACT starts."""
    filler = documents_text(40_000)
    boundary = filler.index(". ", FACT_AT) + 2
    text = filler[:boundary] + FACT + " " + filler[boundary:]
    text = text.encode("utf-8")[: 30 * 1024].decode("utf-8", "ignore")
    return text[: text.rfind(" ")], boundary


DISTRACTORS = (
    "Remember to change the Wi-Fi password at the cabin before the guests arrive.",
    "The production database credentials are managed by the platform team.",
    "My laptop asks for a new login password every three months, which is annoying.",
    "The staging cluster was resized to six nodes last week.",
    "Vault tokens for the CI runners expire after an hour.",
    "We keep the spare house keys in the kitchen drawer.",
)


@pytest.fixture(scope="module")
def long_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemoryService, int, int]]:
    """A store holding the 30 KiB memory among short, partly related ones: (service, its id, where FACT starts)."""
    text, fact_start = long_text_with_fact()
    assert len(text.encode("utf-8")) > 29 * 1024 and fact_start >= FACT_AT
    service = MemoryService(hash_settings(tmp_path_factory.mktemp("long") / "data"), embedder=MiniLMEmbedder())
    service.store_many([(d, None, None, None) for d in DISTRACTORS])
    memory_id = service.store(text).id
    yield service, memory_id, fact_start
    service.close()


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_a_fact_at_character_20000_of_a_30_kib_memory_is_retrieved_first(
    long_store: tuple[MemoryService, int, int], mode: str
) -> None:
    service, memory_id, _ = long_store
    hits = service.retrieve(FACT_QUESTION, k=3, mode=mode)
    assert ids_of(hits)[0] == memory_id, [hit.memory.text[:60] for hit in hits]


def test_the_vector_leg_alone_finds_the_deep_fact_by_its_chunk(long_store: tuple[MemoryService, int, int]) -> None:
    """Semantic mode alone ranks it among the first three, not first: the fact (about 35 tokens) shares its
    128-token window with unrelated text, which pulls the cosine down to about that of the short near-miss
    DISTRACTORS (measured: 0.45 against 0.46; the fact alone scores 0.78). A vector of the memory's first window,
    all that release 0.1 kept, is nowhere near."""
    service, memory_id, _ = long_store
    hits = service.retrieve(FACT_QUESTION, k=3, mode="semantic")
    assert memory_id in ids_of(hits), [hit.memory.text[:60] for hit in hits]
    hit = next(hit for hit in hits if hit.memory.id == memory_id)
    first_window = service.chunker.spans(hit.memory.text)[0]
    head = service.embedder.embed_documents([hit.memory.text[first_window.start : first_window.end]])[0]
    head_similarity = float(head @ service.embedder.embed_query(FACT_QUESTION))
    assert hit.similarity is not None and hit.similarity > head_similarity + 0.2, (hit.similarity, head_similarity)


@pytest.mark.parametrize("mode", MODES)
def test_the_passage_of_a_long_memorys_hit_covers_the_planted_fact(
    long_store: tuple[MemoryService, int, int], mode: str
) -> None:
    service, memory_id, fact_start = long_store
    hit = next(hit for hit in service.retrieve(FACT_QUESTION, k=3, mode=mode) if hit.memory.id == memory_id)
    assert hit.passage is not None
    assert hit.passage.start <= fact_start and hit.passage.end >= fact_start + len(FACT), (
        hit.passage.start,
        hit.passage.end,
        fact_start,
    )
    assert hit.passage.text == hit.memory.text[hit.passage.start : hit.passage.end]
    assert len(hit.passage.text) < len(hit.memory.text) // 10  # an excerpt, not the whole memory


# -- exact identifiers among 1,000 look-alikes (hashing embedder) ---------------------------------------------------

TARGETS = {
    "ERR-4711": "ERR-4711: raised by the billing exporter when the currency table is older than a day.",
    "PROJ-1234": "PROJ-1234 (open): checkout page times out when the cart has more than 50 items.",
}


def lookalikes() -> list[str]:
    """1,000 notes of the same two shapes whose identifiers differ from the targets: the nearest ones (a digit
    changed, two swapped) and then every ninth number."""
    error = "ERR-{}: raised by the billing exporter when the currency table is older than a day."
    ticket = "PROJ-{} (open): checkout page times out when the cart has more than 50 items."
    texts = [error.format(n) for n in (4717, 7411, 4771, 4712, 4117)]
    texts += [ticket.format(n) for n in (1243, 2134, 1235, 1334, 4321)]
    for n in range(1000, 10000, 9):
        for text in (error.format(n), ticket.format(n)):
            if len(texts) < 1000 and n not in (4711, 1234) and text not in texts:
                texts.append(text)
    assert len(set(texts)) == 1000
    return texts


@pytest.fixture(scope="module")
def identifier_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemoryService, dict[str, int]]]:
    service = MemoryService(hash_settings(tmp_path_factory.mktemp("ids") / "data"))
    texts = lookalikes()
    service.store_many([(t, None, None, None) for t in texts[:500]])
    ids = {key: service.store(text).id for key, text in TARGETS.items()}
    service.store_many([(t, None, None, None) for t in texts[500:]])
    yield service, ids
    service.close()


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
@pytest.mark.parametrize(
    ("identifier", "query"),
    [
        ("ERR-4711", "ERR-4711"),
        ("ERR-4711", "What does ERR-4711 mean?"),
        ("PROJ-1234", "PROJ-1234"),
        ("PROJ-1234", "who is working on proj-1234?"),
    ],
)
def test_an_exact_identifier_ranks_its_memory_first_among_1000_lookalikes(
    identifier_store: tuple[MemoryService, dict[str, int]], identifier: str, query: str, mode: str
) -> None:
    service, ids = identifier_store
    hits = service.retrieve(query, k=5, mode=mode)
    assert ids_of(hits)[0] == ids[identifier], [hit.memory.text[:12] for hit in hits]
    assert hits[0].keyword_rank == 1


# -- FTS query syntax in user text ----------------------------------------------------------------------------------

SYNTAX_QUERIES = [
    '"alpha',
    'alpha"beta',
    '""alpha""',
    "alpha AND",
    "AND alpha",
    "OR alpha",
    "alpha OR",
    "NOT alpha",
    "alpha NOT",
    "alpha AND NOT OR beta",
    "NEAR(alpha beta)",
    "NEAR(alpha beta, 2)",
    "alpha NEAR/2 beta",
    "alpha*",
    "-alpha",
    "alpha -beta",
    "text:alpha",
    "memory_fts:alpha",
    "{text}: alpha",
    "(alpha",
    "alpha)",
    "(alpha OR beta) AND (gamma",
    "^alpha",
    "alpha^",
    "+alpha",
    "alpha's",
    "[alpha]",
    "alpha; DROP TABLE memories; --",
    "alpha \\ beta",
    "alpha\tbeta\nnear",
    "ALPHA",
    "Alpha, beta & gamma!",
]
ONLY_SYNTAX = ['"', '""', "*", "-", ":", "()", "^", "(", ")", "NEAR", "AND", "OR NOT", "- * : ^ ( )", "'"]


@pytest.fixture(scope="module")
def syntax_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemoryService, int]]:
    service = MemoryService(hash_settings(tmp_path_factory.mktemp("syntax") / "data"))
    alpha = service.store("The alpha release ships before the beta, and gamma waits for both.").id
    service.store_many(
        [
            ("Meet me NEAR the river AND bring snacks OR drinks, NOT both.", None, None, None),
            ('A "quoted" word, a (parenthesis) and a star*.', None, None, None),
            ("Deploy notes: column:value pairs, ^caret and -minus signs.", None, None, None),
        ]
    )
    yield service, alpha
    service.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", SYNTAX_QUERIES)
def test_fts_syntax_in_a_query_is_plain_text(syntax_store: tuple[MemoryService, int], query: str, mode: str) -> None:
    service, alpha = syntax_store
    hits = service.retrieve(query, k=4, mode=mode)
    assert alpha in ids_of(hits)
    if mode != "semantic":
        assert next(hit for hit in hits if hit.memory.id == alpha).keyword_rank is not None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ONLY_SYNTAX)
def test_a_query_of_only_syntax_is_answered(syntax_store: tuple[MemoryService, int], query: str, mode: str) -> None:
    service, _ = syntax_store
    hits = service.retrieve(query, k=4, mode=mode)
    assert len(hits) <= 4
    if mode == "semantic":
        assert hits  # the vector leg always has nearest neighbours


@pytest.mark.parametrize("mode", MODES)
def test_a_lone_surrogate_in_a_query_is_invalid_input(syntax_store: tuple[MemoryService, int], mode: str) -> None:
    service, _ = syntax_store
    with pytest.raises(InvalidInput) as caught:
        service.retrieve("alpha \ud800 beta", mode=mode)
    message = str(caught.value)
    assert "surrogate" in message and "\n" not in message


def test_the_keyword_leg_gets_words_only() -> None:
    """The storage seam never sees query syntax: whatever the user typed, the keyword leg gets plain words."""
    for query in [*SYNTAX_QUERIES, *ONLY_SYNTAX]:
        for term in query_terms(query):
            assert term.isalnum() or "_" in term, (query, term)


# -- update and delete, in both legs (hashing embedder) -------------------------------------------------------------

OLD = "The zebra finch in the aviary sings at dawn next to the old quarry."
NEW = "A capybara naps in the afternoon sun beside the lily pond."
NEIGHBOURS = (
    "The zebra crossing near the school was repainted in the spring.",
    "Finches and sparrows share the feeder in the garden.",
    "The quarry lake is closed to swimmers this summer.",
    "Dawn chorus recordings from the aviary are on the shared drive.",
    "The pond needs a new pump before the lilies bloom.",
)


def similarity_of(service: MemoryService, query: str, memory_id: int) -> float | None:
    """The similarity of `memory_id` for `query` in the vector leg (None: not among all memories' hits)."""
    count = service.stats()["memories"]
    for hit in service.retrieve(query, k=count, mode="semantic"):
        if hit.memory.id == memory_id:
            return hit.similarity
    return None


def assert_new_text_only(service: MemoryService, memory_id: int) -> None:
    assert memory_id not in ids_of(service.retrieve("zebra finch aviary quarry", k=10, mode="keyword"))
    old_similarity = similarity_of(service, OLD, memory_id)
    assert old_similarity is not None and old_similarity < 0.5, old_similarity
    assert ids_of(service.retrieve(OLD, k=1, mode="semantic")) != [memory_id]
    keyword = service.retrieve("capybara lily pond", k=3, mode="keyword")
    assert ids_of(keyword)[0] == memory_id
    semantic = service.retrieve(NEW, k=1, mode="semantic")
    assert ids_of(semantic) == [memory_id] and semantic[0].similarity > 0.99
    hybrid = service.retrieve(NEW, k=3)
    assert ids_of(hybrid)[0] == memory_id and hybrid[0].keyword_rank == 1 and hybrid[0].similarity > 0.99


def test_after_an_update_the_old_text_matches_in_neither_leg_and_the_new_one_in_both(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir)) as service:
        service.store_many([(t, None, None, None) for t in NEIGHBOURS])
        memory_id = service.store(OLD).id
        assert ids_of(service.retrieve("zebra finch aviary quarry", k=1, mode="keyword")) == [memory_id]
        assert ids_of(service.retrieve(OLD, k=1, mode="semantic")) == [memory_id]
        service.update(memory_id, text=NEW)
        assert_new_text_only(service, memory_id)
    with MemoryService(hash_settings(data_dir)) as reopened:  # the saved index and the FTS table agree
        assert_new_text_only(reopened, memory_id)


def test_a_deleted_memory_is_gone_from_both_legs(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir)) as service:
        service.store_many([(t, None, None, None) for t in NEIGHBOURS])
        memory_id = service.store(OLD).id
        vectors_before = service.stats()["index"]["vectors"]
        service.delete(memory_id)
        vector = service.embedder.embed_query(OLD)
        # the legs themselves, below the service (which would also hide a hit whose row is gone)
        assert memory_id not in [h.memory_id for h in service.storage.vector_search(vector, 10, Filter())]
        terms = query_terms("zebra finch aviary quarry")
        assert memory_id not in [h.memory_id for h in service.storage.keyword_search(terms, 10, Filter())]
        assert service.stats()["index"]["vectors"] == vectors_before - 1
        for mode in MODES:
            assert memory_id not in ids_of(service.retrieve(OLD, k=10, mode=mode))
    with MemoryService(hash_settings(data_dir)) as reopened:
        for mode in MODES:
            assert memory_id not in ids_of(reopened.retrieve(OLD, k=10, mode=mode))


# -- another process ------------------------------------------------------------------------------------------------

CHILD_STORE = """
from ltms.config import Settings
from ltms.service import MemoryService
with MemoryService(Settings.load(), background_saves=False) as service:
    print(service.store({short!r}).id)
    print(service.store({long!r}).id)
"""


def test_a_second_processs_store_is_found_by_both_legs_at_once(data_dir: Path) -> None:
    short = "The harpsichord tuner visits the conservatory every second Thursday."
    deep = "Our quokka sanctuary permit is number QK-5521."
    paragraph = (
        f"{deep} The quokka enclosure gets a new shade sail in October. Quokka keepers rotate weekly, and the "
        "sanctuary vet checks every quokka's teeth at the start of each month."
    )
    filler = documents_text(12_000)
    long = filler[:6000] + "\n\n" + paragraph + "\n\n" + filler[6000:12000]
    with MemoryService(hash_settings(data_dir)) as service:
        service.store_many([(t, None, None, None) for t in NEIGHBOURS])
        assert service.retrieve(short, k=1)  # this process's index is loaded and in use
        printed = run_python(CHILD_STORE.format(short=short, long=long), child_env(data_dir)).stdout.split()
        short_id, long_id = int(printed[0]), int(printed[1])
        keyword = service.retrieve("harpsichord conservatory", k=1, mode="keyword")
        assert ids_of(keyword) == [short_id]
        semantic = service.retrieve(short, k=1, mode="semantic")
        assert ids_of(semantic) == [short_id] and semantic[0].similarity > 0.99
        hybrid = service.retrieve(short, k=1)
        assert ids_of(hybrid) == [short_id] and hybrid[0].keyword_rank == 1 and hybrid[0].similarity > 0.99
        for mode in MODES:  # the long one, by a sentence deep inside it: its chunks came with it
            hits = service.retrieve(deep, k=1, mode=mode)
            assert ids_of(hits) == [long_id], mode
            passage = hits[0].passage
            assert passage is not None and deep in passage.text, mode


# -- the benchmark's labelled set ------------------------------------------------------------------------------------


def test_the_shipped_labelled_set_is_what_its_generator_builds() -> None:
    """bench/retrieval/dataset.json is generated (fixed seed), never edited by hand: a template change must come
    with the regenerated file, and the file with its templates."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "retrieval" / "make_dataset.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# -- cost: what a search reads ---------------------------------------------------------------------------------------


def test_an_unfiltered_retrieve_reads_rows_by_key_and_never_scans_a_table(data_dir: Path) -> None:
    """Every statement a retrieve runs, in every mode, finds its rows through an index. (The chunks' spans were
    once selected by their computed key, `(memory_id << 16) | ordinal`, which no index serves: every search read
    every chunk, 83 ms of a 110 ms retrieve at 100k memories, bench/bench_retrieval.py.)"""
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store_many([(t, None, None, None) for t in NEIGHBOURS])
        service.store(documents_text(3000))  # several chunks
        # Every read goes through Database._query, whichever thread runs it (hybrid's keyword and names legs run
        # on the service's leg threads): recorded there. Warmed first: FTS5 reads its small config table once per
        # connection, by a scan.
        service.retrieve("warm", k=1, mode="hybrid")
        db = service.storage.db  # type: ignore[attr-defined]
        statements: list[tuple[str, tuple]] = []
        query = db._query

        def recorded(sql: str, params: Sequence[object] = ()) -> list:
            statements.append((sql, tuple(params)))
            return query(sql, params)

        db._query = recorded
        try:
            for mode in MODES:
                service.retrieve("zebra pond quarry handbook", k=5, mode=mode)
            service.retrieve("what did Zebra say about the pond?", k=5, mode="hybrid")  # the names leg too
        finally:
            del db._query
        queries = [(sql, params) for sql, params in statements if sql.lstrip().upper().startswith("SELECT")]
        assert any("chunks" in sql for sql, _ in queries) and any("memory_fts" in sql for sql, _ in queries)
        assert any('"Zebra"' in params for _, params in queries)  # the names leg's mention filter ran
        scans = [
            (sql[:100], row[3])
            for sql, params in queries
            for row in db._query("EXPLAIN QUERY PLAN " + sql, params)
            # a virtual table (FTS5) and a subquery's own rows (`count(*)` over a LIMITed MATCH) are not tables
            if row[3].startswith("SCAN") and "VIRTUAL TABLE" not in row[3] and not row[3].startswith("SCAN (subquery")
        ]
        assert scans == []


# -- cost: what the keyword leg ranks ---------------------------------------------------------------------------------


def test_rare_terms_keep_the_rarest_while_their_matches_fit_the_budget() -> None:
    frequencies = {"maya": 8688, "tessellate": 149, "games": 378, "accept": 383, "job": 13053, "unknown": 0}
    assert rare_terms(frequencies, budget=1000) == ["tessellate", "games", "accept"]  # the query's order
    assert rare_terms(frequencies, budget=100) == ["tessellate"]  # the rarest always, even over the budget
    assert rare_terms({"maya": 8688, "job": 13053}, budget=1000, too_common=10_000) == ["maya"]
    assert rare_terms({"maya": 8688, "job": 13053}, budget=1000, too_common=5000) == []  # no word singles one out
    assert rare_terms({"unknown": 0}) == [] and rare_terms({}) == []


@pytest.fixture(scope="module")
def common_word_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemoryService, int]]:
    """More memories holding "harbour" than the keyword leg ranks, one of them also holding "zanzibar" (and no
    tag); half the others tagged `north`. Returns the service and the zanzibar memory's id."""
    service = MemoryService(hash_settings(tmp_path_factory.mktemp("common") / "data"), background_saves=False)
    notes = [
        (f"Harbour log {i}: the ferry left the harbour on time.", ["north"] if i % 2 else None, None, None)
        for i in range(ROW_BUDGET + 50)
    ]
    service.store_many(notes)
    rare = service.store("The harbour pilot from Zanzibar starts on Monday.").id
    yield service, rare
    service.close()


def test_a_word_in_more_memories_than_the_budget_is_not_ranked_beside_a_rare_one(
    common_word_store: tuple[MemoryService, int],
) -> None:
    """Ranking every memory that holds a common word is what made the keyword leg slow at 100k memories
    (bench/README.md); the rare word alone decides which memories the leg returns."""
    service, rare = common_word_store
    hits = service.storage.keyword_search(query_terms("harbour zanzibar"), 10, Filter())
    assert [hit.memory_id for hit in hits] == [rare]
    assert ids_of(service.retrieve("harbour zanzibar", k=3, mode="keyword")) == [rare]
    assert len(service.storage.keyword_search(query_terms("harbour"), 10, Filter())) == 10  # alone, it is ranked


def test_a_word_too_common_to_single_out_a_memory_is_never_ranked(
    common_word_store: tuple[MemoryService, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranking every memory that holds a word is what costs (1.5 s for a word in a fifth of a million memories):
    a word held by MAX_TERM_ROWS memories or more is left to the vector leg, alone or with a filter."""
    service, rare = common_word_store
    monkeypatch.setattr(keywords, "MAX_TERM_ROWS", ROW_BUDGET)  # "harbour" is in ROW_BUDGET + 51 memories
    assert service.storage.keyword_search(query_terms("harbour"), 10, Filter()) == []
    assert service.storage.keyword_search(query_terms("harbour"), 10, Filter(tags=("north",))) == []
    assert [hit.memory_id for hit in service.storage.keyword_search(query_terms("harbour zanzibar"), 10, Filter())] == [
        rare
    ]
    assert len(service.retrieve("harbour", k=5, mode="hybrid")) == 5  # the vector leg still answers


def test_with_a_filter_the_common_words_are_ranked_when_the_rare_ones_find_too_little(
    common_word_store: tuple[MemoryService, int],
) -> None:
    """The rare word's memories may all lie outside the filter: then every word is ranked, within the filter."""
    service, rare = common_word_store
    hits = service.retrieve("harbour zanzibar", k=5, mode="keyword", tags=["north"])
    assert len(hits) == 5 and rare not in ids_of(hits)
    assert all(hit.memory.tags == ("north",) for hit in hits)


# -- fusion ---------------------------------------------------------------------------------------------------------


def test_a_flat_vector_leg_does_not_bury_the_keyword_legs_exact_match() -> None:
    """Candidates that are all about equally similar (none is really about the query) stay about equal after
    normalising, instead of being stretched to 0..1, so a memory only the keyword leg found can come first.
    (Plain min-max put it third here: bench/README.md, identifiers.)"""
    vector = [VectorHit(1, 0.52, 0, 10), VectorHit(2, 0.51, 0, 10), VectorHit(3, 0.50, 0, 10)]
    keyword = [KeywordHit(9, 1, 7.5), KeywordHit(2, 2, 1.0)]
    fused = fuse(vector, keyword)
    assert fused[0].memory_id == 9 and fused[0].vector is None
    vector_only = {f.memory_id: f.score for f in fused if f.keyword is None}
    assert vector_only[1] - vector_only[3] < 0.1  # 0.02 of cosine is not stretched to the whole scale


def test_a_clear_vector_winner_still_beats_a_keyword_only_hit() -> None:
    vector = [VectorHit(1, 0.80, 0, 10), VectorHit(2, 0.40, 0, 10), VectorHit(3, 0.35, 0, 10)]
    fused = fuse(vector, [KeywordHit(9, 1, 7.5)])
    assert [f.memory_id for f in fused][:2] == [1, 9]
