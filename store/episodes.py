"""Episodes: the log of what happened, which reflection, the meta-controller and sleep read later.

Documents and conversations write their own episodes inside the transaction that stores the
change (an ingested or forgotten file, a question, an answer, a rating). What the background jobs
record afterwards (an engine's learning report) and the queries over the log's JSON payloads live
here, so no layer above the store writes SQL against this table.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from store.database import Database

FEEDBACK_GIVEN = "feedback"
"""A thumbs up/down or a correction on an answer (payload: message_id, rating, correction)."""
LEARNED = "learn"
"""An engine learned a document (payload: its ``LearnReport``)."""
FEEDBACK_LEARNED = "feedback_learn"
"""An engine learned from the feedback on an answer (payload: message_id and its report)."""
LEARNING = (LEARNED, FEEDBACK_LEARNED)
"""Episodes that add sleep pressure: a document or a feedback event learned."""


class LearnedEpisode(BaseModel):
    """One engine's report on one document it learned (``LEARNED``), as the log holds it."""

    id: int
    ts: str
    document_id: int | None
    engine: str
    path: str
    seconds: float = 0.0
    tokens: int = 0
    changed: bool = False


class EpisodeStore:
    """Writes the learning episodes and answers the questions engines ask of the log."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record_learned(self, document_id: int, report: dict[str, Any]) -> int:
        """An engine's report on a document it learned; returns the episode id."""
        return self._record(LEARNED, report, document_id)

    def record_feedback_learned(self, message_id: int, report: dict[str, Any]) -> int:
        """An engine's report on the feedback it learned from; returns the episode id."""
        return self._record(FEEDBACK_LEARNED, {"message_id": message_id, **report})

    def learned(self, engines: list[str], limit: int = 2000) -> list[LearnedEpisode]:
        """The latest ``limit`` documents ``engines`` learned and changed their knowledge with,
        oldest first."""
        if not engines:
            return []
        marks = ", ".join("?" * len(engines))
        rows = self.db.query(
            "SELECT id, ts, document_id, payload FROM episodes WHERE kind = ? AND "
            f"json_extract(payload, '$.engine') IN ({marks}) AND json_extract(payload, '$.changed') "
            "ORDER BY id DESC LIMIT ?", (LEARNED, *engines, limit))
        out = []
        for episode_id, ts, document_id, raw in reversed(rows):
            report = json.loads(raw)
            out.append(LearnedEpisode(id=episode_id, ts=ts, document_id=document_id,
                                      engine=str(report.get("engine", "")), path=str(report.get("path", "")),
                                      seconds=float(report.get("seconds") or 0.0),
                                      tokens=int(report.get("tokens") or 0), changed=True))
        return out

    def _record(self, kind: str, payload: dict[str, Any], document_id: int | None = None) -> int:
        cur = self.db.execute("INSERT INTO episodes (kind, document_id, payload) VALUES (?, ?, ?)",
                              (kind, document_id, json.dumps(payload)))
        return int(cur.lastrowid)

    def latest_feedback(self, message_id: int) -> int | None:
        """The newest feedback episode on answer ``message_id`` (None when it has none)."""
        return self.db.scalar(
            "SELECT id FROM episodes WHERE kind = ? AND json_extract(payload, '$.message_id') = ? "
            "ORDER BY id DESC LIMIT 1", (FEEDBACK_GIVEN, message_id))

    def failed_feedback_since(self, since: str) -> list[tuple[int, int]]:
        """(episode id, message id) of thumbs-down or corrected answers given feedback since
        ``since`` (an SQLite timestamp), oldest first, the latest episode per answer only."""
        rows = self.db.query(
            "SELECT MAX(e.id), json_extract(e.payload, '$.message_id') AS mid FROM episodes e "
            "JOIN messages m ON m.id = json_extract(e.payload, '$.message_id') "
            "WHERE e.kind = ? AND e.ts >= ? AND (m.feedback = 'down' OR m.correction IS NOT NULL) "
            "GROUP BY mid ORDER BY MAX(e.id)", (FEEDBACK_GIVEN, since))
        return [(int(r[0]), int(r[1])) for r in rows]
