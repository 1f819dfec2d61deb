"""Where things live inside the data folder."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class DataPaths(BaseModel):
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "store.db"

    @property
    def index(self) -> Path:
        return self.root / "index" / "chunks.faiss"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def cache(self) -> Path:
        """Rebuildable copies (e.g. a GGUF dequantized for torch): safe to delete."""
        return self.root / "cache"

    def ensure(self) -> "DataPaths":
        for folder in (self.root, self.index.parent, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
        return self
