"""Odd and hostile things in watched folders: each gives a readable error or is skipped by rule,
and the app keeps running. (Per-format bad files are in test_parsers.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.ingest.file_rules import BAD_NAME_ERROR
from tests.helpers import open_engram, wait_for


@pytest.fixture()
def engram(embedder):
    eng = open_engram(embedder)
    yield eng
    eng.close()


@pytest.fixture()
def running(embedder, tmp_path):
    eng = open_engram(embedder, watch_debounce_s=0.2, drop_folder=tmp_path / "drop")
    eng.start(watch=True)
    yield eng
    eng.close()


def ingest(engram, folder: Path):
    reports = engram.ingest([folder])
    return reports, engram.run_pending()


def status_of(engram, path: Path | str) -> tuple[str, str | None] | None:
    doc = engram.docs.get(str(path))
    return (doc.status, doc.error) if doc else None


def test_symlink_loops_do_not_trap_the_scan(engram, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "note.txt").write_text("The lantern room is painted green.")
    (folder / "a" / "deep.md").write_text("The stair has ninety-one steps.")
    os.symlink(".", folder / "loop")
    os.symlink("../..", folder / "a" / "b" / "up")
    os.symlink(folder / "missing.txt", folder / "dangling.txt")
    _, results = ingest(engram, folder)
    indexed = sorted(Path(r.path).name for r in results if r.outcome == "indexed")
    assert indexed == ["deep.md", "note.txt"]
    assert status_of(engram, folder / "dangling.txt") is None  # points nowhere: nothing to learn


def test_deeply_nested_folders(engram, tmp_path: Path) -> None:
    deep = tmp_path / "docs"
    for level in range(120):
        deep = deep / f"level{level:03d}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("At the bottom of the well lies a copper key.")
    _, results = ingest(engram, tmp_path / "docs")
    assert [r.outcome for r in results] == ["indexed"]
    assert "copper key" in engram.search("what lies at the bottom of the well", k=1)[0].text


def test_undecodable_file_name_is_a_readable_error(engram, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    bad = os.path.join(os.fsencode(folder), b"caf\xe9 menu.txt")
    with open(bad, "wb") as fh:
        fh.write(b"Soup of the day: nettle.")
    (folder / "fine.txt").write_text("The caf\u00e9 opens at nine.")
    reports, results = ingest(engram, folder)
    assert reports[0].errors == 1 and [r.outcome for r in results] == ["indexed"]
    assert status_of(engram, folder / "caf\\xe9 menu.txt") == ("error", BAD_NAME_ERROR)
    ingest(engram, folder)  # a re-scan keeps one error row, no duplicates
    assert engram.docs.counts()["error"] == 1
    os.unlink(bad)
    ingest(engram, folder)
    assert engram.docs.counts()["error"] == 0  # gone from the folder, gone from the store


def test_huge_sparse_file_is_refused_without_reading_it(engram, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    huge = folder / "huge.txt"
    with open(huge, "wb") as fh:
        fh.truncate(8 * 1024**3)  # 8 GiB that occupy no disk
    started = time.monotonic()
    _, results = ingest(engram, folder)
    assert results[0].outcome == "error" and "too large" in results[0].error
    assert time.monotonic() - started < 10


def test_file_that_vanishes_between_event_and_read(running, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    for i in range(20):
        flicker = drop / f"flicker{i}.txt"
        flicker.write_text("here for a moment")
        flicker.unlink()
    keep = drop / "keep.txt"
    keep.write_text("The orchard has forty pear trees.")
    wait_for(lambda: status_of(running, keep) == ("indexed", None))
    wait_for(lambda: running.queue.pending_count() == 0)
    assert running.docs.counts()["documents"] == 1 and running.docs.counts()["error"] == 0


@pytest.mark.slow
def test_thousands_of_files_at_once_stay_responsive(running, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    batch = drop / "batch"
    batch.mkdir()
    for i in range(2000):
        (batch / f"card{i:04d}.txt").write_text(f"Index card {i}: shelf {i % 40}, drawer {i % 7}.")
    (drop / "needle.txt").write_text("The spare key hides under the blue flowerpot.")
    wait_for(lambda: status_of(running, drop / "needle.txt") == ("indexed", None), timeout=300)
    started = time.monotonic()
    hits = running.search("where is the spare key", k=1)  # answers while the rest is learned
    assert time.monotonic() - started < 5 and "flowerpot" in hits[0].text
    wait_for(lambda: running.docs.counts()["indexed"] == 2001, timeout=600, interval=1)
    assert running.queue.pending_count() == 0 and len(running.index) == running.docs.counts()["chunks"]
