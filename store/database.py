"""SQLite access: one file, WAL mode, a connection per thread, versioned migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from store.migrations import MIGRATIONS

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_MS = 30_000


class Database:
    """Thread-safe handle on ``store.db``.

    SQLite connections must not cross threads, so each thread gets its own; WAL lets the worker
    write while the UI and CLI read. ``transaction()`` wraps multi-row changes so a crash leaves
    either all of a change or none of it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @property
    def utils(self) -> sqlite_utils.Database:
        """sqlite-utils view of this thread's connection (table creation, bulk inserts).

        Imported here, not at the top: it imports pandas when installed (a quarter of a second),
        and opening an up-to-date store needs neither."""
        db = getattr(self._local, "utils", None)
        if db is None:
            import sqlite_utils

            db = sqlite_utils.Database(self.conn)
            self._local.utils = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; nested calls join the outer."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple | dict = ()):
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def quick_check(self) -> str:
        """SQLite's own consistency check: "ok", or what it found damaged (``engram doctor``)."""
        return str(self.scalar("PRAGMA quick_check"))

    def schema_version(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM _migrations") or 0)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._all.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        """Apply, in order and each in its own transaction, the migrations not yet recorded."""
        conn = self.conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
        for name, migrate in MIGRATIONS:
            if name in done:
                continue
            with self.transaction():
                if conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone():
                    continue  # another process applied it while we waited for the lock
                migrate(self.utils)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", (name,)
                )
