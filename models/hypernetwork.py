"""A Perceiver-style hypernetwork that writes a document into a LoRA adapter in one forward pass.

After Doc-to-LoRA / Text-to-LoRA (Sakana AI): the frozen language model reads the document once;
its per-layer activations (the residual stream entering each target layer) are what the
hypernetwork sees. For every target layer, ``rank`` latent queries (shared latents plus a
learned layer embedding) cross-attend to that layer's activations, so the cost grows linearly
with the document and a long document is just more keys (the engine computes them chunk by
chunk). A few self-attention blocks let the latents of all layers talk, then two shared heads
per target module (down_proj by default) turn latent ``i`` of layer ``l`` into row ``i`` of LoRA
``A`` and column ``i`` of LoRA ``B`` for that layer's module.

``B``'s head starts at zero, as LoRA's ``B`` does: an untrained hypernetwork's adapter is an
exact no-op. ``A``'s rows are unit vectors, so the adapter's size lives in ``B`` alone.

Several documents compose by concatenating their ranks (``compose``), up to a budget.
No I/O here: the engine (``engines.d2l``) loads, saves and applies what this emits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class HyperShape:
    """What the hypernetwork reads and writes (the model's sizes and the adapter's rank)."""

    layers: int  # target layers (one adapter each)
    hidden: int  # the model's hidden size: the activations read
    modules: tuple[tuple[str, int, int], ...]  # (name, in_features, out_features) per target module
    rank: int = 4
    latent_dim: int = 128
    heads: int = 4
    blocks: int = 2


class Hypernetwork(nn.Module):
    """Per-layer activations of a document -> a rank-``rank`` LoRA (A, B) per target layer."""

    def __init__(self, shape: HyperShape) -> None:
        super().__init__()
        if shape.latent_dim % shape.heads:
            raise ValueError(f"latent_dim {shape.latent_dim} is not divisible by heads {shape.heads}")
        self.shape = shape
        d = shape.latent_dim
        self.read = nn.Sequential(nn.LayerNorm(shape.hidden), nn.Linear(shape.hidden, d))
        self.layer_embedding = nn.Parameter(torch.randn(shape.layers, d) * 0.02)
        self.latents = nn.Parameter(torch.randn(shape.rank, d) * 0.02)
        self.cross_norm = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, shape.heads, batch_first=True)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, shape.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(shape.blocks))
        self.out_norm = nn.LayerNorm(d)
        self.head_a = nn.ModuleDict({name: nn.Linear(d, fan_in) for name, fan_in, _ in shape.modules})
        self.head_b = nn.ModuleDict({name: nn.Linear(d, fan_out) for name, _, fan_out in shape.modules})
        for head in self.head_b.values():  # B = 0: the adapter starts as a no-op
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def keys(self, activations: Tensor) -> Tensor:
        """[layers, T, hidden] activations -> [layers, T, latent_dim] keys (one chunk at a time
        is fine: keys of chunks concatenate along T)."""
        if activations.dim() != 3 or activations.shape[0] != self.shape.layers:
            raise ValueError(f"activations of shape {tuple(activations.shape)}, expected "
                             f"[{self.shape.layers}, T, {self.shape.hidden}]")
        return self.read(activations.float()) + self.layer_embedding[:, None]

    def forward(self, keys: Tensor, mask: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """[layers, T, d] keys (``keys``), optional [T] bool mask of real tokens -> per target
        module (A [layers, rank, in_features], B [layers, out_features, rank])."""
        s = self.shape
        queries = self.latents[None] + self.layer_embedding[:, None]  # [L, r, d]
        padding = None if mask is None else ~mask[None].expand(s.layers, -1)
        read, _ = self.cross(self.cross_norm(queries), keys, keys, key_padding_mask=padding, need_weights=False)
        z = queries + read
        flat = z.reshape(1, s.layers * s.rank, -1)  # every layer's latents attend to each other
        for block in self.blocks:
            flat = block(flat)
        z = self.out_norm(flat.reshape(s.layers, s.rank, -1))
        return {name: (F.normalize(self.head_a[name](z), dim=-1),  # [L, r, in]: unit rows
                       self.head_b[name](z).transpose(1, 2))  # [L, out, r]
                for name, _, _ in s.modules}


def compose(adapters: list[tuple[Tensor, Tensor]], budget: int) -> tuple[Tensor, Tensor] | None:
    """Several documents' adapters as one: their ranks concatenated, in order, as long as the
    total stays within ``budget`` (later ones that do not fit are left out). None: none given."""
    kept_a, kept_b, used = [], [], 0
    for a, b in adapters:
        if used + a.shape[-2] > budget:
            continue
        kept_a.append(a)
        kept_b.append(b)
        used += a.shape[-2]
    if not kept_a:
        return None
    return torch.cat(kept_a, dim=-2), torch.cat(kept_b, dim=-1)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
