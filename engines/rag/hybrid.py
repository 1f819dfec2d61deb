"""Hybrid ranking: what a query asks for exactly, and reciprocal rank fusion of BM25 and dense.

Dense embeddings cannot tell "zq0123x" from "zq0392x", and BM25 cannot tell a paraphrase from
noise; fusing their ranks (Cormack et al. 2009, ``w / (k + rank)``) keeps the strengths of both.
Identifiers, codes and quoted phrases are what people paste into a search box, so a chunk that
holds them exactly goes before any fused score. Pure functions: the store runs the searches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pydantic import BaseModel, Field

MAX_EXACT_TERMS = 16
"""Most exact terms one query looks up (each is one keyword lookup)."""

_QUOTED = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"\w+")
_EDGE = re.compile(r"^[^\w]+|[^\w]+$")
_CAMEL = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")
_INNER_MARK = re.compile(r"\w\w[_.\-]\w|\w[_.\-]\w\w")  # "foo_bar", "v1.2": yes; "e.g": no


class QueryTerms(BaseModel):
    """A query read for retrieval: FTS5 phrases for BM25 and the exact strings that go first."""

    groups: list[list[str]] = Field(description="Word groups (each one FTS5 phrase) any of which "
                                    "a BM25 hit holds.")
    exact: list[str] = Field(description="Identifiers, codes and quoted phrases of the query, as "
                             "typed; a chunk holding one exactly ranks first.")


def looks_like_identifier(token: str) -> bool:
    """Letters mixed with digits, ``_ . -`` inside, or CamelCase: a name or code, not a word."""
    has_letter = any(c.isalpha() for c in token)
    has_digit = any(c.isdigit() for c in token)
    return (has_letter and has_digit) or bool(_INNER_MARK.search(token)) or bool(_CAMEL.search(token))


def read_query(query: str) -> QueryTerms:
    """Split a query into quoted phrases and the rest; an unpaired quote is an ordinary character."""
    groups: list[list[str]] = []
    exact: list[str] = []
    for quoted in _QUOTED.findall(query):
        words = _WORD.findall(quoted)
        if words:
            groups.append(words)
            exact.append(" ".join(quoted.split()))
    for token in _QUOTED.sub(" ", query).split():
        token = _EDGE.sub("", token)
        words = _WORD.findall(token)
        if not words:
            continue
        groups.append(words)  # "foo_bar" or "v1.2" is one phrase of its parts, as FTS5 splits it
        if looks_like_identifier(token):
            exact.append(token)
    return QueryTerms(groups=groups, exact=list(dict.fromkeys(exact))[:MAX_EXACT_TERMS])


FUNCTION_WORDS = frozenset("""
a an the this that these those my your his her its our their some any no every each
i you he she it we they me him us them what which who whom whose when where why how
is are was were be been being am do does did done have has had can could will would shall
should may might must of in on at to for from by with about into onto over under after before
between through during without within than as and or but nor if then so not
""".split())
"""Closed-class English words: a query holding one reads as a sentence, not as typed keywords."""

KEYWORD_QUERY_WORDS = 6


def is_keyword_query(query: str) -> bool:
    """A few words typed without any function word or question mark ("fts5 tokenizer unicode"):
    the person wants the chunks that hold those words, which BM25 finds better than embeddings."""
    words = _WORD.findall(query.lower())
    return (0 < len(words) <= KEYWORD_QUERY_WORDS and "?" not in query and '"' not in query
            and not any(w in FUNCTION_WORDS for w in words))


def exact_pattern(term: str) -> re.Pattern[str]:
    """The term as typed, not inside a longer word or code (case and spacing aside)."""
    parts = [re.escape(p) for p in term.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w|[.\-_]\w)", re.IGNORECASE)


def exact_counts(texts: dict[int, str], terms: Sequence[str]) -> dict[int, int]:
    """How many of the exact terms each chunk holds (chunks holding none are left out)."""
    patterns = [exact_pattern(t) for t in terms]
    counts = {cid: sum(1 for p in patterns if p.search(text)) for cid, text in texts.items()}
    return {cid: n for cid, n in counts.items() if n}


def term_words(term: str) -> list[str]:
    """The FTS5 words of an exact term (its candidates are fetched by this phrase)."""
    return _WORD.findall(term)


def reciprocal_rank_fusion(rankings: Sequence[tuple[Sequence[int], float]], k: int) -> dict[int, float]:
    """Sum of ``weight / (k + rank)`` (rank from 1) over the rankings each id appears in."""
    fused: dict[int, float] = {}
    for ids, weight in rankings:
        for rank, cid in enumerate(ids, 1):
            fused[cid] = fused.get(cid, 0.0) + weight / (k + rank)
    return fused


def hybrid_order(dense: Sequence[int], bm25: Sequence[int], exact: dict[int, int],
                 dense_weight: float, bm25_weight: float, k: int) -> list[int]:
    """Chunk ids best first: more exact terms held, then the fused score, then the dense rank."""
    fused = reciprocal_rank_fusion([(dense, dense_weight), (bm25, bm25_weight)], k)
    for cid in exact:
        fused.setdefault(cid, 0.0)
    first_seen: dict[int, int] = {}
    for rank, cid in enumerate([*dense, *bm25, *exact]):
        first_seen.setdefault(cid, rank)
    return sorted(fused, key=lambda cid: (-exact.get(cid, 0), -fused[cid], first_seen[cid]))


def sentence_windows(sentences: Sequence[str], width: int = 2, most: int = 24) -> list[str]:
    """Runs of ``width`` consecutive sentences (fewer sentences: one run of them all). A question
    put in other words often matches one or two sentences of a chunk, and the chunk's single
    vector averages them with the rest; a window's vector does not. At most ``most`` runs: a chunk
    of many short lines (a table, a list) gets wider runs that still cover every sentence, since
    every run is embedded while the person waits."""
    if len(sentences) <= width:
        return [" ".join(sentences)] if sentences else []
    step = max(1, math.ceil((len(sentences) - width + 1) / most))
    width = max(width, step + 1)  # consecutive runs overlap, so no sentence falls between two
    return [" ".join(sentences[i:i + width]) for i in range(0, len(sentences) - width + step, step)]


def rerank_by_windows(order: Sequence[int], best: dict[int, float], exact: dict[int, int], k: int) -> list[int]:
    """The first ``len(best)`` ids of ``order`` re-ranked by reciprocal rank fusion of their place
    in ``order`` and their place by ``best`` (each chunk's most similar window); ids holding more
    exact terms still go first, and the ids past them keep their places."""
    top = list(order[:len(best)])
    by_window = sorted(top, key=lambda cid: -best[cid])
    fused = reciprocal_rank_fusion([(top, 1.0), (by_window, 1.0)], k)
    place = {cid: rank for rank, cid in enumerate(top)}
    return sorted(top, key=lambda cid: (-exact.get(cid, 0), -fused[cid], place[cid])) + list(order[len(best):])
