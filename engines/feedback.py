"""A person's reaction to an answer, read back from the store for the engines that learn from it.

The chat service stores each answer (with the sources it was given and its ``meta``: which
playbook bullets it used) and each thumbs up/down or typed correction as a ``feedback`` episode.
Learning happens later, in a background job or during sleep, so what the engines get is rebuilt
from those rows: the question, the answer, the source passages (the chunk's current text, or the
quote kept with the answer when the document has gone since), the rating and the correction.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from store.conversations import Citation, ConversationStore
from store.database import Database
from store.documents import DocumentStore
from store.episodes import EpisodeStore


class FeedbackInput(BaseModel):
    """One answer and what the person said about it."""

    message_id: int
    episode_id: int | None = Field(None, description="The feedback episode this comes from.")
    question: str
    answer: str
    rating: Literal["up", "down"] | None = None
    correction: str | None = None
    sources: list[str] = Field(default_factory=list, description="Passages the answer was given.")
    meta: dict[str, Any] = Field(default_factory=dict, description="The stored answer's meta.")

    @property
    def failed(self) -> bool:
        return self.rating == "down" or bool(self.correction)


def _sources(db: Database, citations: list[Citation]) -> list[str]:
    ids = [c.chunk_id for c in citations]
    texts = DocumentStore(db).chunk_texts_by_id(ids)
    return [texts.get(c.chunk_id) or c.quote for c in citations if texts.get(c.chunk_id) or c.quote]


def read_feedback(db: Database, message_id: int, episode_id: int | None = None) -> FeedbackInput | None:
    """The answer ``message_id`` with its latest feedback; None when it was deleted, or when an API
    client wrote it (an earlier turn it sent): nothing learns from words Engram never said."""
    conversations = ConversationStore(db)
    message = conversations.message(message_id)
    if message is None or message.role != "assistant" or message.written_by_client:
        return None
    return FeedbackInput(
        message_id=message.id, episode_id=episode_id,
        question=conversations.question_before(message.conversation_id, message.id),
        answer=message.content, rating=message.feedback, correction=message.correction,
        sources=_sources(db, message.citations), meta=message.meta,
    )


def latest_feedback_episode(db: Database, message_id: int) -> int | None:
    """The feedback episode a job for ``message_id`` learns from (None: no feedback yet)."""
    return EpisodeStore(db).latest_feedback(message_id)


def failed_episodes_since(db: Database, since: str) -> list[tuple[int, int]]:
    """(episode id, message id) of thumbs-down or corrected answers given feedback since ``since``
    (an SQLite timestamp), oldest first, the latest episode per answer only."""
    return EpisodeStore(db).failed_feedback_since(since)


def judged_answers(db: Database, limit: int, exclude_message_id: int | None = None) -> list[FeedbackInput]:
    """The most recent answers whose right answer is known (corrected, or rated up), newest first:
    what a replay can score a changed answer against."""
    ids = ConversationStore(db).judged_answer_ids(limit, exclude_message_id)
    found = [read_feedback(db, message_id) for message_id in ids]
    return [f for f in found if f is not None and f.question]


def feedback_meta(meta: dict[str, Any], engine: str) -> dict[str, Any]:
    """What ``engine`` kept with an answer (see ``Contribution.meta``)."""
    kept = meta.get("engines", {})
    return kept.get(engine, {}) if isinstance(kept, dict) else {}
