"""The passages a learned document is routed by (``models.delta_router``): what a question about
the document is likely to be close to.

Sentences of prose (hard-wrapped lines joined first), and the items of lists and lines of
``key: value`` one by one; a one-line paragraph without a closing stop is a heading and left out.
"""

from __future__ import annotations

import re
from typing import Protocol

import torch
from torch import Tensor

from engines.base import Embed
from engines.ttt.rehearsal import SENTENCE_END
from store.documents import DocumentStore

RECHECK_S = 30.0  # how often answering checks that the embedding model is still the keys' one
ROUTE_KEYS = 1024  # passages per document kept as its router keys (the first ones)
_ITEM = re.compile(r"^(?:[-*•+]|\d+[.)]|[^\s:]{1,40}:)\s")  # a list item or a key: value line
MIN_WORDS = 4
MAX_CHARS = 1000  # the embedder reads about 200 words of a passage


def passages(text: str) -> list[str]:
    found: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [" ".join(line.split()) for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if len(lines) > 1 and 2 * sum(bool(_ITEM.match(line)) for line in lines) >= len(lines):
            units = lines
        else:
            units = SENTENCE_END.split(" ".join(lines))
            if len(lines) == 1 and units[-1][-1:] not in ".!?":
                units = units[:-1]
        found += [unit[:MAX_CHARS] for unit in units if len(unit.split()) >= MIN_WORDS]
    return found


PROBE = "The quick brown fox jumps over the lazy dog near the river bank."
SAME_EMBEDDER = 0.99  # cosine of the probe's two embeddings: fp32 and bf16 of one model give 0.996+


def probe(embed: Embed) -> Tensor:
    """The fixed probe sentence as ``embed`` embeds it: what tells one embedding model from another."""
    return torch.from_numpy(embed([PROBE]))[0].float()


def same_embedder(saved: Tensor | None, current: Tensor) -> bool:
    """Whether keys made where the probe embedded as ``saved`` may be compared with ``current``'s
    questions (no saved probe: keys from before probes existed, taken as they are)."""
    if saved is None:
        return True
    if saved.shape != current.shape:
        return False
    return float(torch.nn.functional.cosine_similarity(saved, current, dim=0)) >= SAME_EMBEDDER


def embedded_keys(embed: Embed, text: str) -> Tensor:
    """A document's router keys: its first passages embedded (its opening, if it has none)."""
    return torch.from_numpy(embed(passages(text)[:ROUTE_KEYS] or [text[:MAX_CHARS]]))


class KeyedRouter(Protocol):
    """A router with keys from one embedding model (``models.delta_router``, ``models.expert_router``)."""

    probe: Tensor | None

    def __len__(self) -> int: ...

    def dim(self) -> int | None: ...


def matches(router: KeyedRouter, current: Tensor) -> bool:
    """Whether ``router``'s keys may be compared with questions of the embedder whose probe is
    ``current`` (an empty router, or keys from before probes existed, take it from now on)."""
    if not len(router):
        router.probe = current
        return True
    if router.dim() != current.shape[0] or not same_embedder(router.probe, current):
        return False
    if router.probe is None:
        router.probe = current
    return True


def stored_keys(embed: Embed, store: DocumentStore, documents: set[int]) -> dict[int, Tensor]:
    """These stored documents' keys embedded again from their stored text (an embedding-model
    switch; documents without text are left out)."""
    found = {}
    for document_id in sorted(documents):
        text = "\n\n".join(store.chunk_texts(document_id))
        if text.strip():
            found[document_id] = embedded_keys(embed, text)
    return found
