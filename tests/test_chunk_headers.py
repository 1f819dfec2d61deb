"""Contextual chunk headers over the real embedder, SQLite and FAISS: a chunk is embedded with its
document title and section headings in front, and a library embedded without them is re-embedded
through the ordinary re-embedding (search keeps the old vectors until the new ones are complete)."""

from __future__ import annotations

import numpy as np

from app.ingest.headings import chunk_header, document_title, headings, stored_contexts
from store.document_text import StoredChunk
from store.jobs import REEMBED
from tests.helpers import open_engram

MANUAL = ("# Kettle care\n\nA kettle lasts longer when it is looked after.\n\n## Descaling\n\n"
          + " ".join(f"Step {i}: pour in vinegar and water, wait an hour, then rinse it twice." for i in range(12))
          + "\n\n## Storage\n\nKeep it dry and unplugged on a shelf.\n")


def test_headings_of_markdown_and_underlined_titles() -> None:
    text = "Compound statements\n*******************\n\nIntro.\n\nThe match statement\n" \
           "===================\n\nBody.\n\nGuards\n------\n\nA guard.\n"
    found = headings(text)
    assert [(h.level, h.title) for h in found] == [(1, "Compound statements"), (2, "The match statement"),
                                                   (3, "Guards")]
    title = document_title("/x/compound.txt", found)
    assert chunk_header(title, found, text.index("A guard")) == \
        "Compound statements > The match statement > Guards"
    assert chunk_header(title, found, 0) == "Compound statements"
    assert document_title("/notes/kettle-care_2024.md", []) == "kettle care 2024"
    md = headings(MANUAL)
    assert chunk_header("Kettle care", md, MANUAL.index("Keep it dry")) == "Kettle care > Storage"


def ingest(engram, folder, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    engram.ingest([folder])
    engram.run_pending()


def test_a_chunk_is_embedded_with_its_title_and_headings(embedder, tmp_path) -> None:
    engram = open_engram(embedder, chunk_tokens=60, chunk_overlap_tokens=0)
    try:
        ingest(engram, tmp_path / "docs", {"kettle.md": MANUAL})
        rows = engram.db.query("SELECT id, text, context FROM chunks ORDER BY ord")
        assert len(rows) >= 3 and engram.index.identity == embedder.identity + "|headers"
        middle = [r for r in rows if "Step 9" in r["text"] and "Descaling" not in r["text"]][0]
        assert middle["context"] == "Kettle care > Descaling"  # the heading is two chunks back
        stored = engram.docs.vectors([middle["id"]])[0]
        assert np.allclose(stored, embedder.encode([f"Kettle care > Descaling\n\n{middle['text']}"])[0], atol=1e-4)
        assert float(stored @ embedder.encode([middle["text"]])[0]) < 0.99  # not the bare text
    finally:
        engram.close()


def test_contexts_are_worked_out_again_from_stored_chunks() -> None:
    text = MANUAL
    cuts = [0, text.index("## Descaling"), text.index("Step 6"), text.index("## Storage")]
    spans = [StoredChunk(id=i, ord=i, text=text[a:b].strip(), page=None, line_start=1, line_end=1,
                         char_start=a, char_end=b) for i, (a, b) in enumerate(zip(cuts, [*cuts[1:], len(text)]))]
    assert stored_contexts("/x/kettle.md", spans) == {0: "Kettle care", 1: "Kettle care > Descaling",
                                                      2: "Kettle care > Descaling", 3: "Kettle care > Storage"}


def test_turning_headers_on_reembeds_through_the_reembedding(embedder, tmp_path) -> None:
    files = {f"{name}.md": f"# {name} ferry\n\n" + " ".join(
        f"The boat leaves pier {i} at dawn with {i + 3} crates of apples." for i in range(10))
        for name in ("Varn", "Oskel", "Miriel")}
    first = open_engram(embedder, embed_headers="false", chunk_tokens=60, chunk_overlap_tokens=0)
    ingest(first, tmp_path / "notes", files)
    plain = first.docs.vectors(first.docs.chunk_ids())
    first.db.conn.execute("UPDATE chunks SET context = ''")  # as stored before chunks kept one
    first.db.conn.commit()
    first.close()

    engram = open_engram(embedder, chunk_tokens=60, chunk_overlap_tokens=0)
    try:
        assert engram.index.identity == embedder.identity and engram.embedding_switch_pending()
        assert engram.queue_embedding_switch()
        handler = engram.worker.handlers[REEMBED]
        handler.slice_s, handler.batch_chunks = 0.0, 2
        assert engram.worker.run_once(kinds=[REEMBED]) == 1
        assert engram.index.identity == embedder.identity  # half way: the old vectors serve
        assert np.allclose(engram.docs.vectors(engram.docs.chunk_ids()), plain)
        assert "Varn" in engram.search("Varn ferry crates", k=1)[0].path
        for _ in range(100):
            if not engram.worker.run_once(kinds=[REEMBED]):
                break
        assert engram.index.identity == embedder.identity + "|headers" and not engram.embedding_switch_pending()
        rows = engram.db.query("SELECT id, text, context FROM chunks ORDER BY id")
        assert {r["context"] for r in rows} == {"Varn ferry", "Oskel ferry", "Miriel ferry"}
        fresh = embedder.encode([f"{r['context']}\n\n{r['text']}" for r in rows])
        assert np.allclose(engram.docs.vectors([r["id"] for r in rows]), fresh, atol=1e-4)
        assert "Varn" in engram.search("Varn ferry crates", k=1)[0].path
    finally:
        engram.close()
