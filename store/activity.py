"""What the sleep scheduler decides on: how long nothing has happened, how much was learned since
the last whole sleep, and the sleeps themselves (episodes of kind ``sleep``).

Everything is read from the store, so every Engram process on one data folder (the app, a CLI
run) sees the same person-activity and the same sleep pressure.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel

from store.database import Database
from store.episodes import LEARNING
from store.jobs import REFRESH, SLEEP


_UNFINISHED = "status IN ('pending', 'running')"
UI_INPUT = "ui_input_at"  # state key: when (a Julian day) the person last pressed a key or clicked in the app


class SleepEpisode(BaseModel):
    """One recorded sleep: when, why, whether something cut it short, and each engine's report."""

    id: int
    ts: str
    reason: str
    interrupted: bool
    reports: list[dict[str, Any]]
    checkpoints: list[str] = []  # the learned state before the sleep, saved under these names

    @property
    def changed(self) -> bool:
        return any(report.get("changed") for report in self.reports)


def last_active(db: Database) -> float | None:
    """When (a Julian day) the person last asked a question, used the app (a key or a click) or
    any work but sleep and refresh (the app's own upkeep) was queued, started or finished; None
    when nothing ever happened."""
    return db.scalar(
        "SELECT max(t) FROM ("
        " SELECT max(julianday(created_at)) AS t FROM messages WHERE role = 'user'"
        " UNION ALL SELECT julianday(max(max(created_at, COALESCE(started_at, ''), COALESCE(finished_at, ''))))"
        " FROM jobs WHERE kind NOT IN (?, ?)"  # one format in jobs: the latest text is the latest time
        " UNION ALL SELECT CAST(value AS REAL) FROM state WHERE key = ?)", (SLEEP, REFRESH, UI_INPUT))


def record_ui_input(db: Database) -> None:
    """The person pressed a key or clicked in the app: idle time starts again (and an idle sleep
    gives way, as to a question)."""
    db.execute("INSERT INTO state (key, value) VALUES (?, julianday('now')) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (UI_INPUT,))


def now(db: Database) -> float:
    """The store's clock, as a Julian day (what ``last_active`` compares with)."""
    # Rounded as a Julian day kept in ``state`` (as text) is: a key pressed in the same
    # millisecond as a sleep began then compares equal, never just before it.
    return float(db.scalar("SELECT CAST(CAST(julianday('now') AS TEXT) AS REAL)"))


def idle_seconds(db: Database) -> float | None:
    """Seconds since ``last_active``; None when nothing ever happened."""
    last = last_active(db)
    return None if last is None else max(0.0, (now(db) - last) * 86400.0)


def work_waiting(db: Database) -> bool:
    """Whether any job but sleep and refresh (upkeep that gives way to sleep) is pending or running."""
    return jobs_waiting_besides(db, (SLEEP, REFRESH))


def jobs_waiting_besides(db: Database, kinds: tuple[str, ...]) -> bool:
    """Whether any job of a kind other than ``kinds`` is pending or running."""
    marks = ",".join("?" * len(kinds))
    besides = f" AND kind NOT IN ({marks})" if kinds else ""
    return bool(db.scalar(f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {_UNFINISHED}{besides})", kinds))


def sleep_queued(db: Database) -> bool:
    return bool(db.scalar(f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {_UNFINISHED} AND kind = ?)", (SLEEP,)))


def seconds_since_sleep_queued(db: Database) -> float | None:
    """Since the last sleep job was queued (whatever became of it); None when none ever was."""
    seconds = db.scalar("SELECT (julianday('now') - julianday(max(created_at))) * 86400.0 FROM jobs "
                        "WHERE kind = ?", (SLEEP,))
    return None if seconds is None else float(seconds)


def learned_since_sleep(db: Database) -> int:
    """Documents and feedback events learned since the last sleep that was not cut short."""
    whole = db.scalar("SELECT max(id) FROM episodes WHERE kind = ? AND json_extract(payload, '$.interrupted') = 0",
                      (SLEEP,))
    return learned_after(db, int(whole or 0))


def said_since_sleep(db: Database) -> list[str]:
    """What the person typed in chat since the last whole sleep: each question's text and each
    correction of an answer (what sleep's memory consolidation reads facts from)."""
    whole = db.scalar("SELECT max(id) FROM episodes WHERE kind = ? AND json_extract(payload, '$.interrupted') = 0",
                      (SLEEP,))
    rows = db.query(
        "SELECT COALESCE(json_extract(payload, '$.text'), json_extract(payload, '$.correction')) FROM episodes "
        "WHERE id > ? AND (kind = 'question' OR (kind = 'feedback' AND json_extract(payload, '$.correction') "
        "IS NOT NULL))", (int(whole or 0),))
    return [str(r[0]) for r in rows if r[0]]


def learned_after(db: Database, episode_id: int) -> int:
    """Documents and feedback events learned after episode ``episode_id`` (a document learned by
    two engines, or twice, counts once)."""
    return int(db.scalar(
        "SELECT count(DISTINCT COALESCE('d' || document_id, 'e' || id)) FROM episodes "
        f"WHERE kind IN ({','.join('?' * len(LEARNING))}) AND id > ?", (*LEARNING, episode_id)))


def sleep_failure(db: Database) -> str | None:
    """The error of the latest sleep job when it failed and no sleep was recorded since."""
    row = db.conn.execute(
        "SELECT status, error, julianday(finished_at) FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1",
        (SLEEP,)).fetchone()
    if row is None or row[0] != "failed":
        return None
    recorded = db.scalar("SELECT julianday(max(ts)) FROM episodes WHERE kind = ?", (SLEEP,))
    # jobs keep whole seconds: a sleep recorded within the failure's second may have come before it
    return None if recorded is not None and row[2] is not None and recorded >= row[2] + 1 / 86400 else str(row[1])


def record_sleep(db: Database, reason: str, interrupted: bool, reports: list[dict[str, Any]],
                 checkpoints: list[str] | None = None) -> int:
    """Store a sleep as an episode; returns its id."""
    payload = json.dumps(_finite({"reason": reason, "interrupted": interrupted, "reports": reports,
                                  "checkpoints": checkpoints or []}), allow_nan=False)
    return int(db.execute("INSERT INTO episodes (kind, payload) VALUES (?, ?)", (SLEEP, payload)).lastrowid)


def _finite(value: Any) -> Any:
    """NaN and infinities as None: SQLite's JSON functions cannot read them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def last_sleep(db: Database) -> SleepEpisode | None:
    found = sleeps(db, limit=1)
    return found[0] if found else None


def sleeps(db: Database, limit: int = 500) -> list[SleepEpisode]:
    """The latest ``limit`` sleeps, newest first."""
    rows = db.conn.execute("SELECT id, ts, payload FROM episodes WHERE kind = ? ORDER BY id DESC LIMIT ?",
                           (SLEEP, limit)).fetchall()
    return [_sleep_episode(*row) for row in rows]


def _sleep_episode(episode_id: int, ts: str, raw: str) -> SleepEpisode:
    payload = json.loads(raw)
    return SleepEpisode(id=episode_id, ts=ts, reason=str(payload.get("reason", "")),
                        interrupted=bool(payload.get("interrupted")), reports=list(payload.get("reports", [])),
                        checkpoints=[str(c) for c in payload.get("checkpoints", [])])
