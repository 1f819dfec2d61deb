"""A bundle import in progress, recorded in the store's state before it changes anything.

``engram bundle import`` writes this row before it applies a bundle and removes it once the
import is done, or undone whole. A row left behind means the import was cut short (the process
was killed, the machine stopped) or could not be undone: part of the bundle may be in place.
``engram doctor`` and the next start say so and name the backup to restore, when there is one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from pydantic import BaseModel, ValidationError

from store.database import Database

KEY = "bundle_import"


class ImportJournal(BaseModel):
    bundle: str
    """The bundle being imported."""
    backup: str | None = None
    """What was here before (``--replace``): importing it with ``--replace`` goes back."""
    replace: bool = False
    pid: int
    started: str


def begin_import(db: Database, bundle: str, backup: str | None, replace: bool, pid: int) -> None:
    record = ImportJournal(bundle=bundle, backup=backup, replace=replace, pid=pid,
                           started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               (KEY, record.model_dump_json()))


def end_import(db: Database) -> None:
    db.execute("DELETE FROM state WHERE key = ?", (KEY,))


def interrupted_import(db: Database) -> ImportJournal | None:
    """The import recorded as in progress, or None."""
    raw = db.scalar("SELECT value FROM state WHERE key = ?", (KEY,))
    if raw is None:
        return None
    try:
        return ImportJournal.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return ImportJournal(bundle="(unreadable record)", pid=0, started="")


def restore_advice(journal: ImportJournal) -> str:
    """What a person reads about an interrupted import, and what to do."""
    said = f"an import of {journal.bundle} (started {journal.started}) did not finish: part of it may be in place"
    if journal.backup:
        return (f"{said}; what was here before is saved in {journal.backup}: "
                f"`engram bundle import --replace {journal.backup}` restores it")
    return (f"{said}; it replaced nothing (no --replace), so what was here is still here: check the "
            "playbooks and learned weights, or import the bundle again with --replace")
