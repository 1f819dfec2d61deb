"""The hidden-state tier's side of the store: each chunk's last hidden states, beside the chunk.

A row holds one chunk's states under one model (``[tokens, hidden]`` float16) and the chunk's
token ids (int32), both in one safetensors body, so nothing is ever unpickled, with the
fingerprint of the weights that computed them (``weights``): states of other weights than the
model's now are stale, read as missing, and filled again. The foreign key deletes a chunk's
states with the chunk: a document re-indexed or forgotten takes them along.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from store.database import Database

if TYPE_CHECKING:
    import numpy as np


class ChunkStates(BaseModel):
    """What the tier holds, for ``stats`` and the CLI."""

    chunks: int
    documents: int
    tokens: int
    bytes: int
    missing_documents: int
    stale_chunks: int = 0


def pack(states: np.ndarray, ids: np.ndarray) -> bytes:
    """One chunk's states (float16) and token ids (int32) as safetensors bytes."""
    import numpy as np
    from safetensors.numpy import save

    return save({"states": np.ascontiguousarray(states, dtype=np.float16),
                 "ids": np.ascontiguousarray(ids, dtype=np.int32)})


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(states [tokens, hidden] float16, ids [tokens] int32) from ``pack``'s bytes."""
    from safetensors.numpy import load

    tensors = load(blob)
    return tensors["states"], tensors["ids"]


class ChunkStateStore:
    """Writes and reads chunks' hidden states, keyed by chunk id."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, model: str, rows: Iterable[tuple[int, np.ndarray, np.ndarray, str]]) -> int:
        """Store (chunk id, states, ids, weights fingerprint) rows under ``model``, in one
        transaction; a chunk deleted meanwhile is skipped. Returns how many were stored."""
        stored = 0
        with self.db.transaction() as conn:
            for chunk_id, states, ids, weights in rows:
                cur = conn.execute(
                    "INSERT OR REPLACE INTO chunk_states (chunk_id, model, weights, tokens, tensors) "
                    "SELECT id, ?, ?, ?, ? FROM chunks WHERE id = ?",
                    (model, weights, int(len(ids)), pack(states, ids), int(chunk_id)))
                stored += cur.rowcount
        return stored

    def get(self, chunk_ids: Iterable[int], model: str, weights: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The stored (states, ids) of those chunks computed by ``model`` with ``weights`` (chunks
        without any, or with stale ones, left out)."""
        ids = [int(c) for c in chunk_ids]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.query(f"SELECT chunk_id, tensors FROM chunk_states WHERE model = ? AND weights = ? "
                             f"AND chunk_id IN ({marks})", (model, weights, *ids))
        return {int(r[0]): unpack(r[1]) for r in rows}

    def stale(self, chunk_ids: Iterable[int], model: str, weights: str) -> list[int]:
        """Those chunks whose states were computed by ``model`` with other weights than ``weights``."""
        ids = [int(c) for c in chunk_ids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.db.query(f"SELECT chunk_id FROM chunk_states WHERE model = ? AND weights != ? "
                             f"AND chunk_id IN ({marks}) ORDER BY chunk_id", (model, weights, *ids))
        return [int(r[0]) for r in rows]

    def chunks_of(self, document_id: int) -> list[tuple[int, str]]:
        """(chunk id, text) of the document's chunks, in order."""
        rows = self.db.query("SELECT id, text FROM chunks WHERE document_id = ? ORDER BY ord", (document_id,))
        return [(int(r[0]), str(r[1])) for r in rows]

    def missing_documents(self, model: str, weights: str) -> list[int]:
        """Indexed documents with a chunk that has no states computed by ``model`` with
        ``weights`` (none, or stale ones), oldest first."""
        rows = self.db.query(
            "SELECT DISTINCT c.document_id FROM chunks c JOIN documents d ON d.id = c.document_id "
            "LEFT JOIN chunk_states s ON s.chunk_id = c.id AND s.model = ? AND s.weights = ? "
            "WHERE d.status = 'indexed' AND s.chunk_id IS NULL ORDER BY c.document_id", (model, weights))
        return [int(r[0]) for r in rows]

    def of_document(self, document_id: int) -> int:
        """How many of the document's chunks have states (any model)."""
        return int(self.db.scalar("SELECT COUNT(*) FROM chunk_states s JOIN chunks c ON c.id = s.chunk_id "
                                  "WHERE c.document_id = ?", (document_id,)) or 0)

    def summary(self, model: str | None = None, weights: str | None = None) -> ChunkStates:
        """What is stored (any model, or what ``model`` computed with ``weights``: then
        ``missing_documents`` and ``stale_chunks`` are counted too)."""
        if model is None or weights is None:
            where, args, missing, stale = "1", (), 0, 0
        else:
            where, args = "s.model = ? AND s.weights = ?", (model, weights)
            missing = len(self.missing_documents(model, weights))
            stale = int(self.db.scalar("SELECT COUNT(*) FROM chunk_states WHERE model = ? AND weights != ?",
                                       (model, weights)) or 0)
        row = self.db.query(
            "SELECT COUNT(*), COUNT(DISTINCT c.document_id), COALESCE(SUM(s.tokens), 0), "
            "COALESCE(SUM(length(s.tensors)), 0) FROM chunk_states s JOIN chunks c ON c.id = s.chunk_id "
            f"WHERE {where}", args)[0]
        return ChunkStates(chunks=int(row[0]), documents=int(row[1]), tokens=int(row[2]), bytes=int(row[3]),
                           missing_documents=missing, stale_chunks=stale)

    def clear(self) -> int:
        """Drop every stored state (say the neocortex model changed)."""
        return self.db.execute("DELETE FROM chunk_states").rowcount
