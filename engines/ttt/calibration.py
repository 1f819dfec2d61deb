"""Background firing rates: how often each neuron fires in general use, measured once, cached.

The sparse gate needs, for every neuron of the learning layers, its firing rate on ordinary use
(the IDF side of TF-IDF). General use of an assistant is both prose and questions asked in its
chat template: measured on prose alone, the neurons of the template and of question phrasing
look rare, so the gate would pick them for every document's rehearsal questions, and then every
question anyone asks runs through changed neurons. That takes a few thousand tokens through the
model, so the counts are stored as a blob keyed by everything they depend on (model weights,
layers, firing share, text, questions), and measured again only when one of those changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from engines.ttt.trainer import (
    Piece,
    collate,
    firing_counts,
    frozen_prefixes,
    pack,
    text_pieces,
)
from models.dual_mlp import DualMLP, original
from store.blobs import BlobStore

WINDOW = 256
BATCH = 4


def fingerprint(duals: list[DualMLP]) -> str:
    """Identifies the frozen weights of the learning layers (a different model, another hash)."""
    h = hashlib.sha256()
    for dual in duals:
        w = dual.frozen.gate_proj.weight
        h.update(f"{tuple(w.shape)}:{float(w.double().sum()):.9e}:{float(w[0].double().abs().sum()):.9e}".encode())
    return h.hexdigest()[:16]


def cache_key(duals: list[DualMLP], layer_ids: list[int], fraction: float, tokens: int, text: str,
              questions: Sequence[Piece] = ()) -> str:
    h = hashlib.sha256(f"{fingerprint(duals)}|{layer_ids}|{fraction}|{tokens}|".encode())
    h.update(text.encode())
    for piece in questions:
        h.update(f"|{piece.ids}".encode())
    return f"ttt/calibration-{h.hexdigest()[:16]}"


def first_tokens(pieces: Sequence[Piece], tokens: int) -> list[Piece]:
    """The leading pieces holding at most ``tokens`` tokens, counted as background."""
    kept: list[Piece] = []
    for piece in pieces:
        tokens -= len(piece)
        if tokens < 0:
            break
        kept.append(Piece(piece.ids, piece.labels, "background"))
    return kept


def background_rates(blobs: BlobStore, cortex: Any, duals: list[DualMLP], layer_ids: list[int],
                     text: str, fraction: float, tokens: int, progress: Callable[[float], None],
                     questions: Sequence[Piece] = ()) -> tuple[Tensor, int]:
    """Firing counts [L, I] of the original model over ``tokens`` tokens of ``text`` and as many
    of ``questions`` (chat-template pieces), and the number of tokens they were counted over
    (from the cache when it has them)."""
    questions = first_tokens(questions, tokens)
    key = cache_key(duals, layer_ids, fraction, tokens, text, questions)
    cached = blobs.get(key)
    if cached is not None:
        return cached["counts"], int(cached["tokens"])
    pieces = text_pieces(cortex.tokenizer, text, WINDOW, "background", limit=tokens)
    pad = cortex.tokenizer.pad_token_id or 0
    batches = [collate(pieces[i:i + BATCH], pad, cortex.device) for i in range(0, len(pieces), BATCH)]
    batches += [collate(b, pad, cortex.device) for b in pack(questions, WINDOW * BATCH)]
    first = min(layer_ids)
    # the original model's rates, whatever has been learned since
    counts = firing_counts(cortex.model, cortex.lock, duals, frozen_prefixes(cortex.model, cortex.lock, batches, first),
                           (first, max(layer_ids)), fraction, progress, inside=lambda: original(duals),
                           total=len(batches))
    blobs.put(key, "calibration", {"counts": counts.counts.to(torch.float64), "tokens": counts.tokens},
              meta={"layers": layer_ids, "fire_fraction": fraction, "tokens": counts.tokens})
    return counts.counts, counts.tokens
