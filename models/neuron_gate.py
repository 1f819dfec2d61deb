"""Sparse memory gating: which MLP neurons a document may change (after Lin et al. 2025).

"Continual Learning via Sparse Memory Finetuning" updates only the memory slots a new batch
uses far more than background text does, ranked by TF-IDF; the rest of the model, and so what it
knew, stays untouched. Here the "slots" are MLP neurons: a neuron *fires* on a token when its
activation is among that token's strongest ``fire_fraction`` (by magnitude). Over background
text each neuron has a firing rate; over the document a term frequency. A neuron that fires a lot
on the document and rarely in general (high TF-IDF) is where the document's specifics live.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def firing(h: Tensor, fraction: float) -> Tensor:
    """[T, I] activations -> [T, I] bool: each token's top ``ceil(fraction * I)`` neurons."""
    k = max(1, math.ceil(fraction * h.shape[-1]))
    top = h.abs().topk(k, dim=-1).indices
    return torch.zeros_like(h, dtype=torch.bool).scatter_(-1, top, True)


class FiringCounts:
    """How often each neuron of each watched layer fired, and over how many tokens."""

    def __init__(self, layers: int, neurons: int) -> None:
        self.counts = torch.zeros(layers, neurons, dtype=torch.float64)  # [L, I]
        self.tokens = 0

    def add(self, layer: int, h: Tensor, fraction: float, mask: Tensor | None = None) -> None:
        """Count ``h`` [B, T, I] (tokens where ``mask`` [B, T] is False are skipped)."""
        flat = h.detach().reshape(-1, h.shape[-1]).float()
        if mask is not None:
            flat = flat[mask.reshape(-1).to(flat.device)]
        self.counts[layer] += firing(flat, fraction).sum(0).double().cpu()
        if layer == 0:
            self.tokens += int(flat.shape[0])

    def rates(self) -> Tensor:
        return self.counts / max(1, self.tokens)


def tfidf(doc: FiringCounts, background: Tensor, background_tokens: int) -> Tensor:
    """[L, I] scores: the neuron's firing rate on the document times log(1 / background rate).

    ``background`` holds the background firing counts [L, I] over ``background_tokens`` tokens;
    the +1 smoothing keeps a neuron never seen firing in the background finite.
    """
    tf = doc.rates()
    idf = torch.log((background_tokens + 1.0) / (background.double() + 1.0))
    return tf * idf


def quiet(background: Tensor, background_tokens: int, max_rate: float) -> Tensor:
    """[L, I] bool: the neurons firing on at most ``max_rate`` of the background tokens.

    TF-IDF alone favours neurons that fire on most tokens of anything (a high term frequency
    outweighs a modest IDF), and general use runs through exactly those; a document's facts are
    better kept in neurons that ordinary text rarely wakes.
    """
    return background.double() / max(1, background_tokens) <= max_rate


def top_neurons(scores: Tensor, k: int, min_score: float = 0.0, allowed: Tensor | None = None) -> list[Tensor]:
    """Per layer, the ids of the ``k`` best-scoring neurons whose score exceeds ``min_score``,
    among the ``allowed`` ones ([L, I] bool, e.g. ``quiet``; all when None)."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    chosen = []
    for row in scores:  # [I]
        best = row.topk(min(k, row.numel()))
        chosen.append(best.indices[best.values > min_score].sort().values)
    return chosen
