"""Sentence-window vectors of each chunk, beside the chunk: the hybrid search's re-rank reads them.

``rag.sentence_rerank`` re-ranks a search's best chunks by their most similar window of two
consecutive sentences. Embedding those windows while the person waits took seconds, so they are
embedded once, in the background, and kept here. A row holds one chunk's window vectors
(``[windows, dim]`` float16, in safetensors bytes: nothing is unpickled) under the embedding
identity that made them. Vectors of another identity are never compared with a question's: they
read as missing and are made again. The foreign key deletes them with the chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from store.database import Database

if TYPE_CHECKING:
    import numpy as np


def pack(vectors: np.ndarray) -> bytes:
    """One chunk's window vectors as float16 safetensors bytes."""
    import numpy as np
    from safetensors.numpy import save

    return save({"vectors": np.ascontiguousarray(vectors, dtype=np.float16)})


def unpack(blob: bytes) -> np.ndarray:
    """The ``[windows, dim]`` float16 vectors ``pack`` wrote."""
    from safetensors.numpy import load

    return load(blob)["vectors"]


_MISSING = ("FROM chunks c LEFT JOIN chunk_windows w ON w.chunk_id = c.id AND w.identity = ? "
            "WHERE w.chunk_id IS NULL")
"""The chunks with no windows under one identity (the parameter)."""


class ChunkWindowStore:
    """Writes and reads chunks' window vectors, keyed by chunk id."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, identity: str, rows: Iterable[tuple[int, np.ndarray]]) -> int:
        """Store (chunk id, vectors) rows under ``identity`` in one transaction; a chunk deleted
        meanwhile is skipped. Returns how many were stored."""
        packed = [(int(cid), identity, pack(vectors)) for cid, vectors in rows]
        with self.db.transaction() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR REPLACE INTO chunk_windows (chunk_id, identity, vectors) "
                             "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)",
                             [(*row, row[0]) for row in packed])
            return conn.total_changes - before

    def get(self, ids: list[int], identity: str) -> dict[int, np.ndarray]:
        """The window vectors of each chunk of ``ids`` stored under ``identity`` (float16)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.query(f"SELECT chunk_id, vectors FROM chunk_windows WHERE identity = ? "
                             f"AND chunk_id IN ({marks})", (identity, *map(int, ids)))
        return {int(cid): unpack(blob) for cid, blob in rows}

    def missing(self, identity: str, limit: int, after: int = -1) -> list[tuple[int, str]]:
        """Up to ``limit`` (chunk id, text) of chunks past id ``after`` with no windows under
        ``identity``, oldest first (a fill goes on from its last batch, not from the start)."""
        return [(int(cid), text) for cid, text in self.db.query(
            f"SELECT c.id, c.text {_MISSING} AND c.id > ? ORDER BY c.id LIMIT ?", (identity, after, limit))]

    def newest_missing(self, identity: str) -> int | None:
        """The newest chunk with no windows under ``identity`` (None: every chunk has them)."""
        found = self.db.scalar(f"SELECT max(c.id) {_MISSING}", (identity,))
        return None if found is None else int(found)

    def count_missing(self, identity: str) -> int:
        """How many chunks have no windows under ``identity``."""
        return int(self.db.scalar(f"SELECT count(*) {_MISSING}", (identity,)) or 0)

    def drop_other(self, identity: str) -> int:
        """Delete rows of every other identity (the library was re-embedded); returns how many."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM chunk_windows WHERE identity != ?", (identity,)).rowcount
