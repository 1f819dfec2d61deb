"""Playbook files: a versioned JSON format, written atomically, read with full validation.

Format ``engram-playbook`` version 1 (documented in README.md)::

    {"format": "engram-playbook", "format_version": 1, "name": "default", "version": 12,
     "exported_at": "2025-01-01T12:00:00Z",
     "bullets": [{"id": 3, "section": "units", "content": "...", "helpful": 2, "harmful": 0}]}

A file from elsewhere is untrusted: reading checks its size before reading it, its encoding, its
JSON, then every field against the schema (no unknown fields, names that cannot be paths, text and
count limits, unique bullet ids), and reports every rejected field at once, by its place in the
file (``bullets[3].content: ...``). JSON only: nothing is ever unpickled or executed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from store.atomic import write_atomic
from store.playbooks import BULLET_MAX_CHARS, NAME_PATTERN, Playbook, Section, valid_name

FORMAT = "engram-playbook"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_BULLETS = 5000
MAX_COUNTER = 10**9


class FileBullet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, le=MAX_COUNTER)
    section: Section = "general"
    content: str = Field(min_length=1, max_length=BULLET_MAX_CHARS)
    helpful: int = Field(0, ge=0, le=MAX_COUNTER)
    harmful: int = Field(0, ge=0, le=MAX_COUNTER)


class PlaybookFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["engram-playbook"]
    format_version: Literal[1]
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(0, ge=0, le=MAX_COUNTER)
    exported_at: str = Field("", max_length=40)
    bullets: list[FileBullet] = Field(max_length=MAX_BULLETS)

    @field_validator("name")
    @classmethod
    def _no_dots(cls, name: str) -> str:
        if not valid_name(name):
            raise ValueError("'..' is not allowed in a playbook name")
        return name

    @model_validator(mode="after")
    def _unique_ids(self) -> PlaybookFile:
        seen: set[int] = set()
        twice = sorted({b.id for b in self.bullets if b.id in seen or seen.add(b.id)})  # type: ignore[func-returns-value]
        if twice:
            raise ValueError(f"bullet id(s) {', '.join(map(str, twice))} appear more than once")
        return self


class PlaybookFileError(ValueError):
    """The file is not a valid playbook; ``errors`` lists every problem found."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        super().__init__(f"{path} is not a valid playbook file: " + "; ".join(errors))
        self.path = path
        self.errors = errors


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "file"


def _validation_errors(exc: ValidationError) -> list[str]:
    return [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]


def to_file(playbook: Playbook) -> PlaybookFile:
    return PlaybookFile(
        format=FORMAT, format_version=FORMAT_VERSION, name=playbook.name, version=playbook.version,
        exported_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        bullets=[FileBullet(**b.model_dump()) for b in playbook.bullets])


def write_playbook_file(playbook: Playbook, path: Path) -> Path:
    """Write ``playbook`` to ``path`` atomically (a crash leaves the old file or the new one)."""
    path = Path(path)
    write_atomic(path, (to_file(playbook).model_dump_json(indent=2) + "\n").encode("utf-8"))
    return path


def parse_playbook(raw: bytes, path: Path) -> PlaybookFile:
    """Validate the bytes of a playbook file (``PlaybookFileError`` lists every problem)."""
    if len(raw) > MAX_FILE_BYTES:
        raise PlaybookFileError(path, [f"larger than {MAX_FILE_BYTES // 1024} KB"])
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PlaybookFileError(path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    except json.JSONDecodeError as exc:
        raise PlaybookFileError(path, [f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]) from exc
    except RecursionError as exc:
        raise PlaybookFileError(path, ["not JSON this program reads: nested too deeply"]) from exc
    if not isinstance(data, dict):
        raise PlaybookFileError(path, ["file: the top level must be a JSON object"])
    if data.get("format") == FORMAT and isinstance(data.get("format_version"), int) \
            and data["format_version"] > FORMAT_VERSION:
        raise PlaybookFileError(path, [f"format_version {data['format_version']} was written by a newer "
                                       f"Engram; this one reads version {FORMAT_VERSION}"])
    try:
        return PlaybookFile.model_validate(data)
    except ValidationError as exc:
        raise PlaybookFileError(path, _validation_errors(exc)) from exc


def read_playbook_file(path: Path) -> PlaybookFile:
    path = Path(path)
    if not path.is_file():
        raise PlaybookFileError(path, ["no such file"])
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PlaybookFileError(path, [f"larger than {MAX_FILE_BYTES // 1024} KB ({size} bytes)"])
    with path.open("rb") as handle:
        return parse_playbook(handle.read(MAX_FILE_BYTES + 1), path)

