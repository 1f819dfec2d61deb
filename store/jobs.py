"""The durable job queue: rows in SQLite, claimed atomically, recovered after a crash.

A job is only ever marked done after its effect is committed, and effects are idempotent (a
re-run of an ingest job whose file is already stored with the same hash does nothing), so a kill
at any point loses nothing and duplicates nothing.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from store.database import Database

MAX_ATTEMPTS = 3

# The job kinds, defined once: the queue's producers, its handlers and the store's own queries on
# the jobs table (activity, document listing) all name a kind through these.
INGEST = "ingest"
"""Read, chunk and embed one file (key: its path)."""
LEARN = "learn"
"""One engine learns one stored document (key: ``engine:path``)."""
FEEDBACK = "feedback"
"""One engine learns from the feedback on one answer (key: ``engine:message id``)."""
SLEEP = "sleep"
"""Consolidate while the person is away (key: ``sleep``); also the episode kind of a sleep."""
REEMBED = "reembed"
"""Re-embed the library with the embedding model the settings name (key: ``embedding``)."""
CONTROLLER = "controller"
"""The meta-controller's bandit learns the reward of one answer (key: the message id)."""
REFRESH = "refresh"
"""Idle-time upkeep (key: the refresher): what was computed from the library or the weights and is
missing or stale, computed again (the hidden tier's states, the search's sentence windows)."""


class Job(BaseModel):
    id: int
    kind: str
    key: str | None
    payload: dict[str, Any]
    batch_id: int | None
    attempts: int


class RunningJob(BaseModel):
    """A job being worked on, with the progress its handler last reported."""

    id: int
    kind: str
    key: str | None
    progress: float | None
    message: str | None


class Progress(BaseModel):
    """Progress over the batches that still have work (or the last batch when all are done)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    pending: int = 0
    running: int = 0
    current: list[str] = []
    running_jobs: list[RunningJob] = []
    paused: bool = False

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.cancelled

    @property
    def active(self) -> bool:
        return self.pending + self.running > 0


class JobQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def new_batch(self, label: str) -> int:
        cur = self.db.execute("INSERT INTO batches (label) VALUES (?)", (label,))
        return int(cur.lastrowid)

    def enqueue(self, kind: str, key: str | None, payload: dict[str, Any] | None = None,
                batch_id: int | None = None) -> None:
        self.enqueue_many(kind, [(key, payload or {})], batch_id)

    def enqueue_many(self, kind: str, items: list[tuple[str | None, dict[str, Any]]],
                     batch_id: int | None = None) -> None:
        """Insert jobs in one transaction; a pending job with the same key is refreshed, not doubled."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO jobs (kind, key, payload, batch_id) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(kind, key) WHERE status = 'pending' DO UPDATE SET "
                "payload = excluded.payload, batch_id = COALESCE(excluded.batch_id, batch_id)",
                [(kind, key, json.dumps(payload), batch_id) for key, payload in items],
            )

    def claim(self, kind: str | list[str], limit: int = 1) -> list[Job]:
        """Atomically move up to ``limit`` pending jobs of ``kind`` (or any of several kinds) to
        running and return them (oldest first)."""
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not kinds:
            return []
        marks = ",".join("?" * len(kinds))
        with self.db.transaction() as conn:
            rows = conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = NULL, "
                "message = NULL, started_at = datetime('now') WHERE id IN (SELECT id FROM jobs "
                f"WHERE status = 'pending' AND kind IN ({marks}) ORDER BY id LIMIT ?) "
                "RETURNING id, kind, key, payload, batch_id, attempts",
                (*kinds, limit),
            ).fetchall()
        jobs = [Job(id=r[0], kind=r[1], key=r[2], payload=json.loads(r[3]), batch_id=r[4],
                    attempts=r[5]) for r in rows]
        return sorted(jobs, key=lambda j: j.id)

    def report(self, job_id: int, fraction: float, message: str) -> None:
        """Record a running job's progress (readable by any process, kept across restarts)."""
        self.db.execute("UPDATE jobs SET progress = ?, message = ? WHERE id = ?",
                        (max(0.0, min(1.0, fraction)), message[:500], job_id))

    def running(self) -> list[RunningJob]:
        rows = self.db.query("SELECT id, kind, key, progress, message FROM jobs "
                             "WHERE status = 'running' ORDER BY id")
        return [RunningJob(**dict(r)) for r in rows]

    def finish(self, job_ids: list[int]) -> None:
        self._set_status(job_ids, "done", None)

    def fail(self, job_id: int, error: str) -> None:
        self._set_status([job_id], "failed", error)

    def _set_status(self, job_ids: list[int], status: str, error: str | None) -> None:
        if not job_ids:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET status = ?, error = ?, finished_at = datetime('now') WHERE id = ?",
                [(status, error, i) for i in job_ids],
            )

    def recover(self) -> int:
        """After a crash: jobs left running go back to pending; ones that crashed us too often fail."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = datetime('now'), "
                "error = 'gave up after ' || attempts || ' interrupted attempts' "
                "WHERE status = 'running' AND attempts >= ?",
                (MAX_ATTEMPTS,),
            )
            # A newer pending job for the same key supersedes the interrupted one.
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = datetime('now'), "
                "error = 'superseded' WHERE status = 'running' AND key IS NOT NULL AND EXISTS ("
                "SELECT 1 FROM jobs p WHERE p.status = 'pending' AND p.kind = jobs.kind AND p.key = jobs.key)"
            )
            return conn.execute(
                "UPDATE jobs SET status = 'pending' WHERE status = 'running'"
            ).rowcount

    def cancel_pending(self, batch_id: int | None = None) -> int:
        sql = ("UPDATE jobs SET status = 'cancelled', finished_at = datetime('now'), "
               "error = 'cancelled by user' WHERE status = 'pending'")
        params: tuple = ()
        if batch_id is not None:
            sql += " AND batch_id = ?"
            params = (batch_id,)
        with self.db.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def pending_count(self, kind: str | None = None) -> int:
        if kind:
            return int(self.db.scalar(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('pending','running') AND kind = ?", (kind,)))
        return int(self.db.scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('pending','running')"))

    def progress(self, batch_id: int | None = None) -> Progress:
        if batch_id is None:
            ids = [r[0] for r in self.db.query(
                "SELECT DISTINCT batch_id FROM jobs WHERE status IN ('pending','running') "
                "AND batch_id IS NOT NULL")]
            if not ids:
                last = self.db.scalar("SELECT MAX(batch_id) FROM jobs")
                ids = [last] if last is not None else []
        else:
            ids = [batch_id]
        progress = Progress()
        if not ids:
            return progress
        marks = ",".join("?" * len(ids))
        for status, count in self.db.query(
            f"SELECT status, COUNT(*) FROM jobs WHERE batch_id IN ({marks}) GROUP BY status", tuple(ids)
        ):
            setattr(progress, status, count)
            progress.total += count
        progress.running_jobs = self.running()
        progress.current = [j.key for j in progress.running_jobs[:5] if j.key]
        return progress

    def failures(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT id, kind, key, error, finished_at FROM jobs WHERE status = 'failed' "
            "ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]
