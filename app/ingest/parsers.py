"""Turn one file into text sections, or fail with one clear, human-readable reason.

Every failure a user can cause by dropping a file into a watched folder (empty, binary, wrong
encoding, too large, corrupt, encrypted, unreadable, gone) becomes a ``ParseError`` whose message
is shown next to that file in the Library; nothing else escapes ``parse_file``. Sections keep the
positions the chunker needs for citations: the page (PDF) and the source line a section starts on.
Text formats stay one section per file so that the chunker's line numbers are exact.
"""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PLAIN_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SUPPORTED_SUFFIXES: frozenset[str] = (
    PLAIN_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES | frozenset({".pdf", ".docx"})
)

MB = 1024 * 1024
SNIFF_BYTES = 8192  # how much of a text file the binary check looks at
MAX_CONTROL_RATIO = 0.05  # more control characters than this in the sniffed part: not text
DOCX_EXPANSION = 20  # a .docx may unpack to at most this many times the file-size limit ...
DOCX_ABSOLUTE_CAP = 1024 * MB  # ... and never to more than this, whatever the limit
# A text page's content stream is kilobytes; pypdf parses it in Python (~5 MB/s), so a small
# PDF whose streams inflate to gigabytes would take hours. Page content beyond these is refused.
PDF_PAGE_CONTENT_CAP = 8 * MB
PDF_CONTENT_CAP = 64 * MB
NOT_UTF8 = "not valid UTF-8 text"
JSON_TEXT_KEYS = ("text", "content", "body", "question", "answer", "title")

# Control characters that plain text legitimately contains (tab, newlines, form feed, escape).
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1b\x08")
_CONTROL_CHARS = "".join(chr(c) for c in range(32) if chr(c) not in _ALLOWED_CONTROLS) + "\x7f"
_CONTROL_RE = re.compile(f"[{re.escape(_CONTROL_CHARS)}]")
_BLANK_RUNS_RE = re.compile(r"\n{3,}")


class Section(BaseModel):
    """A run of text and where it starts in the source: 1-based page (PDF only) and line."""

    text: str
    page: int | None = None
    line_start: int = 1


class ParsedDocument(BaseModel):
    path: str
    kind: str  # the lower-case suffix without the dot: "txt", "pdf", ...
    sections: list[Section]


class ParseError(Exception):
    """Why one file could not be read; ``str(exc)`` is meant for the user."""


def parse_file(path: Path, max_bytes: int) -> ParsedDocument:
    """Parse ``path`` into sections; any problem with the file raises ``ParseError``.

    The size is checked from ``stat`` before anything is read, so an oversized file costs nothing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        raise ParseError(f"unsupported file type {suffix or '(no extension)'}")
    data = _read_limited(path, max_bytes)
    sections = [s for s in parser(data, max_bytes) if s.text.strip()]
    if not sections:
        raise ParseError("no text found")
    return ParsedDocument(path=str(path), kind=suffix.lstrip("."), sections=sections)


# ---------------------------------------------------------------------------------------- reading


def _os_reason(exc: OSError) -> str:
    """'cannot read: permission denied' reads better than a Python exception repr."""
    if isinstance(exc, FileNotFoundError):
        return "cannot read: file not found (deleted or moved)"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot read: {reason[:1].lower()}{reason[1:]}"


def too_large_error(size: int, max_bytes: int) -> ParseError:
    return ParseError(f"file too large: {size / MB:.1f} MB > limit {max_bytes / MB:g} MB")


def _read_limited(path: Path, max_bytes: int) -> bytes:
    """Read the whole file, refusing empty, oversized and non-regular files before reading."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ParseError("cannot read: is a directory")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise ParseError("not a regular file")
        if st.st_size > max_bytes:
            raise too_large_error(st.st_size, max_bytes)
        if st.st_size == 0:
            raise ParseError("empty file (0 bytes)")
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise ParseError(_os_reason(exc)) from exc
    if len(data) > max_bytes:
        raise too_large_error(len(data), max_bytes)
    if not data:
        raise ParseError("empty file (0 bytes)")
    return data


# ------------------------------------------------------------------------------------------- text


def _control_ratio(sample: str) -> float:
    return len(_CONTROL_RE.findall(sample)) / max(1, len(sample))


def _normalise_newlines(text: str) -> str:
    """One line ending (\\n) everywhere, so that line numbers count the same way for every file."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_text(data: bytes) -> str:
    """Bytes -> str for text formats: UTF-8 (BOM optional) or UTF-16/32 with a BOM; else ParseError.

    Binary content is told apart from wrongly-encoded text so the user knows which one it is.
    """
    bom_codec = _bom_codec(data)
    if bom_codec is None:
        sample = data[:SNIFF_BYTES]
        if b"\x00" in sample or _control_ratio(sample.decode("latin-1")) > MAX_CONTROL_RATIO:
            raise ParseError("binary content, not text")
    try:
        text = data.decode(bom_codec or "utf-8")
    except UnicodeDecodeError as exc:
        if bom_codec:
            raise ParseError(f"not valid {bom_codec.split('-sig')[0].upper()} text") from exc
        raise ParseError(NOT_UTF8) from exc
    text = text.removeprefix("\ufeff")
    if "\x00" in text[:SNIFF_BYTES] or _control_ratio(text[:SNIFF_BYTES]) > MAX_CONTROL_RATIO:
        raise ParseError("binary content, not text")
    return _normalise_newlines(text)


def _bom_codec(data: bytes) -> str | None:
    """The codec a byte-order mark announces (UTF-32 first: its LE mark starts like UTF-16's)."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    return None


def _parse_plain(data: bytes, max_bytes: int) -> list[Section]:
    """One section per file: the chunker derives exact line numbers from it."""
    return [Section(text=decode_text(data))]


# ------------------------------------------------------------------------------------------- html


def _decode_html(data: bytes) -> str:
    """UTF-8 like other text, but honour a page's own declared charset (old latin-1 pages)."""
    try:
        return decode_text(data)
    except ParseError as exc:
        if str(exc) != NOT_UTF8:
            raise
        from bs4.dammit import EncodingDetector

        declared = EncodingDetector.find_declared_encoding(data, is_html=True)
        if not declared:
            raise
        try:
            return _normalise_newlines(data.decode(declared))
        except (LookupError, UnicodeDecodeError):
            raise ParseError(f"not valid {declared} text (declared by the page)") from exc


_HTML_BLOCK_TAGS = [
    "address", "article", "aside", "blockquote", "caption", "dd", "details", "div", "dl", "dt",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "option", "p", "pre", "section", "summary", "table", "td", "th",
    "title", "tr", "ul",
]


def _parse_html(data: bytes, max_bytes: int) -> list[Section]:
    """Visible text only: scripts, styles and noscript fallbacks are not document content."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode_html(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    for tag in soup(_HTML_BLOCK_TAGS):  # inline markup (<b>, <a>) must not break a sentence
        tag.insert_before("\n")
        tag.insert_after("\n")
    for tag in soup("br"):
        tag.replace_with("\n")
    return [Section(text=_tidy_lines(soup.get_text()))]


def _tidy_lines(text: str) -> str:
    """Strip each line and keep at most one blank line between paragraphs."""
    lines = (line.strip() for line in _normalise_newlines(text).split("\n"))
    return _BLANK_RUNS_RE.sub("\n\n", "\n".join(lines)).strip("\n")


# -------------------------------------------------------------------------------------------- pdf


def _parse_pdf(data: bytes, max_bytes: int) -> list[Section]:
    """One section per page with text; pages are 1-based like every PDF viewer shows them."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    try:
        reader = PdfReader(io.BytesIO(data))
        _unlock_pdf(reader)
        _check_pdf_expansion(reader)
        texts = [page.extract_text() or "" for page in reader.pages]
    except ParseError:
        raise
    except FileNotDecryptedError as exc:
        raise ParseError("encrypted PDF (password required)") from exc
    except LimitReachedError as exc:
        raise ParseError(f"PDF stream inflates beyond pypdf's safety limit: a decompression bomb? "
                         f"({_describe(exc)})") from exc
    except DependencyError as exc:
        raise ParseError(f"encrypted PDF: cannot decrypt ({exc})") from exc
    except Exception as exc:  # pypdf raises many types (and plain ValueError/KeyError) on bad input
        raise ParseError(f"corrupt PDF: {_describe(exc)}") from exc
    if not texts:
        raise ParseError("PDF has no pages")
    sections = [
        Section(text=_normalise_newlines(text.replace("\x00", "")), page=number)
        for number, text in enumerate(texts, start=1)
    ]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise ParseError("PDF has no extractable text (scanned?)")
    return sections


def _check_pdf_expansion(reader: Any) -> None:
    """Inflate every page's content stream (fast, in C) and refuse decompression bombs before the
    slow text extraction starts. pypdf itself caps each single stream at 75 MB."""
    total = 0
    for number, page in enumerate(reader.pages, start=1):
        contents = page.get_contents()
        size = len(contents.get_data()) if contents is not None else 0
        total += size
        if size > PDF_PAGE_CONTENT_CAP or total > PDF_CONTENT_CAP:
            raise ParseError(
                f"PDF page {number} inflates to {size / MB:.0f} MB of content "
                f"({total / MB:.0f} MB so far; limits {PDF_PAGE_CONTENT_CAP // MB} MB a page, "
                f"{PDF_CONTENT_CAP // MB} MB in all): a decompression bomb?"
            )


def _unlock_pdf(reader: Any) -> None:
    """Open PDFs that are encrypted only against editing (empty user password); refuse the rest."""
    from pypdf import PasswordType

    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise ParseError("encrypted PDF (password required)")


def _describe(exc: Exception) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."


# ------------------------------------------------------------------------------------------- docx


def _check_zip_expansion(data: bytes, max_bytes: int) -> None:
    """Refuse zip bombs before python-docx inflates anything: the declared sizes are enforced
    by zipfile itself while reading, so checking them up front is enough."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ParseError("corrupt DOCX: not a zip archive") from exc
    limit = min(max_bytes * DOCX_EXPANSION, DOCX_ABSOLUTE_CAP)
    if total > limit:
        raise ParseError(
            f"DOCX expands to {total / MB:.1f} MB > limit {limit / MB:g} MB (zip bomb?)"
        )


def _parse_docx(data: bytes, max_bytes: int) -> list[Section]:
    """Body paragraphs and table cells in document order, one paragraph per line."""
    _check_zip_expansion(data, max_bytes)
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
        lines = list(_docx_lines(document))
    except Exception as exc:  # missing parts, bad XML, wrong content type, ...
        raise ParseError(f"corrupt DOCX: {_describe(exc)}") from exc
    return [Section(text=_BLANK_RUNS_RE.sub("\n\n", "\n".join(lines)).strip("\n"))]


def _docx_lines(container: Any) -> Iterator[str]:
    """Paragraph texts of a document or table cell, recursing into (nested) tables; a merged cell
    spans several grid positions but is read once."""
    for block in container.iter_inner_content():
        if hasattr(block, "rows"):
            seen: set[Any] = set()  # the cell elements themselves: keeping them alive keeps
            for row in block.rows:  # lxml's proxies (and their identity) stable
                for cell in row.cells:
                    if cell._tc not in seen:
                        seen.add(cell._tc)
                        yield from _docx_lines(cell)
                yield ""
        else:
            yield _normalise_newlines(block.text)


# ------------------------------------------------------------------------------------------ jsonl


def _parse_jsonl(data: bytes, max_bytes: int) -> list[Section]:
    """One section per record, starting on its own line; one bad line fails the whole file,
    naming the line, because silently indexing half a data file misleads more than an error."""
    sections = []
    for number, line in enumerate(decode_text(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            text = "\n".join(_json_strings(value))
        except json.JSONDecodeError as exc:
            raise ParseError(f"jsonl line {number}: not valid JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise ParseError(f"jsonl line {number}: nested too deeply") from exc
        if text.strip():
            sections.append(Section(text=text, line_start=number))
    return sections


def _json_strings(value: Any) -> Iterator[str]:
    """The text of a JSON value: for an object its text-like fields when it has any (so ids and
    labels stay out), else every string inside it; chat-style ``messages`` lists work too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)
    elif isinstance(value, dict):
        preferred = [value[k] for k in JSON_TEXT_KEYS if isinstance(value.get(k), str)]
        if any(s.strip() for s in preferred):
            yield from (s for s in preferred if s.strip())
        else:
            for item in value.values():
                yield from _json_strings(item)


_PARSERS: dict[str, Callable[[bytes, int], list[Section]]] = {
    **{s: _parse_plain for s in PLAIN_SUFFIXES},
    **{s: _parse_html for s in HTML_SUFFIXES},
    **{s: _parse_jsonl for s in JSONL_SUFFIXES},
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
}
