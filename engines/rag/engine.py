"""The retrieval engine: its knowledge is the vector index the ingest pipeline keeps.

``learn`` has nothing left to do (ingestion already embedded and indexed the document's chunks);
``contribute`` retrieves passages for the question, drops those below the similarity cut, and,
when the logit-bias option is on, asks the generator to favour the passages' tokens.

A follow-up question ("and when does it close?") names its subject only in an earlier turn, so
when the conversation has one, the previous question is retrieved with too and the better rank
of the two searches counts. The ranking itself (hybrid, dense or BM25: ``mode``) is the app's
search, the one every front uses.
"""

from __future__ import annotations

import time

from engines.base import (
    Contribution,
    DocumentInput,
    Engine,
    EngineContext,
    LearnReport,
    Passage,
    Progress,
    Query,
    Retrieve,
    no_progress,
)
from engines.rag.config import RagConfig


class RagEngine(Engine):
    name = "rag"

    def __init__(self, context: EngineContext, config: RagConfig | None = None) -> None:
        self.context = context
        self.config = config or RagConfig()

    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        progress(1.0, "searchable")
        return LearnReport(engine=self.name, path=document.path, seconds=0.0, changed=False,
                           details={"chunks": len(document.chunks), "note": "indexed by ingestion"})

    def retrieve(self, query: Query) -> list[Passage]:
        """Up to ``k`` passages at or above the similarity cut (or holding the question's exact
        terms), best first."""
        return question_passages(query, self.context.retrieve, self.config.k, self.config.min_similarity)

    def contribute(self, query: Query) -> Contribution:
        started = time.perf_counter()
        passages = self.retrieve(query)
        notes = [f"retrieval {1000 * (time.perf_counter() - started):.0f} ms"]
        if not passages:
            notes.append("no passage reached the similarity cut")
        bias = [p.text for p in passages] if self.config.logit_bias else []
        return Contribution(engine=self.name, passages=passages, bias_text=bias, notes=notes)

    def stats(self) -> dict[str, object]:
        return {"k": self.config.k, "min_similarity": self.config.min_similarity,
                "logit_bias": self.config.logit_bias}


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
