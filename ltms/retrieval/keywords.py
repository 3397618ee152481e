"""The keyword leg's query terms: plain words, never query syntax.

A user's query is reduced to its distinct lower-case words, minus English stop words, so that no input can be an
FTS5 or tsquery syntax error (quotes, AND/OR/NOT/NEAR, `*`, `-`, `:`, parentheses are just separators here) and
common words do not drown the rare ones. Measured on a long-conversation benchmark: dropping stop words from the
query added 5 points of recall@10 to BM25 (docs/retrieval.md). Each backend quotes every term for its own engine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_TERMS = 32

# How many matching rows the keyword leg ranks, about: BM25 costs per row that matches any term, and a common word
# matches much of a large store (bench/README.md, retrieval: at 100k memories ranking every match took 3x the vector
# search). The rarest terms are kept while their document frequencies add up to at most this; the rarest one always.
ROW_BUDGET = 1000
# A word that this many memories or more hold is never ranked, even as a query's rarest: it cannot single out a
# memory (BM25 weighs it near zero), and ranking every match is what costs (a word in a fifth of a million
# memories took 1.5 s; bench/README.md). A query of only such words finds nothing by keyword.
MAX_TERM_ROWS = 5 * ROW_BUDGET

_WORD = re.compile(r"\w+", re.UNICODE)

# A short English stop list (the usual function words). Documents keep them; only the query drops them.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves""".split()  # noqa: SIM905 - readable as prose
)


def query_terms(query: str) -> list[str]:
    """Distinct words of `query` in order, lower-cased, stop words removed (all of them kept if nothing else is)."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    content = [word for word in words if word not in STOP_WORDS]
    return (content or words)[:MAX_TERMS]


def fts5_match(terms: list[str]) -> str:
    """An FTS5 MATCH expression: any of the terms, each a quoted string (a quote inside is doubled)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def fts5_all(phrases: Sequence[str]) -> str:
    """An FTS5 MATCH expression: every phrase, each a quoted string (FTS5 splits it into adjacent tokens)."""
    return " AND ".join('"' + phrase.replace('"', '""') + '"' for phrase in phrases)


def rare_terms(frequencies: dict[str, int], budget: int = ROW_BUDGET, too_common: int = MAX_TERM_ROWS) -> list[str]:
    """The terms to rank by: rarest first while their document frequencies sum to at most `budget` (the rarest
    present term always, unless `too_common` memories or more hold it), in the query's order. A term no document
    holds is dropped: it cannot match. What is dropped is what BM25 weighs least anyway (its IDF falls with its
    frequency)."""
    kept: set[str] = set()
    total = 0
    for term, count in sorted(frequencies.items(), key=lambda item: item[1]):
        if count == 0:
            continue
        if count >= too_common:
            break
        if kept and total + count > budget:
            break
        kept.add(term)
        total += count
    return [term for term in frequencies if term in kept]
