"""The Library's view of documents: one page of them, each with the status a person cares about.

A stored row says whether a file was read; the person wants to know more: is it still queued
(a new file not stored yet, or a changed one waiting), being learned by an engine, learned, or
unreadable, or was it forgotten on request. That status is worked out here from the documents,
the open jobs and the ignored files, in SQL, so paging and filtering stay cheap with many files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from store.database import Database
from store.jobs import INGEST, LEARN

DisplayStatus = Literal["learned", "learning", "pending", "error", "ignored"]
STATUSES: tuple[DisplayStatus, ...] = ("learned", "learning", "pending", "error", "ignored")


class ListedDocument(BaseModel):
    id: int | None  # None while a new file waits for its first ingestion
    path: str
    status: DisplayStatus
    error: str | None = None
    chunks: int = 0
    size: int | None = None
    updated_at: str | None = None


class DocumentPage(BaseModel):
    items: list[ListedDocument]
    total: int  # matching the filter
    offset: int
    limit: int
    counts: dict[str, int]  # every document by status, ignoring the filter


_LISTING = f"""
WITH open_ingest AS (
    SELECT DISTINCT key AS path FROM jobs
    WHERE kind = '{INGEST}' AND status IN ('pending', 'running') AND key IS NOT NULL
),
open_learn AS (
    SELECT DISTINCT CAST(json_extract(payload, '$.document_id') AS INTEGER) AS document_id FROM jobs
    WHERE kind = '{LEARN}' AND status IN ('pending', 'running')
),
listing AS (
    SELECT d.id, d.path,
        CASE WHEN d.path IN (SELECT path FROM open_ingest) OR d.status = 'pending' THEN 'pending'
             WHEN d.status = 'error' THEN 'error'
             WHEN d.id IN (SELECT document_id FROM open_learn) THEN 'learning'
             ELSE 'learned' END AS status,
        d.error, d.chunk_count AS chunks, d.size, d.updated_at
    FROM documents d
    UNION ALL
    SELECT NULL, o.path, 'pending', NULL, 0, NULL, NULL FROM open_ingest o
    WHERE engram_listed(o.path) AND o.path NOT IN (SELECT path FROM documents)
        AND o.path NOT IN (SELECT path FROM ignored_files)
    UNION ALL
    SELECT NULL, i.path, 'ignored', NULL, 0, NULL, i.ignored_at FROM ignored_files i
    WHERE i.path NOT IN (SELECT path FROM documents)
)
"""


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_documents(db: Database, listed: Callable[[str], bool], status: DisplayStatus | None = None,
                   text: str = "", limit: int = 50, offset: int = 0) -> DocumentPage:
    """Documents ordered by path; ``listed`` tells which queued paths name documents at all
    (a queued folder or an unsupported file is not shown as a pending document)."""
    conn = db.conn
    conn.create_function("engram_listed", 1, lambda p: bool(listed(p)), deterministic=True)
    where = "WHERE (:status IS NULL OR status = :status) AND (:text = '' OR path LIKE :like ESCAPE '\\')"
    params = {"status": status, "text": text.strip(), "like": _like(text.strip()),
              "limit": max(1, limit), "offset": max(0, offset)}
    rows = conn.execute(f"{_LISTING} SELECT * FROM listing {where} ORDER BY path "
                        "LIMIT :limit OFFSET :offset", params).fetchall()
    total = conn.execute(f"{_LISTING} SELECT COUNT(*) FROM listing {where}", params).fetchone()[0]
    counts = dict.fromkeys(STATUSES, 0)
    for name, count in conn.execute(f"{_LISTING} SELECT status, COUNT(*) FROM listing GROUP BY status"):
        counts[name] = count
    return DocumentPage(items=[ListedDocument(**dict(r)) for r in rows], total=total,
                        offset=params["offset"], limit=params["limit"], counts=counts)
