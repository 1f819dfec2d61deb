"""SIGKILL at random moments while the vector index is being saved: the file on disk is always a
whole save (old or new) or detected as unusable and rebuilt; never garbage, never a stray temp."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from store.vector_index import VectorIndex

DIM = 64
STEP = 500

SAVER = f"""
import sys
from pathlib import Path
import numpy as np
from store.vector_index import VectorIndex
index = VectorIndex(Path(sys.argv[1]), dim={DIM})
index.load()
n = len(index)
rng = np.random.default_rng(n)
print("ready", flush=True)
while True:
    v = rng.normal(size=({STEP}, {DIM})).astype("float32")
    index.add(np.arange(n, n + {STEP}), v / np.linalg.norm(v, axis=1, keepdims=True))
    n += {STEP}
    index.save()
"""


def start_saver(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).parent.parent)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


@pytest.mark.slow
def test_kill_during_index_saves(tmp_path: Path) -> None:
    path = tmp_path / "index" / "chunks.faiss"
    rng = random.Random(7)
    seen_whole = 0
    for _ in range(10):
        proc = start_saver(path)
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        index = VectorIndex(path, dim=DIM)
        if index.load():  # a whole save: ids are exactly 0..n-1 for some step
            ids = index.ids()
            assert len(ids) % STEP == 0 and np.array_equal(ids, np.arange(len(ids)))
            seen_whole += 1
        else:  # torn between the index and its sidecar: detected, starts empty, rebuilt by sync
            assert len(index) == 0 and index.dirty
        assert not list(path.parent.glob(".*.tmp")), "a killed save left a temporary file"
    assert seen_whole >= 5  # the kills landed at many different moments, mostly between saves


PLAYBOOK_WRITER = """
import itertools, sys
from pathlib import Path
from app.services.playbooks import PlaybookService
from store.database import Database
from store.playbooks import PlaybookStore
db = Database(Path(sys.argv[1]))
service = PlaybookService(PlaybookStore(db))
verbs = ["Quote", "Name", "Check", "State", "Give", "Repeat", "Cite", "Explain"]
things = ["the unit", "the source file", "the exact date", "the full name", "the currency",
          "the place", "the product code", "the ingredient list"]
print("ready", flush=True)
for n, (verb, thing) in enumerate(itertools.cycle(itertools.product(verbs, things))):
    book = service.show("main") if service.store.exists("main") else None
    if book and len(book.bullets) >= 6:
        service.delete_bullet("main", book.bullets[0].id)
    else:
        service.add_bullet("main", f"{verb} {thing} when the question asks for it.")
    if n % 5 == 4:
        service.restore("main", max(1, service.show("main").version - 3))
    service.export("main", Path(sys.argv[2]))
"""


@pytest.mark.slow
def test_kill_during_playbook_updates(tmp_path: Path) -> None:
    """Every kill leaves whole versions: each with its delta, the live bullets equal to the head
    version, the exported file a whole file, and the playbook still changeable after restart."""
    from app.services.playbooks import PlaybookService
    from store.database import Database
    from store.playbook_files import read_playbook_file
    from store.playbooks import PlaybookStore

    db_path, exported = tmp_path / "engram.db", tmp_path / "main.json"
    rng = random.Random(11)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", PLAYBOOK_WRITER, str(db_path), str(exported)],
                                stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        db = Database(db_path)
        try:
            assert db.scalar("PRAGMA integrity_check") == "ok"
            store = PlaybookStore(db)
            versions = [v.version for v in store.versions("main")]
            assert versions == list(range(len(versions)))  # no gap, no duplicate
            orphans = db.scalar("SELECT COUNT(*) FROM playbooks WHERE version > 0 AND delta_id NOT IN "
                                "(SELECT id FROM playbook_deltas)")
            assert orphans == 0
            head = store.load("main")
            live = [(r["id"], r["content"]) for r in db.query(
                "SELECT id, content FROM playbook_bullets WHERE playbook = 'main' ORDER BY id")]
            assert live == sorted((b.id, b.content) for b in head.bullets)
            if exported.exists():
                assert read_playbook_file(exported).name == "main"
            PlaybookService(store).add_bullet("main", "Answer in one short sentence.")
        finally:
            db.close()
