"""The names leg of hybrid retrieval: a query's topic searched among the memories that mention its names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltms.embeddings.minilm import MiniLMEmbedder
from ltms.errors import StorageError
from ltms.records import SearchHit
from ltms.retrieval.names import NamedQuery, split_names
from ltms.service import MemoryService
from tests.helpers import hash_settings


@pytest.mark.parametrize(
    ("query", "names", "topic"),
    [
        ("Where is Tomasz moving to?", ("Tomasz",), "Where is moving to?"),
        ("What happened to Aiko's nephew in Copenhagen?", ("Aiko", "Copenhagen"), "What happened to nephew in ?"),
        ("Did Caroline go to the LGBTQ support group?", ("Caroline", "LGBTQ"), "Did go to the support group?"),
        ("What does ERR-4711 mean?", ("ERR-4711",), "What does mean?"),
        ("which disk does batch-us-east-08 have?", ("batch-us-east-08",), "which disk does have?"),
        ("Tomasz asked: is my iPhone fixed?", ("iPhone",), "Tomasz asked: is my fixed?"),  # a sentence's start
        ("did Maya and maya's friend Leo go?", ("Maya", "Leo"), "did and maya's friend go?"),
    ],
)
def test_names_are_what_a_writer_marks_as_names(query: str, names: tuple[str, ...], topic: str) -> None:
    assert split_names(query) == NamedQuery(names, topic)


@pytest.mark.parametrize(
    "query",
    [
        "where is the spare key?",  # no capital letters: no names
        "Where is the spare key?",  # only the sentence's first word
        "I think The plan is fine",  # stop words are never names
        "ERR-8612",  # nothing is left once the name is removed
        "Who is Mariam Garcia?",  # only stop words are left
        "",
    ],
)
def test_queries_without_a_usable_name_have_no_names_leg(query: str) -> None:
    assert split_names(query) is None


def test_at_most_four_names_are_required() -> None:
    named = split_names("Did Ann, Bob, Cleo, Dan and Eve meet in Oslo?")
    assert named is not None and named.names == ("Ann", "Bob", "Cleo", "Dan")
    assert "Eve" not in named.topic and "Oslo" not in named.topic


# -- through the service, with the default model ---------------------------------------------------------------

SMALL_TALK = [
    "Ha! Classic.",
    "Honestly, relatable.",
    "It's been a wild few weeks.",
    "That sounds gorgeous, I need a tour.",
    "No way, that's big news.",
    "Yeah, it still feels a bit unreal.",
    "That made me laugh.",
    "Let's do this again soon. Take care!",
]
OTHERS = [  # the same topics, told by someone else
    "[2 May 2023] Idris: I sprained my ankle playing five-a-side football, so no running for a month.",
    "[3 May 2023] Grace: We got the keys! We're moving to a terraced house in Leith, because we wanted a garden.",
    "[4 May 2023] Idris: My wrist is in a cast after I fell off my bike on the way to work.",
    "[5 May 2023] Grace: Big change: I signed the lease for a flat above a bakery in Kentish Town.",
]
ANSWERS = {
    "How did Mateo get injured?": "[6 May 2023] Mateo: I'm on the sofa with ice, because I hurt my shoulder at the "
    "climbing wall.",
    "Where is Mateo moving to?": "[7 May 2023] Mateo: Big change: I signed the lease for a cottage outside Bath. The "
    "deciding factor: city rent got ridiculous.",
}


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemoryService, dict[str, int]]]:
    """Three friends' turns, one memory each: small talk, and a few turns with news."""
    data = Path(tmp_path_factory.mktemp("names")) / "data"
    with MemoryService(hash_settings(data), embedder=MiniLMEmbedder(), background_saves=False) as service:
        turns = [
            f"[{day} May 2023] {who}: {line}"
            for day in range(1, 9)
            for who in ("Mateo", "Idris", "Grace")
            for line in SMALL_TALK
        ]
        service.store_many([(text, None, None, None) for text in [*turns, *OTHERS]])
        answers = {q: service.store_many([(text, None, None, None)])[0].id for q, text in ANSWERS.items()}
        yield service, answers


def rank(hits: list[SearchHit], memory_id: int) -> int | None:
    return next((i for i, hit in enumerate(hits, 1) if hit.memory.id == memory_id), None)


@pytest.mark.parametrize("question", list(ANSWERS))
def test_a_named_persons_news_is_found_among_their_small_talk(
    conversation: tuple[MemoryService, dict[str, int]], question: str
) -> None:
    """MiniLM lets the name dominate a short turn's vector, so semantic ranks Mateo's small talk above the turn
    that answers, and the answer shares no word with the question but the name. The names leg (the topic among the
    turns that mention Mateo) puts it first."""
    service, answers = conversation
    assert rank(service.retrieve(question, k=10, mode="semantic"), answers[question]) is None
    assert rank(service.retrieve(question, k=10, mode="keyword"), answers[question]) is None
    hybrid = service.retrieve(question, k=10, mode="hybrid")
    assert rank(hybrid, answers[question]) == 1
    assert hybrid[0].similarity is not None and hybrid[0].passage is not None  # against the whole query
    assert 0.0 <= hybrid[-1].score <= hybrid[0].score <= 1.0


def test_the_names_leg_honours_the_callers_filters(conversation: tuple[MemoryService, dict[str, int]]) -> None:
    service, _ = conversation
    question = "Where is Mateo moving to?"
    assert service.retrieve(question, k=10, mode="hybrid", namespace="elsewhere") == []
    assert service.retrieve(question, k=10, mode="hybrid", tags=["x"]) == []
    assert service.retrieve(question, k=10, mode="hybrid", until="2023-05-06") == []  # all were stored today


@pytest.mark.parametrize("question", [*ANSWERS, "a bike accident on the way to work", "Which city is Grace in?"])
def test_asking_for_more_hits_never_reorders_the_first_ones(
    conversation: tuple[MemoryService, dict[str, int]], question: str
) -> None:
    """Each leg's scale comes from its best 20 candidates, however many are fetched. (Not when more candidates
    tie at a leg's cut-off than fit in it: which of them are fetched then depends on how many are asked for.)"""
    service, _ = conversation
    first = [hit.memory.id for hit in service.retrieve(question, k=10, mode="hybrid")]
    more = [hit.memory.id for hit in service.retrieve(question, k=60, mode="hybrid")]
    assert more[:10] == first


# -- the legs run side by side ---------------------------------------------------------------------------------


def test_hybrid_legs_run_on_the_services_threads_which_end_with_it(tmp_path: Path) -> None:
    service = MemoryService(hash_settings(tmp_path / "data"), background_saves=False)
    service.store_many([(f"Mateo's note {i} about the harbour", None, None, None) for i in range(30)])
    threads: set[threading.Thread] = set()
    keyword_search = service.storage.keyword_search

    def seen(*args: object) -> object:
        threads.add(threading.current_thread())
        return keyword_search(*args)  # type: ignore[arg-type]

    service.storage.keyword_search = seen  # type: ignore[method-assign]
    for _ in range(3):
        assert len(service.retrieve("What did Mateo say about the harbour?", k=5)) == 5
    assert threads and all(t.name.startswith("ltmc-leg") for t in threads)
    service.close()
    assert not [t for t in threads if t.is_alive()]


def test_an_error_in_a_leg_is_the_retrieves_error_and_the_next_retrieve_works(tmp_path: Path) -> None:
    with MemoryService(hash_settings(tmp_path / "data"), background_saves=False) as service:
        service.store_many([(f"Mateo's note {i} about the harbour", None, None, None) for i in range(30)])
        keyword_search = service.storage.keyword_search

        def broken(*args: object) -> object:
            raise StorageError("read from", tmp_path / "data" / "ltmc.sqlite3", "disk I/O error")

        service.storage.keyword_search = broken  # type: ignore[method-assign]
        with pytest.raises(StorageError, match="disk I/O error"):
            service.retrieve("What did Mateo say about the harbour?", k=5)
        service.storage.keyword_search = keyword_search  # type: ignore[method-assign]
        assert len(service.retrieve("What did Mateo say about the harbour?", k=5)) == 5
