"""Folder watching with real watchdog events in temporary folders."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import open_engram, wait_for


@pytest.fixture()
def running(embedder, tmp_path):
    eng = open_engram(embedder, watch_debounce_s=0.3, drop_folder=tmp_path / "drop")
    eng.start(watch=True)
    yield eng
    eng.close()


def indexed(eng, path: Path):
    doc = eng.docs.get(str(path))
    return doc if doc and doc.status == "indexed" else None


def jobs_for(eng, path: Path) -> int:
    return eng.db.scalar("SELECT COUNT(*) FROM jobs WHERE key = ?", (str(path),))


def test_drop_folder_created_and_watched(running, tmp_path):
    drop = tmp_path / "drop"
    assert drop.is_dir() and running.folders.get(str(drop)).is_default
    note = drop / "note.txt"
    note.write_text("The quartermaster of Briny Hollow keeps seven brass keys.")
    wait_for(lambda: indexed(running, note))
    assert "brass keys" in running.search("how many keys", k=1)[0].text


def test_create_modify_rename_delete(running, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    running.add_folder(folder)
    a = folder / "a.md"
    a.write_text("Alpha version one of the report about orchards.")
    wait_for(lambda: indexed(running, a))
    a.write_text("Alpha version two: the orchard harvest doubled.")
    # Searched while the new version replaces the old one, the note may briefly have no chunk.
    wait_for(lambda: indexed(running, a) and (hits := running.search("orchard harvest", k=1)) and "two" in hits[0].text)
    b = folder / "sub" / "b.md"
    b.parent.mkdir()
    a.rename(b)
    wait_for(lambda: indexed(running, b) and running.docs.get(str(a)) is None)
    b.unlink()
    wait_for(lambda: running.docs.get(str(b)) is None)
    assert len(running.index) == running.docs.counts()["chunks"] == 0


def test_folder_moved_in_and_out(running, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    running.add_folder(folder)
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "x.txt").write_text("A folder that arrives whole.")
    shutil.move(str(outside), str(folder / "arrived"))
    moved = folder / "arrived" / "deep" / "x.txt"
    wait_for(lambda: indexed(running, moved))
    shutil.move(str(folder / "arrived"), str(tmp_path / "gone"))
    wait_for(lambda: running.docs.get(str(moved)) is None)


def test_save_storm_is_one_job_and_temp_files_ignored(running, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    running.add_folder(folder)
    doc = folder / "draft.txt"
    for i in range(25):
        doc.write_text(f"Draft number {i} of the storm test.")
        (folder / ".draft.txt.swp").write_text("swap")
        (folder / "~$draft.docx").write_text("lock")
        time.sleep(0.01)
    wait_for(lambda: indexed(running, doc))
    time.sleep(0.6)
    assert jobs_for(running, doc) == 1
    assert "24" in running.search("storm draft", k=1)[0].text
    assert running.docs.get(str(folder / ".draft.txt.swp")) is None
    assert jobs_for(running, folder / "~$draft.docx") == 0


def test_changes_while_closed_are_caught_at_start(embedder, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "keep.txt").write_text("Kept file about a quiet canal.")
    (folder / "drop.txt").write_text("Doomed file about a loud mill.")
    eng = open_engram(embedder, drop_folder=tmp_path / "drop")
    eng.add_folder(folder)
    eng.run_pending()
    eng.close()
    (folder / "drop.txt").unlink()
    (folder / "new.txt").write_text("Arrived while closed: a green heron.")
    eng = open_engram(embedder, drop_folder=tmp_path / "drop")
    eng.start(watch=True)
    try:
        wait_for(lambda: indexed(eng, folder / "new.txt"))
        assert eng.docs.get(str(folder / "drop.txt")) is None
        assert indexed(eng, folder / "keep.txt")
    finally:
        eng.close()
