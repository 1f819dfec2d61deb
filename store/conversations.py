"""Conversations, their messages, and the episodes each question, answer and feedback leaves.

A question and its answer are two message rows; the answer row carries its citations and how it
was made (backend, model, tokens, timings) as JSON. Every event is also an episode, the log that
reflection, the meta-controller and sleep read later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from store.database import Database

Role = Literal["user", "assistant"]
Rating = Literal["up", "down"]
TITLE_CHARS = 60
CONVERSATION_PREFIX = "conversation:"
"""The path prefix of the document that holds a conversation's consolidated facts."""
WRITTEN_BY_CLIENT = {"written_by": "client"}
"""The meta of an answer an API client wrote (a turn it sent), not Engram: never rated, never
learned from."""


class ClientAnswer(ValueError):
    """Feedback on an answer an API client wrote (an earlier turn it sent), not Engram: learning
    from it would teach Engram from words it never said."""


class ConversationRow(BaseModel):
    id: int
    title: str
    created_at: str
    updated_at: str
    messages: int = 0


class SourceLocation(BaseModel):
    """Where a stored chunk comes from, precisely enough to cite it and open it there."""

    chunk_id: int
    document_id: int
    path: str
    page: int | None = None
    line_start: int
    line_end: int
    score: float
    title: str = Field("", description="A conversation's title, for an exchange recalled from it "
                       "(empty for a file, whose name says what it is, and a consolidated fact).")
    said_at: str = Field("", description="When a recalled exchange was said (its last turn, UTC).")

    @property
    def position(self) -> str:
        """"p.3 lines 4-9", as every front shows it ("turn 3" in a conversation's facts, "turns
        3-4" for an exchange recalled from it)."""
        if self.path.startswith(CONVERSATION_PREFIX):
            if self.line_start == self.line_end:
                return f"turn {self.line_start}"
            return f"turns {self.line_start}-{self.line_end}"
        page = f"p.{self.page} " if self.page else ""
        lines = f"line {self.line_start}" if self.line_start == self.line_end else (
            f"lines {self.line_start}-{self.line_end}")
        return f"{page}{lines}"

    @property
    def label(self) -> str:
        """The source's name as every front shows it: a file's name; a conversation's path, with
        its title and day when the passage is an exchange recalled from it."""
        if not self.path.startswith(CONVERSATION_PREFIX):
            return Path(self.path).name
        title = f" “{self.title}”" if self.title else ""
        return f"{self.path}{title}{f' of {self.said_at[:10]}' if self.said_at else ''}"


class Citation(SourceLocation):
    """A numbered source of an answer: where it is and the passage quoted from it."""

    n: int
    quote: str
    cited: bool = Field(False, description="The answer refers to it ([n]) or repeats its words.")


class MessageRow(BaseModel):
    id: int
    conversation_id: int
    role: Role
    content: str
    citations: list[Citation] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    feedback: Rating | None = None
    correction: str | None = None
    created_at: str

    @property
    def written_by_client(self) -> bool:
        """An answer an API client sent as an earlier turn: words Engram never said."""
        return self.role == "assistant" and self.meta.get("written_by") == WRITTEN_BY_CLIENT["written_by"]


def title_from(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def _message(row: Any) -> MessageRow:
    data = dict(row)
    data["citations"] = json.loads(data["citations"])
    data["meta"] = json.loads(data["meta"])
    return MessageRow(**data)


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, title: str) -> ConversationRow:
        cur = self.db.execute("INSERT INTO conversations (title) VALUES (?)", (title_from(title),))
        found = self.get(int(cur.lastrowid))
        assert found is not None
        return found

    def get(self, conversation_id: int) -> ConversationRow | None:
        row = self.db.conn.execute(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS messages "
            "FROM conversations c WHERE c.id = ?", (conversation_id,)).fetchone()
        return ConversationRow(**dict(row)) if row else None

    def list(self, limit: int = 100) -> list[ConversationRow]:
        rows = self.db.query(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS messages "
            "FROM conversations c ORDER BY c.updated_at DESC, c.id DESC LIMIT ?", (limit,))
        return [ConversationRow(**dict(r)) for r in rows]

    def delete(self, conversation_id: int) -> bool:
        return self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount > 0

    def messages(self, conversation_id: int) -> list[MessageRow]:
        rows = self.db.query("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id",
                             (conversation_id,))
        return [_message(r) for r in rows]

    def message(self, message_id: int) -> MessageRow | None:
        row = self.db.conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return _message(row) if row else None

    def question_before(self, conversation_id: int, message_id: int) -> str:
        """The person's last question before message ``message_id`` ("" when there is none)."""
        row = self.db.conn.execute(
            "SELECT content FROM messages WHERE conversation_id = ? AND id < ? AND role = 'user' "
            "ORDER BY id DESC LIMIT 1", (conversation_id, message_id)).fetchone()
        return row[0] if row else ""

    def recent_answers(self, limit: int) -> list[tuple[str, MessageRow]]:
        """Engram's newest answers (not those API clients sent as earlier turns), newest first,
        each with the question it answered."""
        rows = self.db.query(
            "SELECT a.*, (SELECT q.content FROM messages q WHERE q.conversation_id = a.conversation_id "
            "AND q.id < a.id AND q.role = 'user' ORDER BY q.id DESC LIMIT 1) AS question "
            "FROM messages a WHERE a.role = 'assistant' AND json_extract(a.meta, '$.written_by') IS NOT ? "
            "ORDER BY a.id DESC LIMIT ?", (WRITTEN_BY_CLIENT["written_by"], limit))
        found = []
        for row in rows:
            data = dict(row)
            question = data.pop("question") or ""
            found.append((question, _message(data)))
        return found

    def judged_answer_ids(self, limit: int, exclude_message_id: int | None = None) -> list[int]:
        """The newest answers whose right answer is known (corrected, or rated up), newest first."""
        rows = self.db.query(
            "SELECT id FROM messages WHERE role = 'assistant' AND id != ? "
            "AND (correction IS NOT NULL OR feedback = 'up') ORDER BY id DESC LIMIT ?",
            (exclude_message_id or -1, limit))
        return [int(r[0]) for r in rows]

    def add_question(self, conversation_id: int, text: str) -> MessageRow:
        return self._add(conversation_id, "user", text, kind="question", payload={"text": text})

    def start_question(self, conversation_id: int | None, question: str,
                       earlier: Sequence[tuple[Role, str]] = ()) -> MessageRow:
        """Store ``question`` in conversation ``conversation_id`` or, when None, in a new one that
        first holds ``earlier``: the turns a client sent before it (its answers marked
        ``WRITTEN_BY_CLIENT``), titled by the first question. One transaction: all or nothing."""
        if earlier and conversation_id is not None:
            raise ValueError("earlier turns start a new conversation")
        with self.db.transaction():
            if conversation_id is None:
                title = next((text for role, text in earlier if role == "user"), question)
                conversation_id = self.create(title).id
            for role, text in earlier:
                if role == "user":
                    self.add_question(conversation_id, text)
                else:
                    self.add_answer(conversation_id, text, [], dict(WRITTEN_BY_CLIENT))
            return self.add_question(conversation_id, question)

    def add_answer(self, conversation_id: int, text: str, citations: list[Citation],
                   meta: dict[str, Any]) -> MessageRow:
        payload = {"text": text, "chunk_ids": [c.chunk_id for c in citations], **meta}
        return self._add(conversation_id, "assistant", text, kind="answer", payload=payload,
                         citations=citations, meta=meta)

    def _add(self, conversation_id: int, role: Role, text: str, kind: str, payload: dict[str, Any],
             citations: list[Citation] | None = None,
             meta: dict[str, Any] | None = None) -> MessageRow:
        """The message, its episode and the conversation's time commit together."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, citations, meta) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, text, json.dumps([c.model_dump() for c in citations or []]),
                 json.dumps(meta or {})),
            )
            message_id = int(cur.lastrowid)
            conn.execute(
                "INSERT INTO episodes (kind, conversation_id, payload) VALUES (?, ?, ?)",
                (kind, conversation_id, json.dumps({"message_id": message_id, **payload})),
            )
            conn.execute("UPDATE conversations SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') "
                         "WHERE id = ?", (conversation_id,))
        found = self.message(message_id)
        assert found is not None
        return found

    def set_feedback(self, message_id: int, rating: Rating | None,
                     correction: str | None = None) -> MessageRow:
        """Record a thumbs up/down and/or a typed correction on an answer (the latest one counts)."""
        message = self.message(message_id)
        if message is None or message.role != "assistant":
            raise KeyError(f"no answer with id {message_id}")
        correction = correction.strip() if correction and correction.strip() else None
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE messages SET feedback = COALESCE(?, feedback), "
                "correction = COALESCE(?, correction) WHERE id = ?",
                (rating, correction, message_id),
            )
            conn.execute(
                "INSERT INTO episodes (kind, conversation_id, payload) VALUES ('feedback', ?, ?)",
                (message.conversation_id, json.dumps(
                    {"message_id": message_id, "rating": rating, "correction": correction})),
            )
        updated = self.message(message_id)
        assert updated is not None
        return updated
