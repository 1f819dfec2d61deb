"""Kill the worker process mid-ingest, restart, and check every file ends indexed exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.database import Database
from tests.helpers import open_engram, wait_for

FILES = 150


def engram_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def write_ledgers(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(FILES):
        sentences = " ".join(f"Ledger {i} line {j}: crate {i * 31 + j} shipped to dock {j % 7}."
                             for j in range(1 + i % 25))
        (folder / f"ledger{i:03d}.txt").write_text(sentences)


def count(db_path: Path, sql: str) -> int:
    if not db_path.exists():
        return 0
    db = Database(db_path)
    try:
        return db.scalar(sql) or 0
    finally:
        db.close()


def done_docs(db_path: Path) -> int:
    return count(db_path, "SELECT COUNT(*) FROM documents WHERE status = 'indexed'")


def assert_exactly_once(embedder, folder: Path) -> None:
    eng = open_engram(embedder)
    try:
        assert eng.docs.counts()["documents"] == FILES
        assert eng.docs.counts()["indexed"] == FILES
        dupes = eng.db.scalar(
            "SELECT COUNT(*) FROM (SELECT document_id, text FROM chunks GROUP BY document_id, text "
            "HAVING COUNT(*) > 1)")
        assert dupes == 0
        per_doc = eng.db.query("SELECT d.path, COUNT(c.id) FROM documents d JOIN chunks c "
                               "ON c.document_id = d.id GROUP BY d.id")
        assert len(per_doc) == FILES
        assert set(eng.index.ids().tolist()) == set(eng.docs.chunk_ids().tolist())
        assert eng.queue.pending_count() == 0
        hit = eng.search("crate 3100 shipped", k=1)[0]  # only ledger100 holds crate 3100
        assert Path(hit.path).name == "ledger100.txt"
    finally:
        eng.close()


@pytest.mark.slow
def test_kill_during_one_shot_ingest(embedder, isolated_dirs, tmp_path):
    folder = tmp_path / "ledgers"
    write_ledgers(folder)
    db_path = isolated_dirs["data"] / "store.db"
    proc = subprocess.Popen(engram_cmd("--worker-batch-files", "4", "ingest", str(folder)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: done_docs(db_path) >= 8, timeout=120, interval=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done_docs(db_path) < FILES, "the kill came too late to test anything"
    finish = subprocess.run(engram_cmd("ingest", str(folder)), capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert_exactly_once(embedder, folder)


@pytest.mark.slow
def test_kill_background_app_and_resume(embedder, isolated_dirs, tmp_path):
    folder = tmp_path / "ledgers"
    folder.mkdir()
    db_path = isolated_dirs["data"] / "store.db"
    env = {**os.environ, "ENGRAM_WATCH_DEBOUNCE_S": "0.2", "ENGRAM_WORKER_BATCH_FILES": "4",
           "ENGRAM_INDEX_SAVE_INTERVAL_S": "0.5"}
    proc = subprocess.Popen(engram_cmd("watch", "add", str(folder)), env=env)
    assert proc.wait(timeout=120) == 0
    app = subprocess.Popen(engram_cmd("run", "--headless"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # the app is up once it has created its drop folder row
        wait_for(lambda: count(db_path, "SELECT COUNT(*) FROM folders WHERE is_default = 1"), timeout=120)
        time.sleep(1.0)
        write_ledgers(folder)
        wait_for(lambda: done_docs(db_path) >= 8, timeout=120, interval=0.05)
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()
    assert done_docs(db_path) < FILES
    # restart: the start-up scan and the recovered queue finish the job
    app = subprocess.Popen(engram_cmd("run", "--headless"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: done_docs(db_path) == FILES, timeout=300, interval=0.2)
    finally:
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 0
    assert_exactly_once(embedder, folder)

