"""Small text formats the tabs share."""

from datetime import datetime, timezone
from pathlib import Path

from bs4 import BeautifulSoup
from markdown_it import MarkdownIt

from app.core import EMBEDDED, EMBEDDED_TITLE

_MARKDOWN = MarkdownIt("commonmark", {"html": False})  # raw HTML stays text, never markup


def human_size(size: int | float | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


BACKEND_TITLES = {"llamacpp": "llama.cpp", "torch": "PyTorch", "ollama": "Ollama"}


def short_model(model: str) -> str:
    """A model's name as people say it: the built-in one by its name, a file or folder path by
    its last part."""
    if model == EMBEDDED:
        return f"{EMBEDDED_TITLE} (built in)"
    return Path(model).name if "/" in model else model


def backend_title(backend: str) -> str:
    """"llama.cpp", not the setting's "llamacpp"."""
    return BACKEND_TITLES.get(backend, backend)


def local_moment(stamp: str) -> datetime:
    """A UTC time as SQLite writes it (``2026-01-31 09:15:00``) in this computer's time zone."""
    return datetime.fromisoformat(stamp.replace("T", " ")).replace(tzinfo=timezone.utc).astimezone()


def local_time(stamp: str | None) -> str:
    """``local_moment`` as people read it; a stamp that is not a time is shown as it is."""
    if not stamp:
        return ""
    try:
        return local_moment(stamp).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def plain_text(markdown: str) -> str:
    """Markdown as the words a reader sees ("# Quillmark **Foods**" -> "Quillmark Foods"): quotes
    from a Markdown file are shown as text, not as its raw syntax."""
    return " ".join(BeautifulSoup(_MARKDOWN.render(markdown), "html.parser").get_text().split())
