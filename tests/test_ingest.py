"""Ingestion end to end over real files, the real embedding model, SQLite and FAISS."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import open_engram

FACTS = {
    "zorblat.txt": "The Zorblat festival is held every spring in the town of Quenmoor.\n"
                   "Its founder, Ilsa Varnet, baked the first moon-bread in 1821.\n",
    "harbor.md": "# Harbor notes\n\nThe lighthouse keeper of Pellington counts gulls each dawn.\n\n"
                 "He recorded 4,312 gulls on the longest day.\n",
    "page.html": "<html><body><script>var x = 'nope';</script><h1>Recipe</h1>"
                 "<p>Blue turnip soup needs saffron and three pinches of chalk salt.</p></body></html>",
}


@pytest.fixture()
def engram(embedder):
    eng = open_engram(embedder)
    yield eng
    eng.close()


def write_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in FACTS.items():
        (folder / name).write_text(text)


def ingest_now(engram, *paths: Path):
    reports = engram.ingest(list(paths))
    return reports, engram.run_pending()


def test_ingest_search_cite(engram, tmp_path):
    docs = tmp_path / "docs"
    write_corpus(docs)
    (docs / ".hidden.txt").write_text("secret hidden text")
    (docs / "notes.txt~").write_text("editor backup")
    (docs / "image.png").write_bytes(b"\x89PNG....")
    reports, results = ingest_now(engram, docs)
    assert reports[0].queued == 3
    assert sorted(r.outcome for r in results) == ["indexed"] * 3
    hits = engram.search("Who baked the first moon-bread?", k=3)
    assert Path(hits[0].path).name == "zorblat.txt"
    assert hits[0].line_start == 1 and hits[0].line_end == 2
    assert "Ilsa Varnet" in hits[0].text
    html_hit = engram.search("turnip soup ingredients", k=1)[0]
    assert Path(html_hit.path).name == "page.html" and "nope" not in html_hit.text
    status = engram.status()
    assert (status.documents, status.indexed, status.errors) == (3, 3, 0)
    assert status.chunks == status.vectors


def test_unchanged_rescan_does_no_work_and_changes_replace(engram, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    write_corpus(docs)
    ingest_now(engram, docs)
    ids_before = set(engram.docs.chunk_ids().tolist())
    episodes = engram.db.scalar("SELECT COUNT(*) FROM episodes WHERE kind='ingest'")
    again, results = ingest_now(engram, docs)
    assert again[0].queued == 0 and results == []
    # touched but identical content: hashed, not re-embedded
    os.utime(docs / "harbor.md", (time.time() + 5, time.time() + 5))
    again, results = ingest_now(engram, docs)
    assert again[0].queued == 1 and [r.outcome for r in results] == ["unchanged"]
    assert set(engram.docs.chunk_ids().tolist()) == ids_before
    assert engram.db.scalar("SELECT COUNT(*) FROM episodes WHERE kind='ingest'") == episodes
    # real change: old chunks and vectors leave, new ones arrive
    (docs / "harbor.md").write_text("The lighthouse of Pellington was painted green in 1999.\n")
    _, results = ingest_now(engram, docs)
    assert [r.outcome for r in results] == ["indexed"]
    after = set(engram.docs.chunk_ids().tolist())
    assert after != ids_before and set(engram.index.ids().tolist()) == after
    assert "green" in engram.search("lighthouse colour", k=1)[0].text
    # deletion: the document and its vectors leave, answers stop citing it, engines are told
    harbor = engram.docs.get(str(docs / "harbor.md")).id
    told: list[int] = []
    monkeypatch.setattr(engram.engine("rag"), "forget", told.append)
    (docs / "harbor.md").unlink()
    report, _ = ingest_now(engram, docs)
    assert report[0].removed == 1 and told == [harbor]
    assert all(Path(h.path).name != "harbor.md" for h in engram.search("lighthouse", k=5))
    assert len(engram.index) == engram.docs.counts()["chunks"]


def test_bad_files_are_recorded_and_do_not_stop_the_rest(engram, tmp_path):
    docs = tmp_path / "docs"
    write_corpus(docs)
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 20)
    (docs / "empty.md").write_bytes(b"")
    (docs / "latin.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<<>>garbage")
    (docs / "huge.txt").write_text("x" * (2 * 1024 * 1024))
    engram.settings.max_file_mb = 1.0
    _, results = ingest_now(engram, docs)
    outcome = {Path(r.path).name: r for r in results}
    assert {n for n, r in outcome.items() if r.outcome == "indexed"} == set(FACTS)
    errors = {Path(d.path).name: d.error for d in engram.docs.errors()}
    assert set(errors) == {"binary.txt", "empty.md", "latin.txt", "broken.pdf", "huge.txt"}
    assert all(errors.values())
    assert "too large" in errors["huge.txt"]
    # an unchanged bad file is not retried on every scan
    again, _ = ingest_now(engram, docs)
    assert again[0].queued == 0


def test_index_repaired_from_sqlite(embedder, tmp_path):
    docs = tmp_path / "docs"
    write_corpus(docs)
    first = open_engram(embedder)
    ingest_now(first, docs)
    truth = set(first.docs.chunk_ids().tolist())
    first.close()
    # lose the index entirely: it is rebuilt from the stored embeddings
    index_file = first.paths.index
    index_file.unlink()
    second = open_engram(embedder)
    assert second.last_sync.added == len(truth)
    assert set(second.index.ids().tolist()) == truth
    # a stale vector (its chunk deleted behind the index's back) is dropped and never cited
    stale = max(truth)
    second.db.execute("DELETE FROM chunks WHERE id = ?", (stale,))
    hits = second.search("moon-bread festival", k=10)
    assert stale not in [h.chunk_id for h in hits]
    second.save_index()
    second.close()
    third = open_engram(embedder)
    assert third.last_sync.removed == 1 and stale not in set(third.index.ids().tolist())
    third.close()


def test_searchable_while_large_folder_still_processing(engram, tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(40):
        (docs / f"f{i:03d}.txt").write_text(f"Record {i}: the courier number {i} carries parcel {i * 7}.\n")
    engram.ingest([docs])
    engram.worker.batch_files = 8
    assert engram.worker.run_once() == 8
    p = engram.queue.progress()
    assert (p.done, p.total) == (8, 40)
    assert engram.search("courier parcel", k=3)
    engram.pause()
    assert engram.worker.run_once() == 0
    engram.resume()
    engram.run_pending()
    assert engram.queue.progress().done == 40


def test_cancel_pending(engram, tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(10):
        (docs / f"f{i}.txt").write_text(f"note {i}")
    engram.ingest([docs])
    assert engram.cancel() == 10
    assert engram.run_pending() == []
    assert engram.queue.progress().cancelled == 10


def test_vectors_stored_match_fresh_embeddings(engram, embedder, tmp_path):
    docs = tmp_path / "docs"
    write_corpus(docs)
    ingest_now(engram, docs)
    rows = engram.db.query("SELECT id, text FROM chunks ORDER BY id")
    stored = engram.docs.vectors([r[0] for r in rows])
    fresh = embedder.embed([r[1] for r in rows])
    np.testing.assert_allclose(stored, fresh, atol=1e-4)
