"""The SQLite store: migrations, WAL, documents/chunks transactions and the durable job queue."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from store.database import Database
from store.documents import DocumentStore, NewChunk
from store.jobs import MAX_ATTEMPTS, JobQueue
from store.migrations import MIGRATIONS
from store.state import StateStore


@pytest.fixture()
def db(tmp_path):
    database = Database(tmp_path / "store.db")
    yield database
    database.close()


def chunk(i: int) -> NewChunk:
    return NewChunk(text=f"chunk {i}", line_start=i + 1, line_end=i + 1, char_start=0, char_end=7,
                    token_count=2)


def vecs(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_migrations_apply_once_and_wal(tmp_path):
    first = Database(tmp_path / "s.db")
    assert first.schema_version() == len(MIGRATIONS)
    assert first.scalar("PRAGMA journal_mode") == "wal"
    first.close()
    again = Database(tmp_path / "s.db")  # reopening applies nothing twice
    assert again.schema_version() == len(MIGRATIONS)
    tables = {r[0] for r in again.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"folders", "documents", "chunks", "episodes", "jobs", "playbooks",
            "checkpoints", "state"} <= tables
    assert not {"adapters", "metrics"} & tables  # never written; dropped by migration 007
    again.close()


def test_an_older_data_folder_loses_the_unused_tables_and_keeps_the_rest(tmp_path):
    first = Database(tmp_path / "s.db")
    with first.transaction():  # as release 001 made them
        first.conn.execute("CREATE TABLE adapters (id INTEGER PRIMARY KEY, name TEXT)")
        first.conn.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, name TEXT)")
        first.conn.execute("DELETE FROM _migrations WHERE name = '007_drop_unused_tables'")
    DocumentStore(first).replace("/f/a.txt", None, "h1", 10, 1.0, [chunk(0)], vecs(1))
    first.close()
    again = Database(tmp_path / "s.db")
    tables = {r[0] for r in again.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {"adapters", "metrics"} & tables and again.schema_version() == len(MIGRATIONS)
    assert DocumentStore(again).get("/f/a.txt") is not None
    again.close()


def test_replace_is_atomic_and_returns_ids(db):
    docs = DocumentStore(db)
    _, removed, added = docs.replace("/f/a.txt", None, "h1", 10, 1.0, [chunk(0), chunk(1)], vecs(2))
    assert removed == [] and len(added) == 2
    np.testing.assert_allclose(docs.vectors(added), vecs(2))
    _, removed2, added2 = docs.replace("/f/a.txt", None, "h2", 11, 2.0, [chunk(0)], vecs(1, 1))
    assert removed2 == added and not set(added2) & set(added)  # ids are never reused
    with pytest.raises(ValueError):
        docs.replace("/f/b.txt", None, "h", 1, 1.0, [chunk(0)], vecs(2))
    assert docs.get("/f/b.txt") is None
    # a failure inside the transaction leaves the previous version intact
    with pytest.raises(RuntimeError):
        with db.transaction():
            docs.replace("/f/a.txt", None, "h3", 12, 3.0, [chunk(5)], vecs(1, 2))
            raise RuntimeError("crash")
    assert docs.get("/f/a.txt").content_hash == "h2"
    assert list(docs.chunk_ids()) == added2


def test_error_and_remove_release_chunks(db):
    docs = DocumentStore(db)
    _, _, added = docs.replace("/f/a.txt", None, "h1", 10, 1.0, [chunk(0)], vecs(1))
    assert docs.record_error("/f/a.txt", None, "binary content") == added
    row = docs.get("/f/a.txt")
    assert row.status == "error" and row.error == "binary content" and row.chunk_count == 0
    docs.replace("/f/sub/b.txt", None, "h", 1, 1.0, [chunk(0)], vecs(1))
    assert sorted(docs.paths_under("/f")) == ["/f/a.txt", "/f/sub/b.txt"]
    assert docs.paths_under("/f/su") == []
    assert len(docs.remove_many(docs.paths_under("/f/sub"))) == 1
    assert docs.counts()["chunks"] == 0


def test_queue_dedupes_pending_and_claims_atomically(db):
    q = JobQueue(db)
    batch = q.new_batch("t")
    q.enqueue_many("ingest", [("/a", {}), ("/b", {}), ("/a", {"again": True})], batch)
    assert q.pending_count() == 2
    claimed: list[int] = []
    lock = threading.Lock()

    def grab():
        for job in JobQueue(db).claim("ingest", 1):
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 2
    q.enqueue("ingest", "/a", batch_id=batch)  # a new event while /a runs: one more pending job
    assert q.progress(batch).pending == 1 and q.progress(batch).running == 2


def test_queue_recovery_after_crash(db):
    q = JobQueue(db)
    batch = q.new_batch("t")
    q.enqueue_many("ingest", [(f"/f{i}", {}) for i in range(3)], batch)
    jobs = q.claim("ingest", 3)
    q.finish([jobs[0].id])
    # the process dies here: two jobs are left 'running'
    assert JobQueue(db).recover() == 2
    p = q.progress(batch)
    assert (p.done, p.pending, p.total) == (1, 2, 3)
    for _ in range(MAX_ATTEMPTS - 1):
        q.claim("ingest", 1)
        q.recover()
    # a job that keeps killing the process gives up instead of looping forever
    failed = [f for f in q.failures() if "interrupted" in (f["error"] or "")]
    assert len(failed) == 1


def test_cancel_and_state(db):
    q = JobQueue(db)
    b = q.new_batch("t")
    q.enqueue_many("ingest", [(f"/f{i}", {}) for i in range(5)], b)
    assert q.cancel_pending() == 5
    assert q.progress(b).cancelled == 5 and not q.progress(b).active
    state = StateStore(db)
    assert state.get("x", 1) == 1
    state.set("x", {"a": [1, 2]})
    assert state.get("x") == {"a": [1, 2]}
