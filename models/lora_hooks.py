"""LoRA deltas added to a frozen model's modules, a different adapter for each row of a batch.

A forward hook on each target module (``down_proj`` of every decoder layer, say) adds

    delta(x)[b] = scale * (x[b] @ A[b].T) @ B[b].T

where row ``b`` of the batch has its own ``A [R, in]`` and ``B [out, R]`` (the adapters of the
documents its question was routed to, concatenated along the rank; zero-padded to the batch's
largest rank). Nothing is replaced in the model: with no adapters set the hooks return the
module's output untouched, so the model is bit for bit the original. Gradients flow into A and
B (meta-training trains the hypernetwork that emits them through these hooks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class LoRAHooks:
    """Per-row LoRA on ``modules`` (one adapter slot per module, set for a batch at a time)."""

    def __init__(self, modules: list[nn.Module], scale: float = 1.0) -> None:
        self.modules = modules
        self.scale = scale
        self.a: list[Tensor] | None = None  # per module [B, R, in]
        self.b: list[Tensor] | None = None  # per module [B, out, R]
        self._handles: list[Any] = []

    def install(self) -> None:
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def set(self, a: Tensor, b: Tensor) -> None:
        """``a`` [modules, B, R, in] and ``b`` [modules, B, out, R]: row b's adapter per module."""
        if a.shape[0] != len(self.modules) or b.shape[0] != len(self.modules):
            raise ValueError(f"adapters for {a.shape[0]} modules, {len(self.modules)} hooked")
        self.a, self.b = list(a.unbind(0)), list(b.unbind(0))

    def clear(self) -> None:
        self.a = self.b = None

    @contextmanager
    def active(self, a: Tensor | None, b: Tensor | None) -> Iterator[None]:
        """Inside, the model runs with these adapters (None: the original model)."""
        if a is None or b is None:
            yield
            return
        self.set(a, b)
        try:
            yield
        finally:
            self.clear()

    def _hook(self, index: int):  # noqa: ANN202  (a torch forward hook)
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
            if self.a is None or self.b is None:
                return None
            a = self.a[index].to(device=output.device, dtype=output.dtype)
            b = self.b[index].to(device=output.device, dtype=output.dtype)
            x = inputs[0]  # [B, T, in]
            rows, given = x.shape[0], a.shape[0]
            if rows != given:  # rows repeated after the adapters were set (options scored per prompt)
                if rows % given:
                    raise ValueError(f"adapters for {given} rows cannot route a batch of {rows} rows")
                a, b = a.repeat_interleave(rows // given, 0), b.repeat_interleave(rows // given, 0)
            low = torch.einsum("bti,bri->btr", x, a)
            return output + self.scale * torch.einsum("btr,bor->bto", low, b)

        return hook


def batch_adapters(rows: list[tuple[Tensor, Tensor] | None]) -> tuple[Tensor, Tensor] | None:
    """Per-row adapters (A [L, R_b, in], B [L, out, R_b], or None: no adapter) -> one zero-padded
    batch (A [L, B, R, in], B [L, B, out, R]); None when no row has one."""
    present = [r for r in rows if r is not None]
    if not present:
        return None
    layers, _, fan_in = present[0][0].shape
    fan_out = present[0][1].shape[1]
    rank = max(a.shape[1] for a, _ in present)
    out_a = torch.zeros(layers, len(rows), rank, fan_in, dtype=present[0][0].dtype)
    out_b = torch.zeros(layers, len(rows), fan_out, rank, dtype=present[0][1].dtype)
    for i, row in enumerate(rows):
        if row is not None:
            a, b = row
            out_a[:, i, :a.shape[1]] = a
            out_b[:, i, :, :b.shape[2]] = b
    return out_a, out_b
