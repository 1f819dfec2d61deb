"""DualMLP: a decoder layer's MLP kept frozen beside a trainable copy that learns documents.

    output(x) = frozen(x) + (1 - alpha) * (trainable(x) - frozen(x))

At ``alpha = 1`` the layer is exactly the original one (the copy is not even computed), so the
model forgets nothing it knew; as ``alpha`` decays the learned copy gets a growing share.

The MLP is the gated kind of Llama-family models, ``down(act(gate(x)) * up(x))``. Neuron ``i``
owns row ``i`` of ``gate`` and ``up`` and column ``i`` of ``down``; the copy is stored
neuron-major (``down`` transposed), so "a neuron's rows" are row ``i`` of all three. An untouched
neuron contributes the same term to both MLPs, so the delta is a sum over touched neurons only:

    trainable(x) - frozen(x) = sum_{i touched} down_t[i] * h_t[i](x) - down_f[i] * h_f[i](x)

which keeps the layer cheap when sparse gating touched few neurons, and makes untouched neurons
contribute exactly nothing. Answering can scale the delta per row (``share``, set by ``shared``:
how much of what was learned a question gets, from ``models.delta_router``). Learning trains
``NeuronRows``: parameters holding only the selected neurons' rows, written back with ``commit``
(every other row stays bit-identical).

The copy is kept in fp32 whatever the model's dtype: an Adam step of 1e-5 vanishes in bf16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

Observer = Callable[[Tensor], None]
"""Sees the frozen MLP's neuron activations ``h`` of each forward, shape [batch, tokens, I]."""


class NeuronRows(nn.Module):
    """The trainable rows of some neurons of one DualMLP: the only weights an update touches."""

    def __init__(self, ids: Tensor, gate: Tensor, up: Tensor, down: Tensor, values_only: bool = False) -> None:
        super().__init__()
        self.register_buffer("ids", ids.to(torch.long))  # [k]
        self.gate = nn.Parameter(gate.detach().clone(), requires_grad=not values_only)  # [k, H]
        self.up = nn.Parameter(up.detach().clone(), requires_grad=not values_only)  # [k, H]
        self.down = nn.Parameter(down.detach().clone())  # [k, H] (columns of down_proj)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class DualMLP(nn.Module):
    def __init__(self, mlp: nn.Module, alpha: float = 1.0) -> None:
        super().__init__()
        for part in ("gate_proj", "up_proj", "down_proj", "act_fn"):
            if not hasattr(mlp, part):
                raise TypeError(f"{type(mlp).__name__} is not a gated MLP (no {part})")
        self.frozen = mlp.requires_grad_(False)
        self.alpha = alpha
        self.observer: Observer | None = None
        self.share: Tensor | None = None  # [B] per-row share of the delta (None: all of it)
        self.silent = False  # every share is 0: the delta is not even computed
        self.rows: NeuronRows | None = None
        self.register_buffer("gate", mlp.gate_proj.weight.detach().float().clone())  # [I, H]
        self.register_buffer("up", mlp.up_proj.weight.detach().float().clone())  # [I, H]
        self.register_buffer("down", mlp.down_proj.weight.detach().float().t().contiguous())  # [I, H]
        self.register_buffer("touched", torch.zeros(self.neurons, dtype=torch.bool))  # [I]
        self._touched_ids: Tensor | None = None

    @property
    def neurons(self) -> int:
        return int(self.gate.shape[0])

    # --- forward -----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # x: [B, T, H]
        f = self.frozen
        h = f.act_fn(f.gate_proj(x)) * f.up_proj(x)  # [B, T, I], exactly LlamaMLP's order of ops
        if self.observer is not None:
            self.observer(h)
        y = f.down_proj(h)  # [B, T, H]
        if self.alpha >= 1.0 or self.silent:
            return y
        scale = self._scale(x)
        delta = self.delta(x, h)
        if delta is None:
            return y
        delta = (1.0 - self.alpha) * delta
        return y + (delta if scale is None else delta * scale).to(y.dtype)

    def _scale(self, x: Tensor) -> Tensor | None:
        """``share`` as [rows, 1, 1]; a batch whose rows were repeated after the shares were set
        (options scored from one cached prompt) repeats them alike."""
        if self.share is None:
            return None
        rows, given = x.shape[0], self.share.shape[0]
        if rows % given:
            raise ValueError(f"{given} shares cannot route a batch of {rows} rows")
        return self.share.to(x.device).repeat_interleave(rows // given)[:, None, None]

    def delta(self, x: Tensor, h: Tensor) -> Tensor | None:
        """trainable(x) - frozen(x), summed over the neurons that differ (or are training)."""
        stored = self.touched_ids()
        if self.rows is not None:
            stored = stored[~torch.isin(stored, self.rows.ids)]
            ids = torch.cat([stored, self.rows.ids])
            gate = torch.cat([self.gate[stored], self.rows.gate])
            up = torch.cat([self.up[stored], self.rows.up])
            down = torch.cat([self.down[stored], self.rows.down])
        elif stored.numel():
            ids, gate, up, down = stored, self.gate[stored], self.up[stored], self.down[stored]
        else:
            return None
        xf = x.float()
        h_t = self.frozen.act_fn(xf @ gate.t()) * (xf @ up.t())  # [B, T, n]
        down_f = self.frozen.down_proj.weight[:, ids].float()  # [H, n]
        return h_t @ down - h[..., ids].float() @ down_f.t()  # [B, T, H]

    def touched_ids(self) -> Tensor:
        if self._touched_ids is None:
            self._touched_ids = self.touched.nonzero().flatten()
        return self._touched_ids

    # --- learning ----------------------------------------------------------------------------
    def open_rows(self, ids: Tensor, values_only: bool = False) -> NeuronRows:
        """Make the rows of neurons ``ids`` trainable (a copy of their current values).

        ``values_only`` trains what the neurons write (``down``) and keeps when they fire
        (``gate``, ``up``): a neuron that is quiet on general text then stays quiet there.
        """
        ids = ids.to(device=self.gate.device, dtype=torch.long).unique()
        self.rows = NeuronRows(ids, self.gate[ids], self.up[ids], self.down[ids], values_only)
        return self.rows

    @torch.no_grad()
    def commit(self) -> int:
        """Write the trained rows back into the copy; returns how many neurons changed."""
        rows, self.rows = self.rows, None
        if rows is None:
            return 0
        changed = ((rows.gate != self.gate[rows.ids]).any(1) | (rows.up != self.up[rows.ids]).any(1)
                   | (rows.down != self.down[rows.ids]).any(1))
        ids = rows.ids[changed]
        self.gate[ids] = rows.gate[changed]
        self.up[ids] = rows.up[changed]
        self.down[ids] = rows.down[changed]
        self.touched[ids] = True
        self._touched_ids = None
        return int(ids.numel())

    def discard(self) -> None:
        """Drop the trainable rows without writing them back (an interrupted learn)."""
        self.rows = None

    # --- state -------------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self) -> None:
        """Back to the original: the copy equals the frozen MLP again."""
        f = self.frozen
        self.gate.copy_(f.gate_proj.weight.float())
        self.up.copy_(f.up_proj.weight.float())
        self.down.copy_(f.down_proj.weight.float().t())
        self.touched.zero_()
        self._touched_ids = None
        self.rows = None

    def learned(self) -> dict[str, Tensor]:
        """The touched neurons and their rows: everything needed to rebuild the copy."""
        ids = self.touched_ids()
        return {"ids": ids.cpu(), "gate": self.gate[ids].cpu(), "up": self.up[ids].cpu(),
                "down": self.down[ids].cpu()}

    def check_learned(self, state: dict[str, Tensor]) -> None:
        """Raise ValueError unless ``state`` (as ``learned`` gives it) fits this MLP."""
        ids = state["ids"]
        shapes = {k: tuple(state[k].shape) for k in ("gate", "up", "down")}
        expected = (ids.numel(), self.gate.shape[1])
        if ids.dim() != 1 or ids.is_floating_point() or any(s != expected for s in shapes.values()) or (
                ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.neurons)):
            raise ValueError(f"learned rows do not fit this MLP ({self.neurons} neurons, "
                             f"hidden {self.gate.shape[1]}): {shapes}")

    @torch.no_grad()
    def load_learned(self, state: dict[str, Tensor]) -> None:
        self.check_learned(state)
        ids = state["ids"].to(device=self.gate.device, dtype=torch.long)
        self.reset()
        self.gate[ids] = state["gate"].to(self.gate)
        self.up[ids] = state["up"].to(self.up)
        self.down[ids] = state["down"].to(self.down)
        self.touched[ids] = True


@contextmanager
def original(duals: list[DualMLP]) -> Iterator[None]:
    """Inside, the model answers exactly as before any learning (every DualMLP at alpha 1)."""
    saved = [dual.alpha for dual in duals]
    for dual in duals:
        dual.alpha = 1.0
    try:
        yield
    finally:
        for dual, alpha in zip(duals, saved):
            dual.alpha = alpha


@contextmanager
def shared(duals: list[DualMLP], shares: Tensor) -> Iterator[None]:
    """Inside, row ``b`` of each batch gets ``shares[b]`` of every DualMLP's delta."""
    silent = not bool(shares.any())  # asked once here, not per layer and token on a GPU
    for dual in duals:
        dual.share, dual.silent = shares, silent
    try:
        yield
    finally:
        for dual in duals:
            dual.share, dual.silent = None, False


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM of the Llama family."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no model.layers: only Llama-family "
                        "decoders (Llama, Mistral, Qwen2, SmolLM, ...) are supported")
    return layers


def install(model: nn.Module, layer_ids: list[int]) -> list[DualMLP]:
    """Wrap the MLPs of ``layer_ids`` in DualMLPs (those already wrapped are kept)."""
    layers = decoder_layers(model)
    duals = []
    for i in layer_ids:
        if not isinstance(layers[i].mlp, DualMLP):
            layers[i].mlp = DualMLP(layers[i].mlp)
        duals.append(layers[i].mlp)
    return duals


def uninstall(model: nn.Module) -> None:
    """Put the original MLPs back everywhere."""
    for layer in decoder_layers(model):
        if isinstance(layer.mlp, DualMLP):
            layer.mlp = layer.mlp.frozen


def layer_range(total: int, start_fraction: float, explicit: str = "") -> list[int]:
    """Layer indices: ``explicit`` ("20-29" or "22,25,29") or the last (1 - start_fraction)."""
    if explicit.strip():
        ids: set[int] = set()
        for part in explicit.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.update(range(int(lo), int(hi or lo) + 1))
        bad = [i for i in ids if not 0 <= i < total]
        if bad:
            raise ValueError(f"layers {bad} are outside the model's 0-{total - 1}")
        return sorted(ids)
    first = min(total - 1, int(round(total * start_fraction)))
    return list(range(first, total))
