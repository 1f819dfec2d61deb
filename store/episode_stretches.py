"""The episodic tier's compressed stretches: consecutive old turns of one conversation, one vector each.

A stretch row names its turns by their first and last message id (so its turns are read back
from ``messages`` when it is recalled) and keeps one fixed-size vector made by a compressor
(``summary``: the embedding of a summary the chat model wrote, kept beside it; ``ssm``: the
selective state-space encoder's state). Deleting a conversation deletes its stretches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from store.database import Database

if TYPE_CHECKING:
    import numpy as np


class StretchRow(BaseModel):
    """One compressed stretch, as recall ranks it."""

    id: int
    conversation_id: int
    first_message_id: int
    last_message_id: int
    turns: int
    method: str
    summary: str
    said_at: str
    title: str


class OldTurn(BaseModel):
    """A turn old enough to compress and not in a stretch yet."""

    message_id: int
    conversation_id: int
    role: str
    content: str
    created_at: str


class StretchStore:
    """Writes compressed stretches and reads them back for recall and re-encoding."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def uncompressed_before(self, method: str, before: str) -> list[OldTurn]:
        """Turns said before ``before`` (ISO time) that no ``method`` stretch holds, by
        conversation then id (empty answers a crashed model left are skipped)."""
        rows = self.db.query(
            "SELECT m.id, m.conversation_id, m.role, m.content, m.created_at FROM messages m "
            "WHERE m.created_at < ? AND trim(m.content) != '' AND NOT EXISTS (SELECT 1 FROM "
            "episode_stretches s WHERE s.method = ? AND s.conversation_id = m.conversation_id "
            "AND m.id BETWEEN s.first_message_id AND s.last_message_id) "
            "ORDER BY m.conversation_id, m.id", (before, method))
        return [OldTurn(message_id=r[0], conversation_id=r[1], role=r[2], content=r[3], created_at=r[4])
                for r in rows]

    def add(self, conversation_id: int, first: int, last: int, turns: int, method: str,
            vector: np.ndarray, said_at: str, summary: str = "", seconds: float = 0.0) -> int:
        """Store one stretch; returns its id (an existing one for the same start is replaced)."""
        import numpy as np

        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR REPLACE INTO episode_stretches (conversation_id, first_message_id, "
                "last_message_id, turns, method, summary, vector, said_at, seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, first, last, turns, method, summary, blob, said_at, round(seconds, 4)))
            return int(cursor.lastrowid or 0)

    def stretches(self, method: str, exclude_conversation: int | None = None
                  ) -> tuple[list[StretchRow], np.ndarray]:
        """Every ``method`` stretch outside ``exclude_conversation`` and its vectors (row-aligned)."""
        import numpy as np

        rows = self.db.query(
            "SELECT s.id, s.conversation_id, s.first_message_id, s.last_message_id, s.turns, s.method, "
            "s.summary, s.said_at, c.title, s.vector FROM episode_stretches s "
            "JOIN conversations c ON c.id = s.conversation_id "
            "WHERE s.method = ? AND s.conversation_id IS NOT ? ORDER BY s.id", (method, exclude_conversation))
        found = [StretchRow(id=r[0], conversation_id=r[1], first_message_id=r[2], last_message_id=r[3],
                            turns=r[4], method=r[5], summary=r[6], said_at=r[7], title=r[8]) for r in rows]
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return found, np.stack([np.frombuffer(r[9], dtype=np.float32) for r in rows])

    def set_vector(self, stretch_id: int, vector: np.ndarray) -> None:
        """Replace a stretch's vector (the encoder was trained again)."""
        import numpy as np

        self.db.execute("UPDATE episode_stretches SET vector = ? WHERE id = ?",
                        (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), stretch_id))

    def turn_vectors(self, conversation_id: int, first: int, last: int) -> np.ndarray:
        """The embeddings of a stretch's turns (ids ``first`` to ``last``), in order ([T, D])."""
        import numpy as np

        rows = self.db.query(
            "SELECT v.embedding FROM turn_vectors v JOIN messages m ON m.id = v.message_id "
            "WHERE m.conversation_id = ? AND m.id BETWEEN ? AND ? ORDER BY m.id",
            (conversation_id, first, last))
        return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows]) if rows else np.zeros((0, 0))

    def clear(self, method: str | None = None) -> int:
        """Drop every stretch (of ``method``): the embedding model changed, they are made again."""
        if method is None:
            return self.db.execute("DELETE FROM episode_stretches").rowcount
        return self.db.execute("DELETE FROM episode_stretches WHERE method = ?", (method,)).rowcount

    def count(self, method: str | None = None) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM episode_stretches WHERE method IS ? OR ? IS NULL",
                                  (method, method)) or 0)
