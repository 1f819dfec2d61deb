"""Facts consolidated from conversations into the semantic tier, and the chunks they became.

Sleep reads what the person stated or corrected in chat and keeps each fact here once (keyed by
its turn, sentence and kind), with its importance and why. A fact that is kept becomes one chunk
of its conversation's document (path ``conversation:ID``), so the FTS5 triggers index it and
the hybrid search finds it like any passage; a citation of that chunk leads back to the turn.
A fact superseded by a later one, or forgotten by the person, loses its chunk and keeps its row,
so the next sleep does not add it again. Deleting the conversation deletes all of it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from store.conversations import CONVERSATION_PREFIX
from store.database import Database

if TYPE_CHECKING:
    import numpy as np

FactKind = Literal["correction", "self_correction", "confirmed", "statement"]
PATH_PREFIX = CONVERSATION_PREFIX
_PATH = re.compile(r"^conversation:(\d+)$")


def conversation_path(conversation_id: int) -> str:
    """The document path a conversation's consolidated facts are stored under."""
    return f"{PATH_PREFIX}{conversation_id}"


def conversation_of(path: str) -> int | None:
    """The conversation a document path names (None for a file)."""
    found = _PATH.match(path)
    return int(found.group(1)) if found else None


class FactCandidate(BaseModel):
    """A fact sleep found in a conversation, before it is stored."""

    conversation_id: int
    message_id: int
    sentence: int
    kind: FactKind
    importance: float
    reason: str
    text: str
    subject: str = ""  # what a correction or a confirmed answer is about: its question


class FactRow(FactCandidate):
    id: int
    superseded_by: int | None = None
    forgotten: bool = False
    chunk_id: int | None = None
    created_at: str

    @property
    def status(self) -> str:
        if self.forgotten:
            return "forgotten"
        if self.superseded_by is not None:
            return f"superseded by #{self.superseded_by}"
        return "retrievable" if self.chunk_id is not None else "waiting for sleep"


_COLUMNS = ("id, conversation_id, message_id, sentence, kind, importance, reason, text, subject, "
            "superseded_by, forgotten, chunk_id, created_at")


class MemoryFactStore:
    """Reads and writes consolidated facts and their chunks; returns the chunk ids the vector
    index must add or drop."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def facts(self, conversation_id: int | None = None) -> list[FactRow]:
        """Every fact (or one conversation's), oldest first."""
        rows = self.db.query(f"SELECT {_COLUMNS} FROM memory_facts WHERE ? IS NULL OR conversation_id = ? "
                             "ORDER BY message_id, sentence, id", (conversation_id, conversation_id))
        return [FactRow(**dict(r)) for r in rows]

    def fact(self, fact_id: int) -> FactRow | None:
        row = self.db.conn.execute(f"SELECT {_COLUMNS} FROM memory_facts WHERE id = ?", (fact_id,)).fetchone()
        return FactRow(**dict(row)) if row else None

    def by_chunk(self, chunk_id: int) -> FactRow | None:
        row = self.db.conn.execute(f"SELECT {_COLUMNS} FROM memory_facts WHERE chunk_id = ?",
                                   (chunk_id,)).fetchone()
        return FactRow(**dict(row)) if row else None

    def vectors(self) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """Each fact's embedding and its subject's (None: the fact is its own subject) by fact id."""
        import numpy as np

        return {int(r[0]): (np.frombuffer(r[1], dtype=np.float32),
                            np.frombuffer(r[2], dtype=np.float32) if r[2] is not None else None)
                for r in self.db.query("SELECT id, embedding, subject_embedding FROM memory_facts")}

    def known(self) -> dict[tuple[int, int, str], tuple[int, str]]:
        """(message id, sentence, kind) -> (fact id, text) of every stored fact."""
        return {(r[1], r[2], r[3]): (int(r[0]), str(r[4]))
                for r in self.db.query("SELECT id, message_id, sentence, kind, text FROM memory_facts")}

    def add(self, candidate: FactCandidate, vector: np.ndarray, subject: np.ndarray | None = None) -> int:
        """Store a new fact (not yet a chunk) with its embedding and its subject's; a changed text
        for the same key replaces the old one's (its chunk, if any, detached first). Returns its id."""
        import numpy as np

        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        about = None if subject is None else np.ascontiguousarray(subject, dtype=np.float32).tobytes()
        c = candidate
        row = self.db.execute(
            "INSERT INTO memory_facts (conversation_id, message_id, sentence, kind, importance, reason, "
            "text, embedding, subject, subject_embedding) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(message_id, sentence, kind) DO UPDATE SET importance = excluded.importance, "
            "reason = excluded.reason, text = excluded.text, embedding = excluded.embedding, "
            "subject = excluded.subject, subject_embedding = excluded.subject_embedding, "
            "superseded_by = NULL RETURNING id",
            (c.conversation_id, c.message_id, c.sentence, c.kind, c.importance, c.reason, c.text, blob,
             c.subject, about),
        ).fetchone()
        return int(row[0])

    def replace_vectors(self, fact_id: int, vector: np.ndarray, subject: np.ndarray | None) -> None:
        """A fact's new embeddings (the embedding model changed)."""
        import numpy as np

        about = None if subject is None else np.ascontiguousarray(subject, dtype=np.float32).tobytes()
        self.db.execute("UPDATE memory_facts SET embedding = ?, subject_embedding = ? WHERE id = ?",
                        (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), about, fact_id))

    def set_superseded(self, fact_id: int, by: int | None) -> None:
        self.db.execute("UPDATE memory_facts SET superseded_by = ? WHERE id = ?", (by, fact_id))

    def attach(self, fact: FactRow, vector: np.ndarray) -> int | None:
        """Make ``fact`` a chunk of its conversation's document (created on first use) in one
        transaction; returns the chunk id. Its lines are the turn's place in the conversation.
        None: the fact was forgotten, superseded or deleted (with its conversation) since it was
        read, so it never becomes knowledge again."""
        import numpy as np

        vector = np.ascontiguousarray(vector, dtype=np.float32)
        path = conversation_path(fact.conversation_id)
        with self.db.transaction() as conn:
            still = conn.execute("SELECT 1 FROM memory_facts WHERE id = ? AND forgotten = 0 AND superseded_by "
                                 "IS NULL AND chunk_id IS NULL", (fact.id,)).fetchone()
            if still is None:
                return None
            turn = int(conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND id <= ?",
                                    (fact.conversation_id, fact.message_id)).fetchone()[0])
            doc = conn.execute(
                "INSERT INTO documents (path, status, chunk_count, indexed_at) VALUES (?, 'indexed', 0, "
                "datetime('now')) ON CONFLICT(path) DO UPDATE SET updated_at = datetime('now') RETURNING id",
                (path,)).fetchone()[0]
            ord_ = conn.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM chunks WHERE document_id = ?",
                                (doc,)).fetchone()[0]
            chunk_id = int(conn.execute(
                "INSERT INTO chunks (document_id, ord, text, page, line_start, line_end, char_start, "
                "char_end, token_count, embedding) VALUES (?,?,?,NULL,?,?,0,?,?,?)",
                (doc, ord_, fact.text, turn, turn, len(fact.text), len(fact.text.split()), vector.tobytes()),
            ).lastrowid)
            conn.execute("UPDATE memory_facts SET chunk_id = ? WHERE id = ?", (chunk_id, fact.id))
            self._count(conn, doc)
            conn.execute("INSERT INTO episodes (kind, document_id, conversation_id, payload) VALUES "
                         "('consolidate', ?, ?, ?)", (doc, fact.conversation_id, json.dumps(
                             {"fact_id": fact.id, "message_id": fact.message_id, "chunk_id": chunk_id,
                              "kind": fact.kind, "importance": fact.importance})))
        return chunk_id

    def detach(self, fact_id: int) -> int | None:
        """Drop the fact's chunk (its document too once empty); returns the chunk id, if any."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT m.chunk_id, c.document_id FROM memory_facts m JOIN chunks c "
                               "ON c.id = m.chunk_id WHERE m.id = ?", (fact_id,)).fetchone()
            conn.execute("UPDATE memory_facts SET chunk_id = NULL WHERE id = ?", (fact_id,))
            if row is None:
                return None
            conn.execute("DELETE FROM chunks WHERE id = ?", (row[0],))
            self._count(conn, row[1])
        return int(row[0])

    def remove(self, fact_id: int) -> int | None:
        """Drop a fact no longer found in its conversation, with its chunk (returned, if any).
        A forgotten fact keeps its row: found again later, it stays forgotten."""
        with self.db.transaction():
            chunk = self.detach(fact_id)
            self.db.execute("DELETE FROM memory_facts WHERE id = ? AND forgotten = 0", (fact_id,))
        return chunk

    def forget(self, fact_id: int) -> int | None:
        """The person does not want this fact kept: its chunk goes and sleep never adds it again."""
        with self.db.transaction():
            self.db.execute("UPDATE memory_facts SET forgotten = 1 WHERE id = ?", (fact_id,))
            return self.detach(fact_id)

    def forget_conversation_document(self, path: str) -> None:
        """The conversation's document was forgotten (the Library): its facts stay forgotten."""
        conversation_id = conversation_of(path)
        if conversation_id is not None:
            self.db.execute("UPDATE memory_facts SET forgotten = 1, chunk_id = NULL WHERE conversation_id = ?",
                            (conversation_id,))

    def delete_conversation(self, conversation_id: int) -> tuple[bool, list[int]]:
        """Delete a conversation, its turns, its facts, its document and the events that quote it
        (questions asked, feedback given) in one transaction; returns (whether it existed, the
        chunk ids whose vectors must leave the index). What engines already learned from its
        feedback stays in them until they are reset or a checkpoint is loaded."""
        path = conversation_path(conversation_id)
        with self.db.transaction() as conn:
            chunk_ids = [int(r[0]) for r in conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.path = ?", (path,))]
            conn.execute("DELETE FROM documents WHERE path = ?", (path,))  # its chunks cascade
            conn.execute("DELETE FROM episodes WHERE conversation_id = ?", (conversation_id,))
            existed = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount > 0
        return existed, chunk_ids

    @staticmethod
    def _count(conn, document_id: int) -> None:
        n = conn.execute("SELECT COUNT(*) FROM chunks WHERE document_id = ?", (document_id,)).fetchone()[0]
        if n:
            conn.execute("UPDATE documents SET chunk_count = ?, updated_at = datetime('now') WHERE id = ?",
                         (n, document_id))
        else:
            conn.execute("DELETE FROM documents WHERE id = ?", (document_id,))
