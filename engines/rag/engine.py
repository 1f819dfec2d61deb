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
    no_progress,
)
from engines.passages import question_passages
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
