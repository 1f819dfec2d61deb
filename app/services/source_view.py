"""What a citation link opens: the cited passage in the text around it, as the store holds it.

The chunks of a page overlap (each repeats the end of the one before) and are exact slices of the
page's text, so stitching them by their character offsets gives back the page's text; the cited
chunk is marked in it, and inside the chunk the sentence the answer quoted.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from engines.base import Passage
from store.database import Database
from store.document_text import StoredChunk, chunk_window


class SourceView(BaseModel):
    """The text around a cited chunk in five consecutive parts (the middle three are the chunk)."""

    chunk_id: int
    document_id: int
    path: str
    position: str
    before: str
    passage_start: str
    quote: str  # empty when the quoted sentence was not found in the chunk
    passage_end: str
    after: str
    more_before: bool
    more_after: bool


def stitch(chunks: list[StoredChunk]) -> tuple[str, dict[int, int]]:
    """The text the chunks were cut from, and where each chunk starts in it."""
    text, starts = "", {}
    end, previous = 0, None
    for chunk in chunks:
        if previous is None:
            starts[chunk.id], text = 0, chunk.text
        elif chunk.char_start < end:  # overlap: only the part not yet written is new
            starts[chunk.id] = len(text) - (end - chunk.char_start)
            text += chunk.text[end - chunk.char_start:]
        else:  # a gap of whitespace the chunker dropped: keep the line breaks it held
            lines = chunk.line_start - previous.line_end
            text += "\n" * lines if lines > 0 else " "
            starts[chunk.id] = len(text)
            text += chunk.text
        end, previous = max(end, chunk.char_end), chunk
    return text, starts


def find_quote(passage: str, quote: str) -> tuple[int, int] | None:
    """Where ``quote`` (whitespace-normalised, maybe cut with "…") lies in ``passage``."""
    words = quote.strip().rstrip("…").split()
    if not words:
        return None
    found = re.search(r"\s+".join(re.escape(w) for w in words), passage)
    return found.span() if found else None


def source_view(db: Database, chunk_id: int, quote: str = "", radius: int = 12) -> SourceView | None:
    """The view of stored chunk ``chunk_id``; None when the chunk is gone (file changed or forgotten)."""
    window = chunk_window(db, chunk_id, radius)
    if window is None:
        return None
    text, starts = stitch(window.chunks)
    cited = window.cited
    start = starts[cited.id]
    stop = start + len(cited.text)
    span = find_quote(cited.text, quote) if quote else None
    q_start, q_end = span or (0, 0)
    position = Passage(chunk_id=cited.id, document_id=window.document_id, path=window.path,
                       page=cited.page, line_start=cited.line_start, line_end=cited.line_end,
                       score=0.0, text="").position
    return SourceView(
        chunk_id=cited.id, document_id=window.document_id, path=window.path, position=position,
        before=text[:start], passage_start=cited.text[:q_start], quote=cited.text[q_start:q_end],
        passage_end=cited.text[q_end:], after=text[stop:],
        more_before=window.more_before, more_after=window.more_after,
    )
