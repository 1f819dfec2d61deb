"""chunk_document with the real embedding tokenizer: exact positions, bounded overlap, limits."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from app.ingest.chunking import chunk_document, split_units
from store.documents import NewChunk
from app.ingest.parsers import ParsedDocument, Section, parse_file
from tests.test_parsers import make_pdf

LIMIT = 1024 * 1024
WORDS = ("orbit moon station oxygen ice crater rover signal engram memory archive harbour "
         "lantern copper violet meadow quartz tunnel").split()


def sentence(rng: random.Random, low: int = 6, high: int = 24) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + rng.choice(".!?")


def check_chunks(doc: ParsedDocument, chunks: list[NewChunk], embedder, max_tokens: int) -> None:
    """Invariants every chunking must keep, checked against the document and the tokenizer."""
    sections = {s.page: s for s in doc.sections} if doc.kind == "pdf" else None
    for chunk in chunks:
        section = sections[chunk.page] if sections else _section_holding(doc, chunk)
        assert chunk.text == section.text[chunk.char_start:chunk.char_end]
        assert chunk.text.strip() == chunk.text != ""
        lines_before = section.text.count("\n", 0, chunk.char_start)
        assert chunk.line_start == section.line_start + lines_before
        assert chunk.line_end == chunk.line_start + chunk.text.count("\n")
    recount = embedder.count_tokens([c.text for c in chunks])
    assert [c.token_count for c in chunks] == recount
    assert max(recount, default=0) <= max_tokens


def _section_holding(doc: ParsedDocument, chunk: NewChunk) -> Section:
    matches = [s for s in doc.sections
               if s.text[chunk.char_start:chunk.char_end] == chunk.text and s.page == chunk.page]
    assert matches, "chunk text not found at its span in any section"
    return matches[0]


def numbered_text(rng: random.Random, lines: int) -> str:
    return "".join(f"line {n}: {sentence(rng)}\n" for n in range(1, lines + 1))


def test_positions_and_line_numbers_quote_the_source(tmp_path: Path, embedder) -> None:
    rng = random.Random(1)
    path = tmp_path / "numbered.txt"
    path.write_text(numbered_text(rng, 300))
    doc = parse_file(path, LIMIT)
    chunks = chunk_document(doc, embedder.count_tokens, 64, 16)
    assert len(chunks) > 20
    check_chunks(doc, chunks, embedder, 64)
    for chunk in chunks:
        numbers = [int(n) for n in re.findall(r"^line (\d+):", chunk.text, re.M)]
        assert numbers == list(range(chunk.line_start, chunk.line_end + 1))
    assert chunks[0].line_start == 1 and chunks[-1].line_end == 300
    assert all(c.page is None for c in chunks)


def test_overlap_is_present_bounded_and_always_progresses(tmp_path: Path, embedder) -> None:
    rng = random.Random(2)
    text = "\n\n".join(" ".join(sentence(rng) for _ in range(rng.randint(1, 6))) for _ in range(60))
    path = tmp_path / "prose.md"
    path.write_text(text)
    doc = parse_file(path, LIMIT)
    overlap = 24
    chunks = chunk_document(doc, embedder.count_tokens, 96, overlap)
    check_chunks(doc, chunks, embedder, 96)
    shared_counts = []
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.char_start < nxt.char_start  # never the whole previous chunk again
        assert prev.char_end < nxt.char_end  # every chunk brings new text
        if nxt.char_start < prev.char_end:
            shared = text[nxt.char_start:prev.char_end]
            shared_counts.append(embedder.count_tokens([shared])[0])
    assert len(shared_counts) >= len(chunks) // 2  # overlap is the rule, not the exception
    assert max(shared_counts) <= overlap
    # together the chunks cover every word of the text
    covered = [False] * len(text)
    for c in chunks:
        covered[c.char_start:c.char_end] = [True] * (c.char_end - c.char_start)
    assert all(covered[m.start()] for m in re.finditer(r"\S", text))


def test_no_overlap_when_zero(tmp_path: Path, embedder) -> None:
    rng = random.Random(3)
    doc = ParsedDocument(path="x.txt", kind="txt",
                         sections=[Section(text=" ".join(sentence(rng) for _ in range(80)))])
    chunks = chunk_document(doc, embedder.count_tokens, 50, 0)
    check_chunks(doc, chunks, embedder, 50)
    assert all(a.char_end <= b.char_start for a, b in zip(chunks, chunks[1:]))


def test_long_unbroken_text_is_split_into_word_windows(embedder) -> None:
    rng = random.Random(4)
    paragraph = " ".join(rng.choice(WORDS) for _ in range(3000))  # no sentence end, no newline
    cjk = "你好世界他们在月球上工作" * 60  # 720 characters, no spaces, one token each
    doc = ParsedDocument(path="x.txt", kind="txt",
                         sections=[Section(text=paragraph), Section(text=cjk, line_start=5)])
    chunks = chunk_document(doc, embedder.count_tokens, 100, 20)
    check_chunks(doc, chunks, embedder, 100)
    first = [c for c in chunks if c.line_start == 1]
    second = [c for c in chunks if c.line_start == 5]
    assert len(first) >= 30 and len(second) >= 8
    assert all(c.token_count >= 50 for c in first[:-1])  # windows are packed, not tiny
    assert second[0].char_start == 0 and second[-1].char_end == len(cjk)
    assert all(b.char_start <= a.char_end for a, b in zip(second, second[1:]))  # no gaps


def test_long_lines_without_sentences_split_at_line_breaks(embedder) -> None:
    rows = "\n".join(f"row {n}, " + ", ".join(WORDS[(n + i) % len(WORDS)] for i in range(8))
                     for n in range(1, 201))  # a CSV-like block with no sentence punctuation
    doc = ParsedDocument(path="x.txt", kind="txt", sections=[Section(text=rows)])
    chunks = chunk_document(doc, embedder.count_tokens, 80, 10)
    check_chunks(doc, chunks, embedder, 80)
    for chunk in chunks:  # cut at line breaks, so every chunk holds whole rows
        assert chunk.text.startswith("row ") and chunk.text.split("\n")[-1].count(",") == 8
        assert chunk.text.startswith(f"row {chunk.line_start},")


def test_multi_page_pdf_chunks_carry_their_page(tmp_path: Path, embedder) -> None:
    rng = random.Random(5)
    pages = [[f"p{p} l{n} {sentence(rng)}" for n in range(1, 31)] for p in range(1, 4)]
    pages.insert(2, [])  # a blank third page
    path = tmp_path / "book.pdf"
    path.write_bytes(make_pdf(pages))
    doc = parse_file(path, LIMIT)
    chunks = chunk_document(doc, embedder.count_tokens, 60, 12)
    check_chunks(doc, chunks, embedder, 60)
    assert {c.page for c in chunks} == {1, 2, 4}
    for chunk in chunks:  # never crosses a page; line numbers are lines of the page's text
        labels = re.findall(r"p(\d+) l(\d+) ", chunk.text)
        assert {int(p) for p, _ in labels} == {chunk.page if chunk.page < 3 else 3}
        assert int(labels[0][1]) == chunk.line_start
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)


def test_jsonl_records_keep_their_file_lines(tmp_path: Path, embedder) -> None:
    path = tmp_path / "qa.jsonl"
    records = [{"question": f"What is item {n}?", "answer": f"Item {n} is a moon.\nIt orbits."}
               for n in range(1, 6)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    doc = parse_file(path, LIMIT)
    chunks = chunk_document(doc, embedder.count_tokens, 128, 16)
    check_chunks(doc, chunks, embedder, 128)
    assert [(c.line_start, c.text.split("\n")[0]) for c in chunks] == [
        (n, f"What is item {n}?") for n in range(1, 6)]


def test_empty_and_whitespace_sections_give_no_chunks(embedder) -> None:
    doc = ParsedDocument(path="x.txt", kind="txt",
                         sections=[Section(text=""), Section(text="  \n\n\t \n"),
                                   Section(text="\n\n  Only this.  \n\n", line_start=10)])
    chunks = chunk_document(doc, embedder.count_tokens, 64, 8)
    assert [(c.text, c.line_start, c.line_end, c.char_start) for c in chunks] == [
        ("Only this.", 12, 12, 4)]
    assert chunk_document(ParsedDocument(path="y", kind="txt", sections=[]),
                          embedder.count_tokens, 64, 8) == []


def test_sentence_units() -> None:
    text = ("Dr. Smith arrived. She said \"Go!\" Then left.\n\n# Heading\n- first item\n"
            "- second item wraps\nonto a second line.\n你好世界。再见！")
    assert [text[a:b] for a, b in split_units(text)] == [
        "Dr. Smith arrived.", "She said \"Go!\"", "Then left.", "# Heading", "- first item",
        "- second item wraps\nonto a second line.", "你好世界。", "再见！"]


def test_tokenizer_called_once_per_document_and_deterministic(embedder) -> None:
    rng = random.Random(6)
    doc = ParsedDocument(path="x.md", kind="md", sections=[
        Section(text="\n\n".join(sentence(rng) for _ in range(40)), page=None) for _ in range(3)])
    calls = []

    def counting(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        return embedder.count_tokens(texts)

    first = chunk_document(doc, counting, 64, 16)
    assert len(calls) == 1 and calls[0] >= 120
    assert chunk_document(doc, embedder.count_tokens, 64, 16) == first


def test_invalid_max_tokens(embedder) -> None:
    doc = ParsedDocument(path="x", kind="txt", sections=[Section(text="Hello.")])
    with pytest.raises(ValueError):
        chunk_document(doc, embedder.count_tokens, 0, 0)


def test_thousands_of_files_chunk_fast(embedder) -> None:
    rng = random.Random(7)
    docs = [ParsedDocument(path=f"f{i}.md", kind="md", sections=[Section(text="\n\n".join(
        " ".join(sentence(rng) for _ in range(rng.randint(1, 4))) for _ in range(8)))])
        for i in range(2000)]
    tokenizing = 0.0

    def timed(texts: list[str]) -> list[int]:
        nonlocal tokenizing
        start = time.perf_counter()
        counts = embedder.count_tokens(texts)
        tokenizing += time.perf_counter() - start
        return counts

    start = time.perf_counter()
    total = sum(len(chunk_document(d, timed, 200, 40)) for d in docs)
    chunking = time.perf_counter() - start - tokenizing
    assert total >= 2000
    print(f"chunked 2000 files in {chunking:.2f}s (+ {tokenizing:.2f}s tokenizing)")
    assert chunking < 2.0, f"chunking took {chunking:.2f}s besides {tokenizing:.2f}s tokenizing"
