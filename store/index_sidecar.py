"""The vector index's JSON sidecar, readable without faiss.

``store/vector_index.py`` writes it next to the index file on every save and checks it before
trusting that file; ``engram status`` reads the saved index's size and kind from it alone, so a
status never loads faiss (or numpy's linear algebra) just to count vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

FORMAT_VERSION = 1
FLAT, IVF = "flat", "ivf"


class SavedIndex(BaseModel):
    """What the index file on disk holds, by its sidecar."""

    count: int
    kind: str


def sidecar_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".json")


def read_sidecar(index_path: Path) -> dict[str, Any]:
    """The sidecar's fields; OSError or ValueError when it is missing or of an unknown format."""
    meta = json.loads(sidecar_path(index_path).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ValueError("sidecar missing fields or of an unknown format")
    if meta.get("kind") not in (FLAT, IVF):
        raise ValueError(f"unknown kind {meta.get('kind')!r}")
    return meta


def saved_index(index_path: Path) -> SavedIndex | None:
    """The saved index's size and kind; None when there is no readable sidecar."""
    try:
        meta = read_sidecar(index_path)
        return SavedIndex(count=int(meta["count"]), kind=meta["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
