"""The full-text (FTS5) index of the chunks: the keyword side of hybrid retrieval.

``chunks_fts`` is an external-content FTS5 table over ``chunks.text``: it stores only the index,
not a second copy of the text. Triggers on ``chunks`` write it inside the very statement (so the
very transaction) that inserts, updates or deletes a chunk, including the deletes that cascade
from a document, so it cannot disagree with the chunks; ``repair`` at start covers a table
dropped or emptied behind the store's back.

User text never reaches ``MATCH`` as syntax: callers hand word groups, and each group becomes one
double-quoted FTS5 phrase (quotes doubled), so ``AND``, ``*``, ``:`` or a lone ``"`` are words,
never operators.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:  # the database applies migration 008, which builds this table
    from store.database import Database

TABLE = "chunks_fts"
MAX_GROUPS = 64
"""Most phrases one query may OR together (a pasted page must not become a huge MATCH)."""

SCHEMA = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(
        text, content='chunks', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO {TABLE} (rowid, text) VALUES (new.id, new.text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO {TABLE} ({TABLE}, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_update AFTER UPDATE OF id, text ON chunks BEGIN
        INSERT INTO {TABLE} ({TABLE}, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO {TABLE} (rowid, text) VALUES (new.id, new.text);
    END""",
]
"""The table and the triggers that keep it in step with ``chunks`` (migration 008 and repair)."""

_REBUILD = f"INSERT INTO {TABLE} ({TABLE}) VALUES ('rebuild')"
_TRIGGERS = (f"{TABLE}_insert", f"{TABLE}_delete", f"{TABLE}_update")


class FullTextRepair(BaseModel):
    """What opening found: the chunks, the rows the index held, and whether it was rebuilt."""

    chunks: int
    indexed: int
    rebuilt: bool


def phrase(words: Sequence[str]) -> str:
    """One FTS5 phrase: the words inside double quotes, any quote in them doubled."""
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"'


def match_expression(groups: Sequence[Sequence[str]]) -> str:
    """Any of the phrases (OR), each a quoted FTS5 string; empty groups are left out."""
    quoted = dict.fromkeys(phrase(g) for g in groups if any(w.strip('"') for w in g))
    return " OR ".join(list(quoted)[:MAX_GROUPS])


def create(conn: sqlite3.Connection) -> None:
    """Create the table and its triggers where missing (inside the caller's transaction)."""
    for sql in SCHEMA:
        conn.execute(sql)


def backfill(conn: sqlite3.Connection) -> None:
    """Index every stored chunk again from ``chunks`` (FTS5's own rebuild)."""
    conn.execute(_REBUILD)


class FullTextIndex:
    """BM25 search over the chunks and the check that keeps the index whole."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def search(self, groups: Sequence[Sequence[str]], limit: int) -> list[tuple[int, float]]:
        """(chunk id, bm25) of the chunks matching any phrase, best first (lower bm25 is better)."""
        expression = match_expression(groups)
        if not expression or limit <= 0:
            return []
        rows = self.db.query(
            f"SELECT rowid, bm25({TABLE}) AS score FROM {TABLE} WHERE {TABLE} MATCH ? "
            "ORDER BY score LIMIT ?", (expression, int(limit)))
        return [(int(r[0]), float(r[1])) for r in rows]

    def containing(self, words: Sequence[str], limit: int) -> dict[int, str]:
        """Text of the chunks holding the words as one phrase (FTS5's tokens: callers check the
        exact characters), best first."""
        expression = match_expression([words])
        if not expression or limit <= 0:
            return {}
        rows = self.db.query(
            f"SELECT c.id, c.text FROM {TABLE} f JOIN chunks c ON c.id = f.rowid "
            f"WHERE {TABLE} MATCH ? ORDER BY bm25({TABLE}) LIMIT ?", (expression, int(limit)))
        return {int(r[0]): r[1] for r in rows}

    def repair(self) -> FullTextRepair:
        """Recreate what is missing and rebuild the index when it holds other rows than ``chunks``.

        The index's own row list (``chunks_fts_docsize``) is compared with the chunks by count and
        id sum, which catches a dropped, emptied or stale index without reading any text.
        """
        with self.db.transaction() as conn:
            missing = not self._complete(conn)
            create(conn)
            truth = conn.execute("SELECT COUNT(*), COALESCE(SUM(id), 0) FROM chunks").fetchone()
            held = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM(id), 0) FROM {TABLE}_docsize").fetchone()
            rebuilt = missing or tuple(truth) != tuple(held)
            if rebuilt:
                backfill(conn)
        return FullTextRepair(chunks=int(truth[0]), indexed=int(held[0]), rebuilt=rebuilt)

    @staticmethod
    def _complete(conn: sqlite3.Connection) -> bool:
        names = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE name = ? OR name IN (?, ?, ?)", (TABLE, *_TRIGGERS))}
        return names == {TABLE, *_TRIGGERS}
