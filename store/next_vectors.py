"""The vectors of the embedding model being switched to, kept aside until every chunk has one.

Changing the embedding model (or its precision) re-embeds the library in the background. The new
vectors go into ``chunk_vectors_next`` (one row per chunk, deleted with the chunk), never into
``chunks.embedding``, which keeps the vectors the live index is built from: search goes on with
the old model meanwhile, and no index ever holds vectors of two models. ``promote`` swaps them in
one transaction once no chunk lacks a new vector, together with the record of which model the
stored vectors now come from (the ``embedding`` state row).

A re-embedding is resumable: a crash keeps the rows written so far, and the job asks only for the
chunks still missing. Rows for another target than the one asked for are dropped (``begin``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from store.database import Database

if TYPE_CHECKING:
    import numpy as np

EMBEDDING_KEY = "embedding"
"""State row: the model, backend, identity and dimension of the vectors in ``chunks.embedding``."""
NEXT_KEY = "embedding_next"
"""State row: the same for the vectors in ``chunk_vectors_next`` (absent when no switch runs)."""
LEGACY_DIM_KEY, LEGACY_MODEL_KEY = "embedding_dim", "embedding_model"


class NextVectors:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _state(self, key: str) -> dict[str, Any] | None:
        raw = self.db.scalar("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(raw) if raw else None

    def current(self) -> dict[str, Any] | None:
        """What the stored vectors are (a data folder from before this record: its old keys)."""
        found = self._state(EMBEDDING_KEY)
        if found is None:
            model, dim = self._state_value(LEGACY_MODEL_KEY), self._state_value(LEGACY_DIM_KEY)
            if model is not None and dim is not None:
                found = {"model": model, "backend": "torch", "identity": f"{model}|fp32", "dim": int(dim)}
        return found

    def _state_value(self, key: str) -> Any:
        raw = self.db.scalar("SELECT value FROM state WHERE key = ?", (key,))
        return None if raw is None else json.loads(raw)

    def set_current(self, record: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            self._write_current(conn, record)

    @staticmethod
    def _write_current(conn, record: dict[str, Any]) -> None:
        rows = [(EMBEDDING_KEY, json.dumps(record)), (LEGACY_DIM_KEY, json.dumps(record["dim"])),
                (LEGACY_MODEL_KEY, json.dumps(record["model"]))]
        conn.executemany("INSERT INTO state (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", rows)

    def target(self) -> dict[str, Any] | None:
        return self._state(NEXT_KEY)

    def begin(self, record: dict[str, Any]) -> None:
        """Start (or go on with) re-embedding into ``record``; rows of another target are dropped."""
        with self.db.transaction() as conn:
            if (self.target() or {}).get("identity") != record["identity"]:
                conn.execute("DELETE FROM chunk_vectors_next")
            conn.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (NEXT_KEY, json.dumps(record)))

    def abandon(self) -> None:
        """No switch any more (the settings went back): drop what was written for it."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM chunk_vectors_next")
            conn.execute("DELETE FROM state WHERE key = ?", (NEXT_KEY,))

    def missing(self, limit: int) -> list[tuple[int, str]]:
        """Chunks (id, text) that have no new vector yet, oldest first."""
        return [(r[0], r[1]) for r in self.db.query(
            "SELECT c.id, c.text FROM chunks c LEFT JOIN chunk_vectors_next n ON n.chunk_id = c.id "
            "WHERE n.chunk_id IS NULL ORDER BY c.id LIMIT ?", (limit,))]

    def progress(self) -> tuple[int, int]:
        """(chunks with a new vector, all chunks)."""
        done = int(self.db.scalar("SELECT COUNT(*) FROM chunk_vectors_next") or 0)
        return done, int(self.db.scalar("SELECT COUNT(*) FROM chunks") or 0)

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> int:
        """Store new vectors; a chunk deleted meanwhile is skipped. Returns how many were kept."""
        import numpy as np

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.db.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR REPLACE INTO chunk_vectors_next (chunk_id, embedding) "
                "SELECT id, ? FROM chunks WHERE id = ?",
                [(vec.tobytes(), int(cid)) for cid, vec in zip(ids, vectors)])
            return conn.total_changes - before

    def ids(self) -> np.ndarray:
        import numpy as np

        rows = self.db.conn.execute("SELECT chunk_id FROM chunk_vectors_next ORDER BY chunk_id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """New vectors in the order of ``ids`` (missing ids skipped): the aside index's fetch."""
        import numpy as np

        ids = [int(i) for i in ids]
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), 900):
            part = ids[start:start + 900]
            marks = ",".join("?" * len(part))
            for r in self.db.query(f"SELECT chunk_id, embedding FROM chunk_vectors_next "
                                   f"WHERE chunk_id IN ({marks})", tuple(part)):
                found[r[0]] = np.frombuffer(r[1], dtype=np.float32)
        rows = [found[i] for i in ids if i in found]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def promote(self) -> bool:
        """Make the new vectors THE vectors, with their record, in one transaction; False (and no
        change) when a chunk still lacks one (it arrived meanwhile: embed it first)."""
        with self.db.transaction() as conn:
            target = self.target()
            lacking = conn.execute(
                "SELECT COUNT(*) FROM chunks c LEFT JOIN chunk_vectors_next n ON n.chunk_id = c.id "
                "WHERE n.chunk_id IS NULL").fetchone()[0]
            if target is None or lacking:
                return False
            conn.execute("UPDATE chunks SET embedding = (SELECT n.embedding FROM chunk_vectors_next n "
                         "WHERE n.chunk_id = chunks.id)")
            conn.execute("DELETE FROM chunk_vectors_next")
            conn.execute("DELETE FROM state WHERE key = ?", (NEXT_KEY,))
            self._write_current(conn, target)
        return True
