"""The headings above a place in a text: the context a chunk is embedded with.

A chunk cut from the middle of a long document ("The guard is evaluated after the subject
matched...") rarely names what it is about; its document title and section headings do. Prefixing
them to the text that is embedded (and indexed for keywords) is "contextual chunk headers"
(Anthropic's contextual retrieval, 2024, without the model call): the chunk itself is unchanged.
Headings are Markdown ``#`` lines and reStructuredText/setext titles (a line underlined with a run
of ``= - ~ ^ * # +`` at least as long as the title, less two). A reStructuredText level is the order
in which its underline character first appears, as Sphinx and docutils read it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from pathlib import Path

from pydantic import BaseModel

from store.document_text import StoredChunk

_MARKDOWN = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_UNDERLINE = re.compile(r"^([=\-~^*#+])\1{2,}$")
MAX_HEADER_CHARS = 200
"""A header longer than this is cut: it must name the chunk, not crowd it out of the model's window."""


class Heading(BaseModel):
    offset: int  # character offset of the heading's line
    level: int  # 1 = top
    title: str


def headings(text: str) -> list[Heading]:
    """The headings of ``text`` in order."""
    found: list[Heading] = []
    rst_levels: dict[str, int] = {}
    lines = text.split("\n")
    offset = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        md = _MARKDOWN.match(stripped)
        under = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if md and not line.startswith((" ", "\t")):
            found.append(Heading(offset=offset, level=len(md.group(1)), title=md.group(2).strip()))
        elif (stripped and not _UNDERLINE.match(stripped) and _UNDERLINE.match(under)
              and len(under) >= len(stripped) - 2 and not line.startswith((" ", "\t"))):
            level = rst_levels.setdefault(under[0], len(rst_levels) + 1)
            found.append(Heading(offset=offset, level=level, title=stripped))
        offset += len(line) + 1
    return found


def heading_path(found: list[Heading], position: int) -> list[str]:
    """Titles of the headings that enclose ``position``, outermost first."""
    path: list[Heading] = []
    for h in found[:bisect_right([h.offset for h in found], position)]:
        while path and path[-1].level >= h.level:
            path.pop()
        path.append(h)
    return [h.title for h in path]


def document_title(path: str, found: list[Heading]) -> str:
    """The first heading when the text opens with one, else the file name in words."""
    if found and found[0].offset == 0:
        return found[0].title
    return re.sub(r"[-_.]+", " ", Path(path).stem).strip() or Path(path).name or "document"


def chunk_header(title: str, found: list[Heading], position: int) -> str:
    """"Title > Section > Subsection" of the chunk starting at ``position`` (the title once)."""
    parts = [title, *(t for t in heading_path(found, position) if t != title)]
    header = " > ".join(dict.fromkeys(p for p in parts if p))
    return header[:MAX_HEADER_CHARS]


HEADERS_MARK = "|headers"
"""Appended to an embedding identity when the library's chunks are embedded with their context."""


def library_identity(identity: str, headers: bool) -> str:
    """The identity of a library's vectors: the model's, and whether headers were embedded."""
    return identity + HEADERS_MARK if headers else identity


def embedding_text(context: str, text: str, headers: bool) -> str:
    """What is embedded for a chunk: its context on a line of its own, then its text."""
    return f"{context}\n\n{text}" if headers and context else text


def stored_contexts(path: str, chunks: list[StoredChunk]) -> dict[int, str]:
    """Contexts of a document's stored chunks (in order), for chunks stored before contexts were.
    Each section's text is laid out again from its chunks (exact slices at their offsets; the
    whitespace between them, never inside a heading's two lines, becomes line breaks). A section
    ends where the page changes or the offsets start again (every chunk starts after the last)."""
    sections: list[list[StoredChunk]] = []
    for chunk in chunks:
        last = sections[-1][-1] if sections else None
        if last is None or chunk.page != last.page or chunk.char_start <= last.char_start:
            sections.append([])
        sections[-1].append(chunk)
    texts = [_lay_out(section) for section in sections]
    title = document_title(path, headings(texts[0]) if texts else [])
    contexts: dict[int, str] = {}
    for section, text in zip(sections, texts):
        found = headings(text)
        contexts.update({c.id: chunk_header(title, found, c.char_start) for c in section})
    return contexts


def _lay_out(section: list[StoredChunk]) -> str:
    text = ""
    for chunk in section:
        end = chunk.char_start + len(chunk.text)
        if chunk.char_start >= len(text):
            text += "\n" * (chunk.char_start - len(text)) + chunk.text
        elif end > len(text):
            text = text[:chunk.char_start] + chunk.text
    return text
