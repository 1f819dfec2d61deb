"""A cited chunk with the chunks around it, from the same page: what a source view shows.

The store keeps a document's text as its chunks (each an exact slice of its page's text, with
character offsets), so the passage around a citation can be shown from the store alone, as it
was when the answer was given, even if the file has since changed or gone.
"""

from __future__ import annotations

from pydantic import BaseModel

from store.database import Database


class StoredChunk(BaseModel):
    id: int
    ord: int
    text: str
    page: int | None
    line_start: int
    line_end: int
    char_start: int
    char_end: int


class ChunkWindow(BaseModel):
    document_id: int
    path: str
    cited: StoredChunk
    chunks: list[StoredChunk]  # in order, the cited one among them
    more_before: bool
    more_after: bool


_COLUMNS = "c.id, c.ord, c.text, c.page, c.line_start, c.line_end, c.char_start, c.char_end"


def chunk_window(db: Database, chunk_id: int, radius: int = 12) -> ChunkWindow | None:
    """The chunk ``chunk_id`` and up to ``radius`` chunks either side on its page; None if gone."""
    row = db.conn.execute(f"SELECT {_COLUMNS}, c.document_id, d.path FROM chunks c "
                          "JOIN documents d ON d.id = c.document_id WHERE c.id = ?", (chunk_id,)).fetchone()
    if row is None:
        return None
    cited = StoredChunk(**{k: row[k] for k in StoredChunk.model_fields})
    same_page = "c.document_id = ? AND c.page IS ?"
    rows = db.query(f"SELECT {_COLUMNS} FROM chunks c WHERE {same_page} AND c.ord BETWEEN ? AND ? "
                    "ORDER BY c.ord", (row["document_id"], cited.page, cited.ord - radius, cited.ord + radius))
    chunks = [StoredChunk(**dict(r)) for r in rows]
    low, high = db.conn.execute(f"SELECT MIN(c.ord), MAX(c.ord) FROM chunks c WHERE {same_page}",
                                (row["document_id"], cited.page)).fetchone()
    return ChunkWindow(document_id=row["document_id"], path=row["path"], cited=cited, chunks=chunks,
                       more_before=chunks[0].ord > low, more_after=chunks[-1].ord < high)
