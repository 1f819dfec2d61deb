"""What a citation link opens: the cited passage in the text around it, as the store holds it.

The chunks of a page overlap (each repeats the end of the one before) and are exact slices of the
page's text, so stitching them by their character offsets gives back the page's text; the cited
chunk is marked in it, and inside the chunk the sentence the answer quoted.

A chunk consolidated from chat (``store/memory_facts.py``) is shown as what it is: the
conversation, the person's turn that stated or corrected the fact marked, the fact inside it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from engines.base import Passage
from store.conversations import ConversationStore, MessageRow
from store.database import Database
from store.documents import DocumentStore
from store.document_text import StoredChunk, chunk_window
from store.memory_facts import FactRow, MemoryFactStore, conversation_path


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
    kind: Literal["file", "conversation"] = "file"
    title: str = ""  # a conversation's title (a file's title is its name)


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
    fact = MemoryFactStore(db).by_chunk(chunk_id)
    if fact is not None:
        return conversation_view(db, fact)
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


def turn_text(message: MessageRow) -> str:
    """A turn as the source view writes it: who said it, and a correction typed on an answer."""
    said = f"{'You' if message.role == 'user' else 'Engram'}: {message.content.strip()}"
    return said + (f"\nYour correction: {message.correction}" if message.correction else "")


def conversation_view(db: Database, fact: FactRow, radius: int = 6) -> SourceView | None:
    """The conversation around the turn a consolidated fact comes from, the fact marked in it."""
    conversations = ConversationStore(db)
    row = conversations.get(fact.conversation_id)
    messages = conversations.messages(fact.conversation_id)
    at = next((i for i, m in enumerate(messages) if m.id == fact.message_id), None)
    if row is None or at is None:
        return None
    shown = messages[max(0, at - radius): at + radius + 1]
    cited = turn_text(messages[at])
    wanted = (messages[at].correction or "") if fact.kind == "correction" else fact.text
    span = find_quote(cited, wanted) or (0, 0)
    before = "".join(turn_text(m) + "\n\n" for m in shown if m.id < fact.message_id)
    after = "".join("\n\n" + turn_text(m) for m in shown if m.id > fact.message_id)
    path = conversation_path(fact.conversation_id)
    document = DocumentStore(db).get(path)
    return SourceView(
        chunk_id=fact.chunk_id or 0, document_id=document.id if document else 0, path=path,
        position=f"turn {at + 1}", before=before, passage_start=cited[:span[0]],
        quote=cited[span[0]:span[1]], passage_end=cited[span[1]:], after=after,
        more_before=at - radius > 0, more_after=at + radius + 1 < len(messages),
        kind="conversation", title=row.title)
