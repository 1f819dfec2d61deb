"""Sentence-aware chunking with token overlap that keeps exact source positions.

Each section is cut into sentence-ish units (sentence ends, paragraph breaks, headings, list
items), each with its character span. All units of a document are counted with the embedding
tokenizer in one batched call, then packed greedily into chunks of at most ``max_tokens``; the
next chunk repeats the previous chunk's trailing units up to ``overlap_tokens``. A chunk's text is
always ``section.text[char_start:char_end]``, so a citation can quote and locate it exactly.

A chunk's token count is the sum of its units' counts. Units are separated by whitespace, and
word-piece tokenizers (BERT family, the embedded MiniLM) split on whitespace first, so the sum is
the exact count of the chunk text. Only units cut out of one long unbroken word (or CJK text
without spaces) join without whitespace; chunks containing such joins are counted again.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator

from app.ingest.parsers import ParsedDocument
from store.documents import NewChunk

TokenCounter = Callable[[list[str]], list[int]]
Span = tuple[int, int, int]  # (section index, char start, char end), end exclusive

# Where one unit ends and the next begins: the separator is the whole match, or for sentence ends
# its ``sep`` group (the punctuation stays with the sentence). Each alternative starts with a
# literal character class so the scan skips ordinary text quickly.
_BOUNDARY_RE = re.compile(
    r"\n[ \t]*\n\s*"  # blank line(s): a paragraph break
    # a line break before a heading, list item, quote, table row or code fence
    r"|\n(?=[ \t]*(?:#{1,6}[ \t]|[-*+•‣◦▪][ \t]|\d{1,3}[.)][ \t]|[>|]|```|~~~))"
    r"|(?P<period>[.!?…])[\"'”’»)\]]?(?P<sep>\s+)"  # sentence end + whitespace
    r"|[。！？](?P<cjk>\s*)"  # CJK sentence ends need no space after them
)
# A period after these words usually does not end a sentence ("Dr. Smith", "e.g. this").
_ABBREVIATION_RE = re.compile(
    r"(?:^|[^\w.])(?:[A-Za-z]|e\.g|i\.e|cf|vs|Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|No|Nr|Fig|Vol|Inc|Ltd|"
    r"approx|ca)\.$"
)
_LINE_RE = re.compile(r"[^\s](?:[^\n]*[^\s])?")  # a line without its surrounding whitespace
_WORD_RE = re.compile(r"\S+")


def chunk_document(doc: ParsedDocument, count_tokens: TokenCounter, max_tokens: int,
                   overlap_tokens: int) -> list[NewChunk]:
    """Chunks of every section of ``doc`` in order; chunks never cross a section (page).

    ``count_tokens`` gets whole batches (one call for all units of the document, one more per
    refinement level only when some unit is longer than ``max_tokens``).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    overlap_tokens = max(0, overlap_tokens)
    texts = [section.text for section in doc.sections]
    spans = [(si, a, b) for si, text in enumerate(texts) for a, b in split_units(text)]
    counts = _count(count_tokens, texts, spans)
    spans, counts = _fit_units(texts, spans, counts, count_tokens, max_tokens)
    packed = list(_pack(spans, counts, max_tokens, overlap_tokens))
    packed = _recount_tight(texts, spans, packed, count_tokens, max_tokens)
    return _to_specs(doc, texts, spans, packed)


# ------------------------------------------------------------------------------------- splitting


def split_units(text: str) -> list[tuple[int, int]]:
    """Sentence-ish (start, end) spans of ``text``, stripped of surrounding whitespace, in order."""
    spans = []
    begin = 0
    for match in _BOUNDARY_RE.finditer(text):
        if match.group("sep") is not None:
            if match.group("period") == "." and _is_abbreviation(text, match.end("period")):
                continue
            start = match.start("sep")
        elif match.group("cjk") is not None:
            start = match.start("cjk")
        else:
            start = match.start()
        _append_stripped(spans, text, begin, start)
        begin = match.end()
    _append_stripped(spans, text, begin, len(text))
    return spans


def _is_abbreviation(text: str, end: int) -> bool:
    return _ABBREVIATION_RE.search(text[max(0, end - 12):end]) is not None


def _append_stripped(spans: list[tuple[int, int]], text: str, a: int, b: int) -> None:
    """Move the span's ends past whitespace; drop it when nothing is left."""
    piece = text[a:b]
    stripped = piece.lstrip()
    if stripped:
        a += len(piece) - len(stripped)
        spans.append((a, a + len(stripped.rstrip())))


def _split_lines(text: str, a: int, b: int, tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    return [m.span() for m in _LINE_RE.finditer(text, a, b)]


def _split_words(text: str, a: int, b: int, tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD_RE.finditer(text, a, b)]


def _split_chars(text: str, a: int, b: int, tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    """Equal character slices of about half the limit each, for text with no whitespace at all."""
    length = b - a
    pieces = min(length, max(2, -(-2 * tokens // max_tokens)))
    cuts = [a + length * i // pieces for i in range(pieces + 1)]
    return [(x, y) for x, y in zip(cuts, cuts[1:]) if y > x]


# -------------------------------------------------------------------------------------- counting


def _count(count_tokens: TokenCounter, texts: list[str], spans: list[Span]) -> list[int]:
    if not spans:
        return []
    counts = count_tokens([texts[si][a:b] for si, a, b in spans])
    if len(counts) != len(spans):
        raise ValueError(f"count_tokens returned {len(counts)} counts for {len(spans)} texts")
    return [int(c) for c in counts]


def _fit_units(texts: list[str], spans: list[Span], counts: list[int], count_tokens: TokenCounter,
               max_tokens: int) -> tuple[list[Span], list[int]]:
    """Replace every unit over the limit by finer pieces: its lines, then its words, then (only
    for unbroken runs longer than the limit) character slices, until every piece fits."""
    for splitter in (_split_lines, _split_words):
        spans, counts = _refine(texts, spans, counts, count_tokens, max_tokens, splitter)
    while any(c > max_tokens and b - a > 1 for (_, a, b), c in zip(spans, counts)):
        spans, counts = _refine(texts, spans, counts, count_tokens, max_tokens, _split_chars)
    return spans, counts


def _refine(texts: list[str], spans: list[Span], counts: list[int], count_tokens: TokenCounter,
            max_tokens: int, splitter: Callable[..., list[tuple[int, int]]]
            ) -> tuple[list[Span], list[int]]:
    """One refinement level; all new pieces are counted in a single batch."""
    pieces: dict[int, list[Span]] = {}
    for i, ((si, a, b), c) in enumerate(zip(spans, counts)):
        if c > max_tokens:
            parts = splitter(texts[si], a, b, c, max_tokens)
            if len(parts) > 1:
                pieces[i] = [(si, x, y) for x, y in parts]
    if not pieces:
        return spans, counts
    new = [p for parts in pieces.values() for p in parts]
    new_counts = iter(_count(count_tokens, texts, new))
    out_spans: list[Span] = []
    out_counts: list[int] = []
    for i, (span, c) in enumerate(zip(spans, counts)):
        for part in pieces.get(i, (span,)):
            out_spans.append(part)
            out_counts.append(next(new_counts) if i in pieces else c)
    return out_spans, out_counts


# --------------------------------------------------------------------------------------- packing

Packed = tuple[int, int, int]  # (first unit, end unit exclusive, token count)


def _pack(spans: list[Span], counts: list[int], max_tokens: int,
          overlap_tokens: int) -> Iterator[Packed]:
    """Greedy packing per section. The next chunk starts with the previous chunk's trailing units
    worth at most ``overlap_tokens``, never all of them, and only as many as still leave room for
    the next new unit, so every chunk brings new text."""
    n = len(spans)
    section_start = 0
    while section_start < n:
        section = spans[section_start][0]
        section_end = section_start
        while section_end < n and spans[section_end][0] == section:
            section_end += 1
        i = section_start
        while i < section_end:
            j, total = i, 0
            while j < section_end and (j == i or total + counts[j] <= max_tokens):
                total += counts[j]
                j += 1
            yield i, j, total
            if j >= section_end:
                break
            k, shared = j, 0
            while (k - 1 > i and shared + counts[k - 1] <= overlap_tokens
                   and shared + counts[k - 1] + counts[j] <= max_tokens):
                k -= 1
                shared += counts[k]
            i = k
        section_start = section_end


def _recount_tight(texts: list[str], spans: list[Span], packed: list[Packed],
                   count_tokens: TokenCounter, max_tokens: int) -> list[Packed]:
    """Count again the chunks whose units touch without whitespace (their summed count is only an
    estimate there), halving any that turn out too long, until every count is exact and fits."""
    result = [(lo, hi, -1 if _has_tight_join(spans, lo, hi) else tokens)
              for lo, hi, tokens in packed]
    while todo := [idx for idx, p in enumerate(result) if p[2] < 0]:
        exact = _count(count_tokens, texts, [_chunk_span(spans, *result[i][:2]) for i in todo])
        halves: dict[int, list[Packed]] = {}
        for idx, tokens in zip(todo, exact):
            lo, hi, _ = result[idx]
            if tokens <= max_tokens or hi - lo == 1:
                result[idx] = (lo, hi, tokens)
            else:
                mid = (lo + hi) // 2
                halves[idx] = [(lo, mid, -1), (mid, hi, -1)]
        if halves:
            result = [q for idx, p in enumerate(result) for q in halves.get(idx, [p])]
    return result


def _has_tight_join(spans: list[Span], lo: int, hi: int) -> bool:
    return any(spans[x][1] == spans[x - 1][2] for x in range(lo + 1, hi))


def _chunk_span(spans: list[Span], lo: int, hi: int) -> Span:
    return spans[lo][0], spans[lo][1], spans[hi - 1][2]


# --------------------------------------------------------------------------------------- output


def _to_specs(doc: ParsedDocument, texts: list[str], spans: list[Span],
              packed: list[Packed]) -> list[NewChunk]:
    newlines: dict[int, list[int]] = {}
    specs = []
    for lo, hi, tokens in packed:
        si, a, b = _chunk_span(spans, lo, hi)
        section = doc.sections[si]
        if si not in newlines:
            newlines[si] = [m.start() for m in re.finditer("\n", texts[si])]
        breaks = newlines[si]
        specs.append(NewChunk(
            text=texts[si][a:b], page=section.page,
            line_start=section.line_start + bisect_left(breaks, a),
            line_end=section.line_start + bisect_left(breaks, b - 1),
            char_start=a, char_end=b, token_count=tokens,
        ))
    return specs
