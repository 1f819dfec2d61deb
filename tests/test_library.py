"""The Library's operations on single documents, over a real store, index and embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.jobs import LEARN
from tests.helpers import open_engram

STORY = "\n\n".join(
    f"Paragraph {n}. The lighthouse of Brenn Point was repainted in the year {1900 + n}. "
    f"Its keeper that year was called Keeper{n} and logged {n * 3} storms."
    for n in range(1, 13)
) + "\n"


@pytest.fixture
def engram(embedder):
    e = open_engram(embedder, chunk_tokens=48, chunk_overlap_tokens=12)
    yield e
    e.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "story.txt").write_text(STORY)
    (docs / "broken.txt").write_bytes(b"\x00\x01\x02 binary")
    (docs / "image.png").write_bytes(b"\x89PNG")
    return docs


def statuses(engram) -> dict[str, str]:
    return {Path(d.path).name: d.status for d in engram.document_page().items}


def test_listing_shows_queued_learned_learning_and_errors(engram, folder) -> None:
    engram.add_folder(folder)
    page = engram.document_page()
    assert statuses(engram) == {"broken.txt": "pending", "story.txt": "pending"}  # not image.png
    assert all(d.id is None for d in page.items) and page.counts["pending"] == 2
    engram.run_pending()
    assert statuses(engram) == {"broken.txt": "error", "story.txt": "learned"}
    broken = engram.document_page(status="error").items
    assert len(broken) == 1 and broken[0].error
    story = engram.docs.get(str(folder / "story.txt"))
    engram.queue.enqueue(LEARN, f"ttt:{story.path}", {"engine": "ttt", "document_id": story.id})
    assert statuses(engram)["story.txt"] == "learning"
    assert [d.path for d in engram.document_page(text="STORY").items] == [story.path]
    assert engram.document_page(text="100%").total == 0  # LIKE wildcards are literal
    second = engram.document_page(limit=1, offset=1)
    assert second.total == 2 and [Path(d.path).name for d in second.items] == ["story.txt"]


def test_forget_sticks_until_relearned(engram, folder) -> None:
    engram.add_folder(folder)
    engram.run_pending()
    story = str(folder / "story.txt")
    assert any(h.path == story for h in engram.search("lighthouse keeper storms"))
    engram.forget_document(story)
    assert engram.docs.get(story) is None
    assert not any(h.path == story for h in engram.search("lighthouse keeper storms"))
    assert statuses(engram)["story.txt"] == "ignored"
    (folder / "story.txt").write_text(STORY + "One more line.\n")  # a change, then a restart scan
    engram.reconcile()
    engram.ingestor.enqueue_paths([folder / "story.txt"], label="folder changes")
    engram.run_pending()
    assert engram.docs.get(story) is None and statuses(engram)["story.txt"] == "ignored"
    engram.reindex_document(story)
    engram.run_pending()
    assert statuses(engram)["story.txt"] == "learned"
    assert any(h.path == story for h in engram.search("lighthouse keeper storms"))
    with pytest.raises(KeyError):
        engram.forget_document(str(folder / "never-seen.txt"))


def test_reindex_reads_an_unchanged_document_again(engram, folder) -> None:
    engram.add_folder(folder)
    engram.run_pending()
    story = str(folder / "story.txt")
    before = set(engram.docs.chunk_ids())
    engram.reindex_document(story)
    assert statuses(engram)["story.txt"] == "pending"
    engram.run_pending()
    after = set(engram.docs.chunk_ids())
    assert statuses(engram)["story.txt"] == "learned" and before != after
    assert len(engram.index) == len(after)
    with pytest.raises(KeyError):
        engram.reindex_document(str(folder / "missing.txt"))


def test_removing_a_folder_clears_what_was_ignored_in_it(engram, folder) -> None:
    engram.add_folder(folder)
    engram.run_pending()
    engram.forget_document(str(folder / "story.txt"))
    engram.remove_folder(folder)
    assert engram.document_page().total == 0
    engram.add_folder(folder)
    engram.run_pending()
    assert statuses(engram)["story.txt"] == "learned"


def test_source_view_rebuilds_the_text_around_a_citation(engram, folder) -> None:
    engram.ingest([folder / "story.txt"])
    engram.run_pending()
    rows = engram.db.query("SELECT id FROM chunks ORDER BY ord")
    assert len(rows) >= 4  # overlapping chunks, so the stitching is exercised
    middle = rows[len(rows) // 2][0]
    chunk = engram.docs.chunks([middle])[middle]
    quote = " ".join(chunk.text.split(". ")[1].split()) + "."
    view = engram.source(middle, quote)
    whole = view.before + view.passage_start + view.quote + view.passage_end + view.after
    assert whole == STORY.rstrip("\n")
    assert view.passage_start + view.quote + view.passage_end == chunk.text
    assert view.quote and " ".join(view.quote.split()) == quote
    assert view.position.startswith("lines ") and view.path.endswith("story.txt")
    assert engram.source(middle, "words that are nowhere").quote == ""
    assert engram.source(10**9) is None


def test_added_files_land_in_the_drop_folder_safely(engram, tmp_path) -> None:
    sent = tmp_path / "upload"
    sent.mkdir()
    (sent / "a.txt").write_text("The harbour master of Quell is Ines Varo.\n")
    (sent / "b.png").write_bytes(b"\x89PNG")
    results = engram.add_files([(sent / "a.txt", "../../escape/notes.txt"),
                                (sent / "a.txt", "notes.txt"),
                                (sent / "b.png", "photo.png"),
                                (sent / "a.txt", ".hidden.txt")])
    drop = engram.settings.effective_drop_folder
    assert [Path(r.path).name if r.path else None for r in results] == ["notes.txt", "notes (2).txt", None, None]
    assert all(Path(r.path).parent == drop for r in results if r.path)
    assert "reads only" in results[2].refused and results[3].refused
    assert not list(drop.glob(".*"))  # no temporary file left behind
    engram.run_pending()
    assert {Path(d.path).name: d.status for d in engram.document_page().items} == {
        "notes.txt": "learned", "notes (2).txt": "learned"}
