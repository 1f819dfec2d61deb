"""A playbook's whole history as plain rows, read out and written back (bundles move it).

``store.playbooks`` only ever appends: a commit adds a version on top of the last. A bundle
carries every version and every delta, so importing one writes the history as it was, under new
row ids, in one transaction: a failure leaves the store as it was. Episodes do not travel with
a bundle, so an imported delta's ``episode_id`` is kept in its ``figures`` (``source_episode``)
and the column is left empty.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from store.database import Database
from store.playbooks import Bullet, DeltaRow, valid_name


class VersionSnapshot(BaseModel):
    """One version of a playbook as stored (``delta_id`` names a delta of the same history)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=0)
    created_at: str = Field(max_length=64)
    delta_id: int | None = Field(None, ge=1)
    next_id: int = Field(ge=1)
    bullets: list[Bullet] = Field(max_length=100_000)


class PlaybookHistory(BaseModel):
    """Every version and every delta (accepted or rejected) of one playbook."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    versions: list[VersionSnapshot]
    deltas: list[DeltaRow] = Field(default_factory=list)


def read_history(db: Database, name: str) -> PlaybookHistory:
    """``name``'s history as stored (no versions: the playbook does not exist)."""
    versions = [
        VersionSnapshot(version=r["version"], created_at=r["created_at"], delta_id=r["delta_id"],
                        **json.loads(r["content"]))
        for r in db.query("SELECT version, created_at, delta_id, content FROM playbooks "
                          "WHERE name = ? ORDER BY version", (name,))]
    rows = db.query("SELECT * FROM playbook_deltas WHERE playbook = ? ORDER BY id", (name,))
    deltas = []
    for row in rows:
        data = dict(row)
        for key in ("operations", "tags", "changes", "figures"):
            data[key] = json.loads(data[key])
        deltas.append(DeltaRow(**data))
    return PlaybookHistory(name=name, versions=versions, deltas=deltas)


def delete_history(conn: Any, name: str) -> None:
    """Remove every row of playbook ``name`` (inside the caller's transaction)."""
    for table, column in (("playbooks", "name"), ("playbook_bullets", "playbook"),
                          ("playbook_deltas", "playbook")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))


def write_histories(db: Database, histories: list[PlaybookHistory], replace: set[str]) -> None:
    """Write each history in one transaction; names in ``replace`` lose their rows first, any
    other name that exists already is refused (``FileExistsError``) and nothing is written."""
    with db.transaction() as conn:
        for history in histories:
            name = history.name
            if not valid_name(name):
                raise ValueError(f"invalid playbook name {name!r}")
            if name in replace:
                delete_history(conn, name)
            elif db.scalar("SELECT 1 FROM playbooks WHERE name = ? LIMIT 1", (name,)):
                raise FileExistsError(f"a playbook named {name!r} exists")
            _insert(conn, history)


def _insert(conn: Any, history: PlaybookHistory) -> None:
    name, new_ids = history.name, {}
    for d in history.deltas:
        figures = dict(d.figures)
        if d.episode_id is not None:
            figures["source_episode"] = d.episode_id
        cur = conn.execute(
            "INSERT INTO playbook_deltas (playbook, ts, source, episode_id, operations, tags, status, "
            "reason, changes, figures, version_before, version_after) "
            "VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, d.ts, d.source, json.dumps(d.operations), json.dumps(d.tags), d.status, d.reason,
             json.dumps(d.changes), json.dumps(figures), d.version_before, d.version_after))
        new_ids[d.id] = int(cur.lastrowid)
    for v in history.versions:
        content = json.dumps({"next_id": v.next_id, "bullets": [b.model_dump() for b in v.bullets]})
        conn.execute("INSERT INTO playbooks (name, version, created_at, content, delta_id) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (name, v.version, v.created_at, content, new_ids.get(v.delta_id)))
    if history.versions:
        head = max(history.versions, key=lambda v: v.version)
        conn.executemany(
            "INSERT INTO playbook_bullets (playbook, id, section, content, helpful, harmful) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(name, b.id, b.section, b.content, b.helpful, b.harmful) for b in head.bullets])
