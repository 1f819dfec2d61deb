"""How an engine chooses a question's passages from the app's search: the retrieval engine puts
them in the prompt, and the hidden-state tier reads the stored states of the same ones.

A follow-up question ("and when does it close?") names its subject only in an earlier turn, so
when the conversation has one, the previous question is searched with it too and the better rank
of the two searches counts.
"""

from __future__ import annotations

from engines.base import Passage, Query, Retrieve


def question_passages(query: Query, retrieve: Retrieve, k: int, min_similarity: float) -> list[Passage]:
    """Up to ``k`` passages for ``query`` at or above ``min_similarity`` (or holding its exact
    terms), best first; a follow-up's previous question is searched with it. The searches go
    through ``query.search``: another engine choosing passages the same way (the hidden-state
    tier) searches nothing again and, with the same ``k`` and cut, gets the same passages."""
    wanted = k * 2
    ranked = query.search(retrieve, query.text, wanted)
    previous = _previous_question(query)
    if previous:
        ranked = _merge_rankings(ranked, query.search(retrieve, f"{previous}\n{query.text}", wanted))
    kept = [p for p in ranked if p.exact or p.score >= min_similarity]
    return kept[:k]


def _previous_question(query: Query) -> str | None:
    for message in reversed(query.history):
        if message.role == "user":
            return message.content
    return None


def _merge_rankings(first: list[Passage], second: list[Passage]) -> list[Passage]:
    """Each chunk once at its better place: exact matches first, then by position, the
    question's own search first at equal positions."""
    best: dict[int, tuple[tuple[bool, int, int], Passage]] = {}
    for search, ranking in enumerate((first, second)):
        for position, p in enumerate(ranking):
            key = (not p.exact, position, search)
            if p.chunk_id not in best or key < best[p.chunk_id][0]:
                best[p.chunk_id] = (key, p)
    return [p for _, p in sorted(best.values(), key=lambda item: item[0])]
