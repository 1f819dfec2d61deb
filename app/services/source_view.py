"""What a citation link opens: the cited passage in the text around it, as the store holds it.

The chunks of a page overlap (each repeats the end of the one before) and are exact slices of the
page's text, so stitching them by their character offsets gives back the page's text; the cited
chunk is marked in it, and inside the chunk the sentence the answer quoted.

A chunk consolidated from chat (``store/memory_facts.py``) is shown as what it is: the
conversation, the person's turn that stated or corrected the fact marked, the fact inside it. An
exchange recalled from an earlier conversation (no stored chunk: its citation names the
conversation and its turns) is shown the same way, its turns marked.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from app.memory.episodic import SPEAKERS
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
    kind: Literal["file", "conversation", "recalled"] = "file"
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
    messages = ConversationStore(db).messages(fact.conversation_id)
    at = next((n for n, m in enumerate(messages, 1) if m.id == fact.message_id), None)
    if at is None:
        return None
    wanted = (messages[at - 1].correction or "") if fact.kind == "correction" else fact.text
    return turns_view(db, fact.conversation_id, messages, at, at, wanted, "conversation", fact.chunk_id or 0,
                      radius)


def exchange_view(db: Database, conversation_id: int, first: int, last: int, quote: str = "",
                  radius: int = 6) -> SourceView | None:
    """The conversation around an exchange recalled from it (its turns ``first``..``last``,
    counted from 1, as its citation gives them), the quoted sentence marked; None when the
    conversation or the turns are gone."""
    said = re.sub(rf"^(?:{'|'.join(SPEAKERS.values())}): ", "", quote.strip())  # the prompt's names
    messages = ConversationStore(db).messages(conversation_id)
    return turns_view(db, conversation_id, messages, first, last, said, "recalled", 0, radius)


def turns_view(db: Database, conversation_id: int, messages: list[MessageRow], first: int, last: int,
               wanted: str, kind: Literal["conversation", "recalled"], chunk_id: int,
               radius: int) -> SourceView | None:
    """The conversation's turns ``first``..``last`` (from 1, of its ``messages``, read once by the
    caller) marked among up to ``radius`` turns either side, ``wanted`` marked inside them where
    it is found."""
    row = ConversationStore(db).get(conversation_id)
    if row is None or not 1 <= first <= last <= len(messages):
        return None
    cited = "\n\n".join(turn_text(m) for m in messages[first - 1:last])
    span = find_quote(cited, wanted) if wanted else None
    q_start, q_end = span or (0, 0)
    before = "".join(turn_text(m) + "\n\n" for m in messages[max(0, first - 1 - radius):first - 1])
    after = "".join("\n\n" + turn_text(m) for m in messages[last:last + radius])
    path = conversation_path(conversation_id)
    document = DocumentStore(db).get(path)
    position = f"turn {first}" if first == last else f"turns {first}-{last}"
    return SourceView(
        chunk_id=chunk_id, document_id=document.id if document else 0, path=path,
        position=position, before=before, passage_start=cited[:q_start],
        quote=cited[q_start:q_end], passage_end=cited[q_end:], after=after,
        more_before=first - 1 - radius > 0, more_after=last + radius < len(messages),
        kind=kind, title=row.title)
