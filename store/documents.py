"""Documents and their chunks: the SQLite side of the index.

Each chunk row carries its embedding, so the FAISS index can always be rebuilt from SQLite alone,
and a document's chunks are replaced in one transaction: a crash leaves the old set or the new
set, never a mix. numpy is imported by the methods that handle vectors: ``engram status`` reads
this store without loading it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from store.database import Database

if TYPE_CHECKING:
    import numpy as np


class NewChunk(BaseModel):
    """One chunk as the chunker cut it, about to be stored. Char offsets are within its section's
    text (end exclusive); lines are 1-based lines of the source file; page is the PDF page or None."""

    text: str
    page: int | None = None
    line_start: int
    line_end: int
    char_start: int
    char_end: int
    token_count: int


class DocumentRow(BaseModel):
    id: int
    path: str
    folder_id: int | None
    content_hash: str | None
    size: int | None
    mtime: float | None
    status: str
    error: str | None
    chunk_count: int
    indexed_at: str | None
    updated_at: str


class ChunkRow(BaseModel):
    id: int
    document_id: int
    path: str
    ord: int
    text: str
    page: int | None
    line_start: int
    line_end: int


class FileState(BaseModel):
    """What the store knows about a file, enough to skip it when nothing changed."""

    size: int | None
    mtime: float | None
    content_hash: str | None
    status: str


class DocumentStore:
    """Reads and writes documents and chunks; returns the chunk ids the vector index must drop/add."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- reads -------------------------------------------------------------------------------
    def get(self, path: str) -> DocumentRow | None:
        row = self.db.conn.execute("SELECT * FROM documents WHERE path = ?", (path,)).fetchone()
        return DocumentRow(**dict(row)) if row else None

    def by_id(self, document_id: int) -> DocumentRow | None:
        row = self.db.conn.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
        return DocumentRow(**dict(row)) if row else None

    def ids_by_path(self) -> dict[str, int]:
        """Every stored document's id by its path (benches map their files to documents)."""
        return {r["path"]: r["id"] for r in self.db.query("SELECT id, path FROM documents")}

    def list(self, status: str | None = None, limit: int = 1000, offset: int = 0) -> list[DocumentRow]:
        sql = "SELECT * FROM documents"
        params: tuple = ()
        if status:
            sql += " WHERE status = ?"
            params = (status,)
        sql += " ORDER BY path LIMIT ? OFFSET ?"
        rows = self.db.query(sql, params + (limit, offset))
        return [DocumentRow(**dict(r)) for r in rows]

    def file_states(self, under: str) -> dict[str, FileState]:
        """Known files below a folder (by path prefix), for change detection during a scan."""
        prefix = under.rstrip("/") + "/"
        rows = self.db.query(
            "SELECT path, size, mtime, content_hash, status FROM documents "
            "WHERE substr(path, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {r["path"]: FileState(size=r["size"], mtime=r["mtime"],
                                     content_hash=r["content_hash"], status=r["status"]) for r in rows}

    def document_ids(self) -> set[int]:
        return {r[0] for r in self.db.conn.execute("SELECT id FROM documents").fetchall()}

    def chunk_texts(self, document_id: int) -> list[str]:
        """A document's chunks' text, in order."""
        return [r[0] for r in self.db.query("SELECT text FROM chunks WHERE document_id = ? ORDER BY ord",
                                            (document_id,))]

    def chunk_texts_by_id(self, ids: Iterable[int]) -> dict[int, str]:
        """The text of each chunk in ``ids`` that still exists (a cited chunk may be gone)."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {r[0]: r[1] for r in self.db.query(f"SELECT id, text FROM chunks WHERE id IN ({marks})",
                                                   tuple(ids))}

    def all_chunk_texts(self) -> list[str]:
        """Every chunk's text in id order (benches re-embed the whole store)."""
        return [r[0] for r in self.db.query("SELECT text FROM chunks ORDER BY id")]

    def chunk_ids(self) -> np.ndarray:
        import numpy as np

        rows = self.db.conn.execute("SELECT id FROM chunks ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored embeddings in the order of ``ids`` (missing ids are skipped)."""
        import numpy as np

        ids = [int(i) for i in ids]
        found = self.vectors_by_id(ids)
        rows = [found[i] for i in ids if i in found]
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    def vectors_by_id(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored embedding of each chunk in ``ids`` that still exists."""
        import numpy as np

        ids = [int(i) for i in ids]
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), 900):
            part = ids[start:start + 900]
            marks = ",".join("?" * len(part))
            for r in self.db.query(f"SELECT id, embedding FROM chunks WHERE id IN ({marks})", tuple(part)):
                found[r[0]] = np.frombuffer(r[1], dtype=np.float32)
        return found

    def chunks(self, ids: Iterable[int]) -> dict[int, ChunkRow]:
        """Chunk rows with their file path; ids that no longer exist are simply absent."""
        ids = [int(i) for i in ids if int(i) >= 0]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.query(
            "SELECT c.id, c.document_id, d.path, c.ord, c.text, c.page, c.line_start, c.line_end "
            f"FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({marks})",
            tuple(ids),
        )
        return {r["id"]: ChunkRow(**dict(r)) for r in rows}

    def counts(self) -> dict[str, int]:
        out = {"documents": 0, "indexed": 0, "pending": 0, "error": 0}
        for r in self.db.query("SELECT status, COUNT(*) FROM documents GROUP BY status"):
            out[r[0]] = r[1]
            out["documents"] += r[1]
        out["chunks"] = int(self.db.scalar("SELECT COUNT(*) FROM chunks") or 0)
        return out

    def errors(self, limit: int = 50) -> list[DocumentRow]:
        return self.list(status="error", limit=limit)

    # --- writes ------------------------------------------------------------------------------
    def replace(
        self,
        path: str,
        folder_id: int | None,
        content_hash: str,
        size: int,
        mtime: float,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
    ) -> tuple[int, list[int], list[int]]:
        """Store a document's new chunks in one transaction; returns (doc id, removed, added ids)."""
        import numpy as np

        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.db.transaction() as conn:
            doc_id = self._upsert(conn, path, folder_id, content_hash, size, mtime, "indexed", None, len(chunks))
            removed = self._delete_chunks(conn, doc_id)
            added = []
            for ord_, (chunk, vec) in enumerate(zip(chunks, vectors)):
                cur = conn.execute(
                    "INSERT INTO chunks (document_id, ord, text, page, line_start, line_end, "
                    "char_start, char_end, token_count, embedding) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (doc_id, ord_, chunk.text, chunk.page, chunk.line_start, chunk.line_end,
                     chunk.char_start, chunk.char_end, chunk.token_count, vec.tobytes()),
                )
                added.append(int(cur.lastrowid))
            conn.execute(
                "INSERT INTO episodes (kind, document_id, payload) VALUES ('ingest', ?, ?)",
                (doc_id, json.dumps({"path": path, "chunks": len(chunks), "hash": content_hash})),
            )
        return doc_id, removed, added

    def record_error(
        self, path: str, folder_id: int | None, error: str,
        content_hash: str | None = None, size: int | None = None, mtime: float | None = None,
    ) -> list[int]:
        """Mark a file unreadable (its old chunks leave: they no longer reflect the file)."""
        with self.db.transaction() as conn:
            doc_id = self._upsert(conn, path, folder_id, content_hash, size, mtime, "error", error, 0)
            return self._delete_chunks(conn, doc_id)

    def touch(self, path: str, size: int, mtime: float) -> None:
        """Same content under a new mtime: remember it so the next scan skips the file cheaply."""
        self.db.execute(
            "UPDATE documents SET size = ?, mtime = ?, updated_at = datetime('now') WHERE path = ?",
            (size, mtime, path),
        )

    def clear_hash(self, path: str) -> bool:
        """Make the next ingest job for ``path`` read it again even if its content is unchanged."""
        return self.db.execute("UPDATE documents SET content_hash = NULL WHERE path = ?", (path,)).rowcount > 0

    def remove(self, path: str) -> list[int]:
        """Forget one file; returns the chunk ids whose vectors must leave the index."""
        return self.remove_many([path])

    def remove_many(self, paths: Iterable[str]) -> list[int]:
        removed: list[int] = []
        with self.db.transaction() as conn:
            for path in paths:
                row = conn.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
                if row is None:
                    continue
                removed += self._delete_chunks(conn, row[0])
                conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
                conn.execute(
                    "INSERT INTO episodes (kind, payload) VALUES ('forget', ?)", (json.dumps({"path": path}),)
                )
        return removed

    def paths_under(self, prefix: str) -> list[str]:
        """Stored paths equal to ``prefix`` or inside it as a folder."""
        folder = prefix.rstrip("/") + "/"
        rows = self.db.query(
            "SELECT path FROM documents WHERE path = ? OR substr(path, 1, ?) = ?",
            (prefix, len(folder), folder),
        )
        return [r[0] for r in rows]

    @staticmethod
    def _upsert(
        conn: sqlite3.Connection, path: str, folder_id: int | None, content_hash: str | None,
        size: int | None, mtime: float | None, status: str, error: str | None, chunk_count: int,
    ) -> int:
        indexed_at = "datetime('now')" if status == "indexed" else "NULL"
        row = conn.execute(
            "INSERT INTO documents (path, folder_id, content_hash, size, mtime, status, error, "
            f"chunk_count, indexed_at) VALUES (?,?,?,?,?,?,?,?,{indexed_at}) "
            "ON CONFLICT(path) DO UPDATE SET folder_id = excluded.folder_id, "
            "content_hash = excluded.content_hash, size = excluded.size, mtime = excluded.mtime, "
            "status = excluded.status, error = excluded.error, chunk_count = excluded.chunk_count, "
            "indexed_at = excluded.indexed_at, updated_at = datetime('now') RETURNING id",
            (path, folder_id, content_hash, size, mtime, status, error, chunk_count),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _delete_chunks(conn: sqlite3.Connection, doc_id: int) -> list[int]:
        ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE document_id = ?", (doc_id,))]
        conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
        return ids
