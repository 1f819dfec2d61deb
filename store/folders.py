"""Watched folders."""

from __future__ import annotations

from pydantic import BaseModel

from store.database import Database


class FolderRow(BaseModel):
    id: int
    path: str
    added_at: str
    is_default: bool


class WatchedFolder(FolderRow):
    """A watched folder and how many stored documents it holds (the Library's folder list)."""

    documents: int = 0


class FolderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, path: str, is_default: bool = False) -> FolderRow:
        self.db.execute(
            "INSERT INTO folders (path, is_default) VALUES (?, ?) ON CONFLICT(path) DO NOTHING",
            (path, int(is_default)),
        )
        return self.get(path)  # type: ignore[return-value]

    def get(self, path: str) -> FolderRow | None:
        row = self.db.conn.execute("SELECT * FROM folders WHERE path = ?", (path,)).fetchone()
        return FolderRow(**dict(row)) if row else None

    def remove(self, path: str) -> bool:
        return self.db.execute("DELETE FROM folders WHERE path = ?", (path,)).rowcount > 0

    def list(self) -> list[FolderRow]:
        return [FolderRow(**dict(r)) for r in self.db.query("SELECT * FROM folders ORDER BY path")]

    def watched(self) -> list[WatchedFolder]:
        """Every folder, by path, with its stored documents counted."""
        rows = self.db.query("SELECT f.*, COUNT(d.id) AS documents FROM folders f "
                             "LEFT JOIN documents d ON d.folder_id = f.id GROUP BY f.id ORDER BY f.path")
        return [WatchedFolder(**dict(r)) for r in rows]

    def owner(self, file_path: str) -> FolderRow | None:
        """The watched folder containing a file (the deepest one when folders nest)."""
        best = None
        for folder in self.list():
            prefix = folder.path.rstrip("/") + "/"
            if file_path.startswith(prefix) and (best is None or len(folder.path) > len(best.path)):
                best = folder
        return best
