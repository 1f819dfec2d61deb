"""Playbooks in SQLite, with full history.

Every version of a playbook is a snapshot row in ``playbooks`` (name, version, the bullets as
JSON, the delta that made it); ``playbook_bullets`` holds the live version's bullets for queries;
``playbook_deltas`` logs every delta, accepted or rejected, with its source and source episode,
time, reason and the figures of the check that decided it. A commit writes all three in one
transaction and only on top of the version it was computed from (``PlaybookConflict``
otherwise), so two writers can never interleave and a crash leaves the previous version whole.
Restoring a version commits its bullets as a new version: history only grows.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from store.database import Database

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Playbook names: letters, digits, ``_ . -``; no path separators, at most 64 characters."""

SECTIONS = ("general", "format", "units", "sources", "mistakes")
Section = Literal["general", "format", "units", "sources", "mistakes"]
BULLET_MAX_CHARS = 400


def valid_name(name: str) -> bool:
    return bool(re.fullmatch(NAME_PATTERN, name)) and ".." not in name


class Bullet(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int = Field(ge=1)
    section: Section = "general"
    content: str = Field(min_length=1, max_length=BULLET_MAX_CHARS)
    helpful: int = Field(0, ge=0)
    harmful: int = Field(0, ge=0)

    @property
    def score(self) -> int:
        return self.helpful - self.harmful


class Playbook(BaseModel):
    """One version of a named playbook."""

    name: str
    version: int = Field(0, ge=0)
    next_id: int = Field(1, ge=1, description="Ids are never reused, so history stays readable.")
    bullets: list[Bullet] = Field(default_factory=list)

    def get(self, bullet_id: int) -> Bullet | None:
        return next((b for b in self.bullets if b.id == bullet_id), None)

    @property
    def ids(self) -> set[int]:
        return {b.id for b in self.bullets}


class PlaybookSummary(BaseModel):
    name: str
    version: int
    bullets: int
    updated_at: str


class VersionRow(BaseModel):
    version: int
    created_at: str
    delta_id: int | None
    source: str | None
    bullets: int


class DeltaRow(BaseModel):
    id: int
    playbook: str
    ts: str
    source: str
    episode_id: int | None
    operations: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    status: Literal["accepted", "rejected"]
    reason: str | None
    changes: list[str]
    figures: dict[str, Any]
    version_before: int | None
    version_after: int | None


class DeltaRecord(BaseModel):
    """What is logged about a delta, whatever became of it."""

    source: str
    episode_id: int | None = None
    operations: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[dict[str, Any]] = Field(default_factory=list)
    changes: list[str] = Field(default_factory=list)
    figures: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None


class PlaybookConflict(RuntimeError):
    """The playbook changed since the version a change was computed from."""


def _snapshot(playbook: Playbook) -> str:
    return json.dumps({"next_id": playbook.next_id,
                       "bullets": [b.model_dump() for b in playbook.bullets]})


def _delta_row(row: Any) -> DeltaRow:
    data = dict(row)
    for key in ("operations", "tags", "changes", "figures"):
        data[key] = json.loads(data[key])
    return DeltaRow(**data)


class PlaybookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- reading ----------------------------------------------------------------------------
    def head_version(self, name: str) -> int | None:
        return self.db.scalar("SELECT MAX(version) FROM playbooks WHERE name = ?", (name,))

    def exists(self, name: str) -> bool:
        return self.head_version(name) is not None

    def version(self, name: str, version: int) -> Playbook | None:
        row = self.db.conn.execute("SELECT content FROM playbooks WHERE name = ? AND version = ?",
                                   (name, version)).fetchone()
        if row is None:
            return None
        content = json.loads(row[0])
        return Playbook(name=name, version=version, next_id=content["next_id"],
                        bullets=[Bullet(**b) for b in content["bullets"]])

    def load(self, name: str) -> Playbook:
        """The live version (an empty version 0 when the playbook does not exist yet)."""
        head = self.head_version(name)
        found = self.version(name, head) if head is not None else None
        return found or Playbook(name=name)

    def list(self) -> list[PlaybookSummary]:
        rows = self.db.query(
            "SELECT p.name, p.version, p.created_at, p.content FROM playbooks p "
            "WHERE p.version = (SELECT MAX(version) FROM playbooks q WHERE q.name = p.name) "
            "ORDER BY p.name")
        return [PlaybookSummary(name=r["name"], version=r["version"], updated_at=r["created_at"],
                                bullets=len(json.loads(r["content"])["bullets"])) for r in rows]

    def versions(self, name: str) -> list[VersionRow]:
        rows = self.db.query(
            "SELECT p.version, p.created_at, p.delta_id, d.source, p.content FROM playbooks p "
            "LEFT JOIN playbook_deltas d ON d.id = p.delta_id WHERE p.name = ? ORDER BY p.version",
            (name,))
        return [VersionRow(version=r["version"], created_at=r["created_at"], delta_id=r["delta_id"],
                           source=r["source"], bullets=len(json.loads(r["content"])["bullets"]))
                for r in rows]

    def deltas(self, name: str, limit: int = 100, status: str | None = None) -> list[DeltaRow]:
        """The latest deltas of ``name``, newest first."""
        sql = "SELECT * FROM playbook_deltas WHERE playbook = ?"
        params: tuple = (name,)
        if status:
            sql += " AND status = ?"
            params += (status,)
        rows = self.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_delta_row(r) for r in rows]

    def delta_counts(self, name: str) -> dict[str, int]:
        counts = {"accepted": 0, "rejected": 0}
        counts.update({r[0]: r[1] for r in self.db.query(
            "SELECT status, COUNT(*) FROM playbook_deltas WHERE playbook = ? GROUP BY status", (name,))})
        return counts

    def delta(self, delta_id: int) -> DeltaRow | None:
        row = self.db.conn.execute("SELECT * FROM playbook_deltas WHERE id = ?", (delta_id,)).fetchone()
        return _delta_row(row) if row else None

    def episodes_with_deltas(self, episode_ids: list[int]) -> set[int]:
        if not episode_ids:
            return set()
        marks = ",".join("?" * len(episode_ids))
        return {r[0] for r in self.db.query(
            f"SELECT DISTINCT episode_id FROM playbook_deltas WHERE episode_id IN ({marks})",
            tuple(episode_ids))}

    # --- writing ----------------------------------------------------------------------------
    def create(self, name: str) -> Playbook:
        """An empty playbook (version 0); ``ValueError`` for a bad name, ``FileExistsError`` when
        one with that name exists."""
        if not valid_name(name):
            raise ValueError(f"invalid playbook name {name!r}: use letters, digits, '_', '.' and '-' "
                             "(at most 64 characters, no path separators)")
        with self.db.transaction() as conn:
            if self.head_version(name) is not None:
                raise FileExistsError(f"a playbook named {name!r} exists")
            empty = Playbook(name=name)
            conn.execute("INSERT INTO playbooks (name, version, content) VALUES (?, 0, ?)",
                         (name, _snapshot(empty)))
        return empty

    def _log(self, conn: Any, name: str, record: DeltaRecord, status: str, before: int | None,
             after: int | None) -> int:
        cur = conn.execute(
            "INSERT INTO playbook_deltas (playbook, source, episode_id, operations, tags, status, "
            "reason, changes, figures, version_before, version_after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, record.source, record.episode_id, json.dumps(record.operations),
             json.dumps(record.tags), status, record.reason, json.dumps(record.changes),
             json.dumps(record.figures), before, after))
        return int(cur.lastrowid)

    def commit(self, playbook: Playbook, record: DeltaRecord) -> int:
        """Make ``playbook`` (computed from version ``playbook.version - 1``) the live version and
        log the delta; returns the delta's id. ``PlaybookConflict`` when the head moved."""
        if not valid_name(playbook.name):
            raise ValueError(f"invalid playbook name {playbook.name!r}")
        name, before = playbook.name, playbook.version - 1
        with self.db.transaction() as conn:
            head = self._ensure(conn, name) if before == 0 else self.head_version(name)
            if head != before:
                raise PlaybookConflict(f"playbook {name!r} is at version {head}, not {before}: "
                                       "it changed meanwhile")
            delta_id = self._log(conn, name, record, "accepted", before, playbook.version)
            conn.execute("INSERT INTO playbooks (name, version, content, delta_id) VALUES (?, ?, ?, ?)",
                         (name, playbook.version, _snapshot(playbook), delta_id))
            conn.execute("DELETE FROM playbook_bullets WHERE playbook = ?", (name,))
            conn.executemany(
                "INSERT INTO playbook_bullets (playbook, id, section, content, helpful, harmful) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(name, b.id, b.section, b.content, b.helpful, b.harmful) for b in playbook.bullets])
        return delta_id

    def reject(self, name: str, version: int, record: DeltaRecord) -> int:
        """Log a delta that was not applied (``record.reason`` says why); returns its id."""
        if not valid_name(name):
            raise ValueError(f"invalid playbook name {name!r}")
        with self.db.transaction() as conn:
            self._ensure(conn, name)
            return self._log(conn, name, record, "rejected", version, None)

    def _ensure(self, conn: Any, name: str) -> int:
        """The head version, creating the empty version 0 when the playbook does not exist yet
        (a playbook exists from the first change anyone logs for it)."""
        head = self.head_version(name)
        if head is None:
            conn.execute("INSERT INTO playbooks (name, version, content) VALUES (?, 0, ?)",
                         (name, _snapshot(Playbook(name=name))))
            head = 0
        return head
