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

from store.conversations import ConversationStore
from store.database import Database


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


def _question_before(db: Database, conversation_id: int, message_id: int) -> str:
    row = db.conn.execute(
        "SELECT content FROM messages WHERE conversation_id = ? AND id < ? AND role = 'user' "
        "ORDER BY id DESC LIMIT 1", (conversation_id, message_id)).fetchone()
    return row[0] if row else ""


def _sources(db: Database, citations: list[dict[str, Any]]) -> list[str]:
    ids = [int(c["chunk_id"]) for c in citations if c.get("chunk_id") is not None]
    texts: dict[int, str] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        texts = {r[0]: r[1] for r in db.query(f"SELECT id, text FROM chunks WHERE id IN ({marks})",
                                               tuple(ids))}
    return [texts.get(int(c.get("chunk_id") or -1), c.get("quote") or "") for c in citations
            if texts.get(int(c.get("chunk_id") or -1)) or c.get("quote")]


def read_feedback(db: Database, message_id: int, episode_id: int | None = None) -> FeedbackInput | None:
    """The answer ``message_id`` with its latest feedback; None when it was deleted."""
    message = ConversationStore(db).message(message_id)
    if message is None or message.role != "assistant":
        return None
    return FeedbackInput(
        message_id=message.id, episode_id=episode_id,
        question=_question_before(db, message.conversation_id, message.id),
        answer=message.content, rating=message.feedback, correction=message.correction,
        sources=_sources(db, message.citations), meta=message.meta,
    )


def latest_feedback_episode(db: Database, message_id: int) -> int | None:
    return db.scalar(
        "SELECT id FROM episodes WHERE kind = 'feedback' AND json_extract(payload, '$.message_id') = ? "
        "ORDER BY id DESC LIMIT 1", (message_id,))


def failed_episodes_since(db: Database, since: str) -> list[tuple[int, int]]:
    """(episode id, message id) of thumbs-down or corrected answers given feedback since ``since``
    (an SQLite timestamp), oldest first, the latest episode per answer only."""
    rows = db.query(
        "SELECT MAX(e.id), json_extract(e.payload, '$.message_id') AS mid FROM episodes e "
        "JOIN messages m ON m.id = json_extract(e.payload, '$.message_id') "
        "WHERE e.kind = 'feedback' AND e.ts >= ? AND (m.feedback = 'down' OR m.correction IS NOT NULL) "
        "GROUP BY mid ORDER BY MAX(e.id)", (since,))
    return [(int(r[0]), int(r[1])) for r in rows]


def judged_answers(db: Database, limit: int, exclude_message_id: int | None = None) -> list[FeedbackInput]:
    """The most recent answers whose right answer is known (corrected, or rated up), newest first:
    what a replay can score a changed answer against."""
    rows = db.query(
        "SELECT id FROM messages WHERE role = 'assistant' AND id != ? "
        "AND (correction IS NOT NULL OR feedback = 'up') ORDER BY id DESC LIMIT ?",
        (exclude_message_id or -1, limit))
    found = [read_feedback(db, int(r[0])) for r in rows]
    return [f for f in found if f is not None and f.question]


def feedback_meta(meta: dict[str, Any], engine: str) -> dict[str, Any]:
    """What ``engine`` kept with an answer (see ``Contribution.meta``)."""
    kept = meta.get("engines", {})
    return kept.get(engine, {}) if isinstance(kept, dict) else {}
