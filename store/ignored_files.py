"""Files the person asked Engram to forget: scans and folder events skip them until re-learned.

Forgetting a document that still sits in a watched folder would otherwise undo itself at the next
start-up scan, so the path is remembered here until the person asks for it to be learned again
(or stops watching its folder).
"""

from __future__ import annotations

from store.database import Database


class IgnoredFiles:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, path: str) -> None:
        self.db.execute("INSERT INTO ignored_files (path) VALUES (?) ON CONFLICT(path) DO NOTHING", (path,))

    def remove(self, path: str) -> bool:
        return self.db.execute("DELETE FROM ignored_files WHERE path = ?", (path,)).rowcount > 0

    def contains(self, path: str) -> bool:
        return self.db.scalar("SELECT 1 FROM ignored_files WHERE path = ?", (path,)) is not None

    def under(self, folder: str) -> set[str]:
        """Ignored paths inside ``folder`` (or equal to it)."""
        prefix = folder.rstrip("/") + "/"
        rows = self.db.query("SELECT path FROM ignored_files WHERE path = ? OR substr(path, 1, ?) = ?",
                             (folder, len(prefix), prefix))
        return {r[0] for r in rows}

    def remove_under(self, folder: str) -> int:
        prefix = folder.rstrip("/") + "/"
        return self.db.execute("DELETE FROM ignored_files WHERE path = ? OR substr(path, 1, ?) = ?",
                               (folder, len(prefix), prefix)).rowcount
