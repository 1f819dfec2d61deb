"""parse_file on real files of every supported format, and a clear error for each bad file."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from app.ingest.parsers import SUPPORTED_SUFFIXES, ParseError, parse_file

LIMIT = 1024 * 1024


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]], pad: int = 0) -> bytes:
    """A minimal valid PDF (Helvetica text, one line per entry); an empty list is a blank page.
    ``pad`` > 0 appends that many spaces to each page's content, Flate-compressed (a bomb)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        body = "BT /F1 11 Tf 14 TL 72 760 Td " + " ".join(f"{_pdf_string(s)} Tj T*" for s in lines)
        stream = (body + " ET") if lines else ""
        if pad:
            packed = zlib.compress(stream.encode("latin-1") + b" " * pad, 9).decode("latin-1")
            objects.append(f"<< /Length {len(packed)} /Filter /FlateDecode >>\nstream\n{packed}\nendstream")
        else:
            length = len(stream.encode("latin-1"))
            objects.append(f"<< /Length {length} >>\nstream\n{stream}\nendstream")
        content_id = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def parse_error(path: Path, max_bytes: int = LIMIT) -> str:
    with pytest.raises(ParseError) as info:
        parse_file(path, max_bytes)
    return str(info.value)


# ------------------------------------------------------------------------------------ good files


@pytest.mark.parametrize("name", ["notes.txt", "readme.md", "doc.markdown", "guide.rst", "UP.TXT"])
def test_plain_text_is_one_section_from_line_one(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "# Title\r\n\r\nFirst paragraph.\r\nSecond line.\n")
    doc = parse_file(path, LIMIT)
    assert doc.kind == Path(name).suffix.lower().lstrip(".")
    assert doc.path == str(path)
    assert len(doc.sections) == 1
    section = doc.sections[0]
    assert section.text == "# Title\n\nFirst paragraph.\nSecond line.\n"
    assert (section.page, section.line_start) == (None, 1)


def test_text_with_byte_order_marks(tmp_path: Path) -> None:
    text = "Zoë visits Kraków.\nLine two.\n"
    for name, data in [("bom8.txt", b"\xef\xbb\xbf" + text.encode()),
                       ("bom16.txt", text.encode("utf-16")),
                       ("bom16be.md", b"\xfe\xff" + text.encode("utf-16-be"))]:
        assert parse_file(write(tmp_path, name, data), LIMIT).sections[0].text == text


def test_html_drops_scripts_styles_and_blank_runs(tmp_path: Path) -> None:
    html = """<!doctype html><html><head><title>Moon base</title>
    <style>body { color: red; }</style><script>var secret = "SCRIPT_TEXT";</script></head>
    <body><h1>Tycho station</h1>\n\n\n\n<p>Oxygen is made from <b>ice</b>.</p>
    <noscript>enable javascript</noscript><!-- a comment -->
    <ul><li>first</li><li>second</li></ul>A<br>B</body></html>"""
    doc = parse_file(write(tmp_path, "page.html", html), LIMIT)
    text = doc.sections[0].text
    assert doc.kind == "html" and doc.sections[0].line_start == 1
    for kept in ("Moon base", "Tycho station", "Oxygen is made from ice.", "first", "second"):
        assert kept in text
    for dropped in ("SCRIPT_TEXT", "color: red", "enable javascript", "a comment"):
        assert dropped not in text
    assert "\nfirst\n\nsecond\n" in text and "A\nB" in text  # blocks and <br> break lines
    assert "\n\n\n" not in text and text == text.strip()


def test_html_in_declared_latin1_charset(tmp_path: Path) -> None:
    html = '<html><head><meta charset="iso-8859-1"></head><body><p>Café crème</p></body></html>'
    doc = parse_file(write(tmp_path, "old.htm", html.encode("latin-1")), LIMIT)
    assert "Café crème" in doc.sections[0].text


def test_pdf_one_section_per_page_skipping_blank_pages(tmp_path: Path) -> None:
    data = make_pdf([["Page one says hello.", "Second line (here)."], [], ["Third page text."]])
    doc = parse_file(write(tmp_path, "report.pdf", data), LIMIT)
    assert doc.kind == "pdf"
    assert [s.page for s in doc.sections] == [1, 3]
    assert "Page one says hello." in doc.sections[0].text
    assert "Second line (here)." in doc.sections[0].text
    assert doc.sections[0].text.index("Page one") < doc.sections[0].text.index("Second line")
    assert "Third page text." in doc.sections[1].text
    assert all(s.line_start == 1 for s in doc.sections)


def test_pdf_encrypted_with_empty_user_password_opens(tmp_path: Path) -> None:
    data = encrypt_pdf(make_pdf([["Readable although encrypted."]]), user_password="")
    doc = parse_file(write(tmp_path, "owner-only.pdf", data), LIMIT)
    assert "Readable although encrypted." in doc.sections[0].text


def test_docx_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Quarterly plan", level=1)
    document.add_paragraph("The launch moves to March.")
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).text = "Owner"
    table.cell(0, 1).text = "Task"
    table.cell(0, 2).text = "Due"
    table.cell(1, 0).text = "Ada"
    merged = table.cell(1, 1).merge(table.cell(1, 2))
    merged.text = "Write the MERGED spec"
    document.add_paragraph("Closing remark.")
    path = tmp_path / "plan.docx"
    document.save(str(path))

    doc = parse_file(path, LIMIT)
    text = doc.sections[0].text
    assert doc.kind == "docx" and len(doc.sections) == 1
    order = ["Quarterly plan", "The launch moves to March.", "Owner", "Task", "Due", "Ada",
             "Write the MERGED spec", "Closing remark."]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    assert text.count("MERGED") == 1  # a merged cell is read once


def test_jsonl_one_section_per_record_with_its_line(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a1", "title": "Moons", "text": "Io has volcanoes.", "score": 3}),
        "",
        json.dumps("A bare string record."),
        json.dumps({"id": "x9", "note": "no preferred key here", "n": 5}),
        "   ",
        json.dumps({"messages": [{"role": "user", "content": "What is Io?"},
                                 {"role": "assistant", "content": "A moon of Jupiter."}]}),
        json.dumps(42),
    ]
    doc = parse_file(write(tmp_path, "data.jsonl", "\n".join(lines) + "\n"), LIMIT)
    got = [(s.line_start, s.text) for s in doc.sections]
    assert got == [
        (1, "Io has volcanoes.\nMoons"),  # preferred keys in preference order; id/score left out
        (3, "A bare string record."),
        (4, "x9\nno preferred key here"),  # no preferred key: every string value
        (6, "What is Io?\nA moon of Jupiter."),
    ]


def test_ndjson_suffix_is_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.NDJSON", '{"body": "hello"}\r\n{"body": "world"}')
    doc = parse_file(path, LIMIT)
    assert doc.kind == "ndjson"
    assert [(s.line_start, s.text) for s in doc.sections] == [(1, "hello"), (2, "world")]


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == {".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf",
                                  ".docx", ".jsonl", ".ndjson"}


# ------------------------------------------------------------------------------------- bad files


def test_empty_file(tmp_path: Path) -> None:
    assert parse_error(write(tmp_path, "empty.txt", b"")) == "empty file (0 bytes)"
    assert parse_error(write(tmp_path, "empty.pdf", b"")) == "empty file (0 bytes)"


def test_whitespace_only_file_has_no_text(tmp_path: Path) -> None:
    assert parse_error(write(tmp_path, "blank.md", " \n\n\t \n")) == "no text found"
    assert parse_error(write(tmp_path, "numbers.jsonl", "1\n2\n{\"n\": 3}\n")) == "no text found"
    assert parse_error(write(tmp_path, "empty.html", "<script>x()</script>")) == "no text found"


def test_binary_renamed_txt(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
    assert parse_error(write(tmp_path, "image.txt", png)) == "binary content, not text"
    controls = bytes([1, 2, 3, 4, 5, 6, 14, 15, 16, 17]) * 50 + b"some words" * 10
    assert parse_error(write(tmp_path, "noise.md", controls)) == "binary content, not text"


def test_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.txt", "Café crème brûlée, naïve façade.".encode("latin-1"))
    assert parse_error(path) == "not valid UTF-8 text"


def test_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", b"a" * 3 * 1024 * 1024 + b"b" * 200_000)
    assert parse_error(path, max_bytes=2 * 1024 * 1024) == "file too large: 3.2 MB > limit 2 MB"
    assert parse_file(path, 4 * 1024 * 1024).sections  # under a higher limit it reads


def test_corrupt_pdf(tmp_path: Path) -> None:
    good = make_pdf([["Some text that will be cut off."]] * 3)
    assert parse_error(write(tmp_path, "cut.pdf", good[:60])).startswith("corrupt PDF: ")
    assert parse_error(write(tmp_path, "fake.pdf", "this is not a PDF at all")).startswith(
        "corrupt PDF: ")


def test_encrypted_pdf(tmp_path: Path) -> None:
    data = encrypt_pdf(make_pdf([["Top secret."]]), user_password="hunter2")
    assert parse_error(write(tmp_path, "locked.pdf", data)) == "encrypted PDF (password required)"


def test_pdf_without_text(tmp_path: Path) -> None:
    message = parse_error(write(tmp_path, "scan.pdf", make_pdf([[], []])))
    assert message == "PDF has no extractable text (scanned?)"


def test_docx_that_is_not_a_zip(tmp_path: Path) -> None:
    path = write(tmp_path, "fake.docx", "plain words pretending to be Word")
    assert parse_error(path) == "corrupt DOCX: not a zip archive"


def test_zip_that_is_not_a_docx(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    assert parse_error(write(tmp_path, "other.docx", buf.getvalue())).startswith("corrupt DOCX: ")


def test_docx_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\x00" * (3 * 1024 * 1024))
    path = write(tmp_path, "bomb.docx", buf.getvalue())
    assert path.stat().st_size < 100_000
    message = parse_error(path, max_bytes=100_000)  # may expand to 20x = ~1.9 MB
    assert message.startswith("DOCX expands to 3.0 MB > limit") and "zip bomb" in message


@pytest.mark.parametrize(("pages", "pad", "reason"), [
    (1, 100 * 1024 * 1024, "safety limit: a decompression bomb"),  # one stream beyond pypdf's cap
    (2, 9 * 1024 * 1024, "page 1 inflates to 9 MB"),  # one page beyond Engram's page cap
    (14, 5 * 1024 * 1024, "page 13 inflates to 5 MB of content (65 MB so far"),  # the total cap
])
def test_pdf_decompression_bombs_are_refused_fast(tmp_path: Path, pages: int, pad: int,
                                                  reason: str) -> None:
    path = write(tmp_path, "bomb.pdf", make_pdf([["Hello"]] * pages, pad=pad))
    assert path.stat().st_size < 2 * 1024 * 1024
    started = time.monotonic()
    assert reason in parse_error(path, 50 * LIMIT)
    assert time.monotonic() - started < 20  # without the caps: minutes and gigabytes


def test_flate_pdf_within_the_caps_parses(tmp_path: Path) -> None:
    path = write(tmp_path, "fine.pdf", make_pdf([["Compressed page text."]], pad=1000))
    assert parse_file(path, LIMIT).sections[0].text.strip() == "Compressed page text."


def test_jsonl_bad_line_names_the_line(tmp_path: Path) -> None:
    text = '{"text": "ok"}\n\n{"text": "fine"}\n{"text": oops}\n{"text": "later"}\n'
    message = parse_error(write(tmp_path, "broken.jsonl", text))
    assert message.startswith("jsonl line 4: not valid JSON")


def test_unsupported_suffix(tmp_path: Path) -> None:
    assert parse_error(write(tmp_path, "data.xyz", "words")) == "unsupported file type .xyz"
    no_suffix = write(tmp_path, "Makefile", "all:")
    assert parse_error(no_suffix) == "unsupported file type (no extension)"


def test_permission_denied(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="engram-perm-"))  # not under root's private tmp
    folder.chmod(0o755)
    path = write(folder, "private.txt", "secret words")
    path.chmod(0)
    try:
        assert parse_error_unprivileged(path) == "cannot read: permission denied"
    finally:
        path.chmod(0o644)
        shutil.rmtree(folder)


# Imports and a first parse happen as root (the checkout may be private to root); then the child
# drops to ``nobody`` and parses the unreadable file.
UNPRIVILEGED_PARSE = """
import os, sys, tempfile
from app.ingest.parsers import ParseError, parse_file
with tempfile.NamedTemporaryFile("w", suffix=".txt") as warm:
    warm.write("warm up the lazy imports")
    warm.flush()
    parse_file(warm.name, 1 << 20)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
try:
    parse_file(sys.argv[1], 1 << 20)
except ParseError as e:
    print(e)
"""


def parse_error_unprivileged(path: Path) -> str:
    """The parse error for ``path`` as an ordinary user sees it: root reads any file, so as root
    the parse runs in a child process that drops to the uid of ``nobody``."""
    if os.geteuid() != 0:
        return parse_error(path)
    done = subprocess.run([sys.executable, "-c", UNPRIVILEGED_PARSE, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_file_deleted_before_parse(tmp_path: Path) -> None:
    path = write(tmp_path, "gone.md", "here a moment ago")
    path.unlink()
    assert parse_error(path) == "cannot read: file not found (deleted or moved)"


def test_directory_and_fifo_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "folder.txt").mkdir()
    assert parse_error(tmp_path / "folder.txt") == "cannot read: is a directory"
    os.mkfifo(tmp_path / "pipe.txt")
    assert parse_error(tmp_path / "pipe.txt") == "not a regular file"  # and does not block
