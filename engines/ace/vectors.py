"""Bullet embeddings, computed once per distinct text and kept in memory.

Selection and de-duplication compare every bullet on every call; bullets change rarely, so each
text is embedded once (in batches) and looked up afterwards. A playbook of a few hundred short
bullets costs a few hundred kilobytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

MAX_CACHED = 20_000


class VectorCache:
    def __init__(self, embed: Callable[[list[str]], np.ndarray]) -> None:
        self._embed = embed
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors, in order."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            computed = self._embed(missing)
            with self._lock:
                if len(self._vectors) + len(missing) > MAX_CACHED:
                    self._vectors.clear()
                self._vectors.update(zip(missing, computed))
        with self._lock:
            found = [self._vectors.get(t) for t in texts]
        if any(v is None for v in found):  # cleared meanwhile by another thread: compute directly
            return np.asarray(self._embed(texts), dtype=np.float32)
        return np.stack(found).astype(np.float32) if found else np.zeros((0, 0), dtype=np.float32)
