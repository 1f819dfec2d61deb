"""The episodic tier's side of the store: each conversation turn's embedding, beside the turn.

A turn is embedded once (lazily: when a question reaches back to earlier conversations, or in
sleep), with the embedder the chunks use; deleting a conversation deletes its turns and, by the
foreign key, their vectors. Recall scans these vectors directly: a person's own turns number in
the thousands, not millions, so no second FAISS index is kept in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from store.database import Database

if TYPE_CHECKING:
    import numpy as np


class StoredTurn(BaseModel):
    """One turn as recall ranks it: where it is, who said it and when."""

    message_id: int
    conversation_id: int
    role: str
    content: str
    created_at: str
    title: str


class TurnVectorStore:
    """Writes turn embeddings and reads them back for recall."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def unembedded(self, limit: int) -> list[tuple[int, str]]:
        """(message id, text) of up to ``limit`` turns with no vector yet, oldest first (answers
        a crashed model left empty are skipped)."""
        rows = self.db.query(
            "SELECT m.id, m.content FROM messages m LEFT JOIN turn_vectors v ON v.message_id = m.id "
            "WHERE v.message_id IS NULL AND trim(m.content) != '' ORDER BY m.id LIMIT ?", (limit,))
        return [(int(r[0]), str(r[1])) for r in rows]

    def add(self, message_ids: Sequence[int], vectors: np.ndarray) -> None:
        """Store the vectors of ``message_ids`` (a turn deleted meanwhile is skipped)."""
        import numpy as np

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.db.transaction() as conn:
            for message_id, vec in zip(message_ids, vectors):
                conn.execute("INSERT OR REPLACE INTO turn_vectors (message_id, embedding) "
                             "SELECT id, ? FROM messages WHERE id = ?", (vec.tobytes(), int(message_id)))

    def turns(self, exclude_conversation: int | None = None,
              compressed: str | None = None) -> tuple[list[StoredTurn], np.ndarray]:
        """Every embedded turn outside ``exclude_conversation`` and its vectors (row-aligned);
        with ``compressed`` (a method), turns a stretch of that method holds are left out."""
        import numpy as np

        rows = self.db.query(
            "SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, c.title, v.embedding "
            "FROM turn_vectors v JOIN messages m ON m.id = v.message_id "
            "JOIN conversations c ON c.id = m.conversation_id WHERE m.conversation_id IS NOT ? "
            "AND NOT EXISTS (SELECT 1 FROM episode_stretches s WHERE s.method = ? "
            "AND s.conversation_id = m.conversation_id "
            "AND m.id BETWEEN s.first_message_id AND s.last_message_id) "
            "ORDER BY m.id", (exclude_conversation, compressed))
        turns = [StoredTurn(message_id=r[0], conversation_id=r[1], role=r[2], content=r[3],
                            created_at=r[4], title=r[5]) for r in rows]
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return turns, np.stack([np.frombuffer(r[6], dtype=np.float32) for r in rows])

    def exchange(self, message_id: int) -> tuple[int, int] | None:
        """(question id, answer id) of the exchange turn ``message_id`` belongs to; either id is
        -1 when that side is missing. None when the turn is gone."""
        row = self.db.conn.execute("SELECT conversation_id, role FROM messages WHERE id = ?",
                                   (message_id,)).fetchone()
        if row is None:
            return None
        conversation_id, role = row
        if role == "user":
            other = self.db.scalar("SELECT id FROM messages WHERE conversation_id = ? AND id > ? "
                                   "AND role = 'assistant' ORDER BY id LIMIT 1", (conversation_id, message_id))
            return message_id, int(other) if other is not None else -1
        other = self.db.scalar("SELECT id FROM messages WHERE conversation_id = ? AND id < ? AND role = 'user' "
                               "ORDER BY id DESC LIMIT 1", (conversation_id, message_id))
        return (int(other) if other is not None else -1), message_id

    def clear(self) -> int:
        """Drop every turn vector (the embedding model changed: turns are embedded again)."""
        return self.db.execute("DELETE FROM turn_vectors").rowcount

    def count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM turn_vectors") or 0)
