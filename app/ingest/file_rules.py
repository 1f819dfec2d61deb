"""Which files in a watched folder are documents, and which are skipped by rule.

Hidden files, editor swap/backup files, partial downloads and office lock files are never
documents; neither are types no parser reads. One function decides, for the scanner and the
watcher alike.
"""

from __future__ import annotations

from pathlib import Path

from app.ingest.parsers import SUPPORTED_SUFFIXES

TEMP_SUFFIXES = frozenset({".tmp", ".temp", ".swp", ".swo", ".swx", ".part", ".crdownload",
                           ".download", ".partial", ".bak", ".lock"})
TEMP_PREFIXES = ("~$", ".~lock", "#")


def is_ignored_name(name: str) -> bool:
    """Hidden or temporary names (checked for every path component below a watched folder)."""
    return (
        name.startswith(".")
        or name.startswith(TEMP_PREFIXES)
        or name.endswith("~")
        or Path(name).suffix.lower() in TEMP_SUFFIXES
    )


def is_document(path: Path, root: Path | None = None) -> bool:
    """True when ``path`` names a file Engram should read (by name only, no disk access)."""
    parts = path.relative_to(root).parts if root and path.is_relative_to(root) else (path.name,)
    if any(is_ignored_name(p) for p in parts):
        return False
    return path.suffix.lower() in SUPPORTED_SUFFIXES


BAD_NAME_ERROR = "file name is not valid UTF-8: rename the file to have it learned"


def storable(path: str) -> bool:
    """True when the path can be stored as text (POSIX names may be any bytes; the store's are UTF-8)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_name(path: str) -> str:
    """A UTF-8 stand-in for an undecodable path: the bad bytes shown as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
