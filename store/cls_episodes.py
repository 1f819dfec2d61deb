"""The CLS engine's episodic replay buffer and event log (tables from migration 011_cls).

Episodes are what an expert learned (a document's passages, its question/answer pairs), kept so
that sleep can replay them, shuffled, when it distils the experts into the consolidated adapter.
Events are growth, pruning and sleeps, each with the reason it happened, for the stats and UI.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pydantic import BaseModel

from store.database import Database


class Episode(BaseModel):
    id: int
    slot: int
    document_id: int | None
    kind: str  # "passage" (prompt is text) or "qa" (prompt is a question, answer its answer)
    prompt: str
    answer: str = ""


class ClsEvent(BaseModel):
    id: int
    kind: str
    slot: int | None
    reason: str
    figures: dict[str, Any]
    created_at: str


class ClsEpisodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, slot: int, document_id: int | None, items: list[tuple[str, str, str]]) -> None:
        """(kind, prompt, answer) episodes learned into ``slot``."""
        with self.db.transaction():
            for kind, prompt, answer in items:
                self.db.execute("INSERT INTO cls_episodes (slot, document_id, kind, prompt, answer) "
                                "VALUES (?, ?, ?, ?, ?)", (slot, document_id, kind, prompt, answer))

    def drop_documents(self, document_ids: list[int]) -> None:
        for document_id in document_ids:
            self.db.execute("DELETE FROM cls_episodes WHERE document_id = ?", (document_id,))

    def shuffled(self, seed: int, slot: int | None = None, limit: int | None = None) -> list[Episode]:
        """Episodes (of ``slot``, or all) in a seeded random order (replay never runs in the
        order things came)."""
        where, args = ("WHERE slot = ?", (slot,)) if slot is not None else ("", ())
        rows = self.db.query(f"SELECT id, slot, document_id, kind, prompt, answer FROM cls_episodes {where} "
                             "ORDER BY id", args)
        episodes = [Episode(id=r[0], slot=r[1], document_id=r[2], kind=r[3], prompt=r[4], answer=r[5])
                    for r in rows]
        random.Random(seed).shuffle(episodes)
        return episodes[:limit] if limit is not None else episodes

    def take_all(self) -> list[Episode]:
        """Every episode, removed (a bundle import replacing the experts they belong to); ``restore``
        puts them back."""
        with self.db.transaction():
            rows = self.db.query("SELECT id, slot, document_id, kind, prompt, answer FROM cls_episodes ORDER BY id")
            self.db.execute("DELETE FROM cls_episodes")
        return [Episode(id=r[0], slot=r[1], document_id=r[2], kind=r[3], prompt=r[4], answer=r[5]) for r in rows]

    def restore(self, episodes: list[Episode]) -> None:
        """The buffer as ``take_all`` found it (with the same ids): what is there now leaves."""
        with self.db.transaction():
            self.db.execute("DELETE FROM cls_episodes")
            for e in episodes:
                self.db.execute("INSERT INTO cls_episodes (id, slot, document_id, kind, prompt, answer) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (e.id, e.slot, e.document_id, e.kind, e.prompt, e.answer))

    def count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM cls_episodes") or 0)

    def count_by_slot(self) -> dict[int, int]:
        """Episodes each expert holds."""
        return {int(slot): int(n) for slot, n in self.db.query("SELECT slot, COUNT(*) FROM cls_episodes GROUP BY slot")}

    def log(self, kind: str, reason: str, slot: int | None = None, figures: dict[str, Any] | None = None) -> None:
        self.db.execute("INSERT INTO cls_events (kind, slot, reason, figures) VALUES (?, ?, ?, ?)",
                        (kind, slot, reason, json.dumps(figures or {})))

    def events(self, limit: int = 100) -> list[ClsEvent]:
        return list(reversed(self._events("ORDER BY id DESC LIMIT ?", (limit,))))

    def since_last(self, kind: str) -> list[ClsEvent]:
        """Events after the latest one of ``kind`` (all when there is none), oldest first."""
        last = self.db.scalar("SELECT max(id) FROM cls_events WHERE kind = ?", (kind,)) or 0
        return self._events("WHERE id > ? ORDER BY id", (last,))

    def last(self, kinds: tuple[str, ...]) -> ClsEvent | None:
        found = self._events(f"WHERE kind IN ({','.join('?' * len(kinds))}) ORDER BY id DESC LIMIT 1", kinds)
        return found[0] if found else None

    def _events(self, where: str, args: tuple) -> list[ClsEvent]:
        rows = self.db.query(f"SELECT id, kind, slot, reason, figures, created_at FROM cls_events {where}", args)
        return [ClsEvent(id=r[0], kind=r[1], slot=r[2], reason=r[3], figures=json.loads(r[4]), created_at=r[5])
                for r in rows]
