"""The episodic tier: past conversation turns, embedded, recalled by similarity weighted by age.

A turn is embedded with the embedder the chunks use, once: in sleep, or when a question that
refers back to an earlier conversation needs them (the controller decides; other questions never
wait for it). A recalled turn's score is its cosine similarity to the question times
``0.5 ** (age_days / half_life_days)``: of two turns equally close to the question, the newer
one wins, and a week-old turn counts half as much as today's with a 7-day half-life. Recall
returns whole exchanges (the question and Engram's answer), which the chat puts before the
conversation's own history in the prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pydantic import BaseModel

from app.settings import MemoryConfig
from engines.generation import ChatMessage
from store.conversations import ConversationStore
from store.database import Database
from store.turn_vectors import TurnVectorStore

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]
EMBED_BATCH = 64
RECALL_EMBEDS = 64  # turns a recall embeds before searching (oldest first; sleep embeds the rest)


class RecalledExchange(BaseModel):
    """An earlier exchange recalled for a question, and how it scored."""

    conversation_id: int
    title: str
    question_id: int | None
    answer_id: int | None
    question: str
    answer: str
    created_at: str
    similarity: float
    recency: float
    score: float

    def messages(self) -> list[ChatMessage]:
        """The exchange as prompt turns (a side that is missing is left out)."""
        turns = [ChatMessage(role="user", content=self.question)] if self.question else []
        return turns + ([ChatMessage(role="assistant", content=self.answer)] if self.answer else [])


def recency_weight(created_at: str, now: datetime, half_life_days: float) -> float:
    """0.5 ** (age in days / half-life): 1.0 for a turn just said."""
    then = datetime.fromisoformat(created_at).replace(tzinfo=timezone.utc)
    age_days = max(0.0, (now - then).total_seconds() / 86400.0)
    return 0.5 ** (age_days / half_life_days)


class EpisodicMemory:
    """Embeds turns and recalls earlier exchanges for a question."""

    def __init__(self, db: Database, embed: Embed, config: MemoryConfig) -> None:
        self.db = db
        self.embed = embed
        self.config = config
        self.vectors = TurnVectorStore(db)
        self.conversations = ConversationStore(db)

    def embed_new(self, limit: int = 10_000, stop: Callable[[], bool] | None = None) -> int:
        """Embed up to ``limit`` turns that have no vector yet, in batches; returns how many."""
        done = 0
        while done < limit and not (stop is not None and stop()):
            batch = self.vectors.unembedded(min(EMBED_BATCH, limit - done))
            if not batch:
                break
            self.vectors.add([m for m, _ in batch], self.embed([text for _, text in batch]))
            done += len(batch)
        return done

    def recall(self, question: str, exclude_conversation: int | None = None, k: int | None = None,
               now: datetime | None = None) -> list[RecalledExchange]:
        """The ``k`` (default recall_k) best earlier exchanges for ``question``, outside
        ``exclude_conversation``, best first; turns below the similarity cut never count."""
        k = k or self.config.recall_k
        self.embed_new(limit=RECALL_EMBEDS)  # a question pays for a few turns at most; sleep embeds the rest
        turns, matrix = self.vectors.turns(exclude_conversation)
        if not turns:
            return []
        now = now or datetime.now(timezone.utc)
        query = self.embed([question])[0]
        similarity = matrix @ query
        scored = []
        for turn, sim in zip(turns, similarity.tolist()):
            if sim < self.config.recall_min_similarity:
                continue
            weight = recency_weight(turn.created_at, now, self.config.half_life_days)
            scored.append((sim * weight, sim, weight, turn))
        scored.sort(key=lambda item: -item[0])
        found: list[RecalledExchange] = []
        seen: set[tuple[int, int]] = set()
        for score, sim, weight, turn in scored:
            pair = self.vectors.exchange(turn.message_id)
            if pair is None or pair in seen:
                continue
            seen.add(pair)
            question_row = self.conversations.message(pair[0]) if pair[0] >= 0 else None
            answer_row = self.conversations.message(pair[1]) if pair[1] >= 0 else None
            found.append(RecalledExchange(
                conversation_id=turn.conversation_id, title=turn.title,
                question_id=question_row.id if question_row else None,
                answer_id=answer_row.id if answer_row else None,
                question=question_row.content if question_row else "",
                answer=answer_row.content if answer_row and not answer_row.meta.get("error") else "",
                created_at=turn.created_at, similarity=round(sim, 4), recency=round(weight, 4),
                score=round(score, 4)))
            if len(found) >= k:
                break
        return found
