"""A pool of LoRA experts over ``nn.Linear`` layers, and one slow consolidated adapter beside them.

Complementary learning systems (McClelland et al. 1995): a fast, sparse learner (here: small
LoRA experts, one chosen per input by a router) takes in new material without disturbing the
slow learner (here: the base weights plus one consolidated adapter), which is trained only in
sleep, by distilling what the experts hold. Each wrapped layer computes

    y = base(x) + c[b] * B_c A_c x + sum_k w[b, k] * B_k A_k x

where ``w`` ([batch, K], from a router) and ``c`` ([batch]) are set per batch with ``routing``.
An expert whose weight is zero on every row of a batch is never run, so only routed experts get
gradients; outside ``routing`` no expert runs at all (the experts are marked ``routed_only``),
while the consolidated adapter runs in every forward (``c`` = 1). Each expert has a freeze mask
over its output rows: masked rows of ``B`` never change (their gradient is zeroed), so what an
expert wrote there stays bit-identical.

Generic: the same code wraps a small MLP's layers (the continual bench) and the language
model's MLP projections (``engines.cls``). No I/O: experts move as plain tensor dicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from models.routed_only import mark_routed_only


class LoRA(nn.Module):
    """One low-rank adapter: ``B A x`` ([out, r] @ [r, in]); ``B`` starts at zero (a no-op)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        # rows of B that may change (True); the hook zeroes the gradient of the others
        self.register_buffer("open_rows", torch.ones(out_features, dtype=torch.bool))
        self.B.register_hook(lambda g: g * self.open_rows.unsqueeze(1).to(g.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.A.t()) @ self.B.t()

    def tensors(self) -> dict[str, Tensor]:
        return {"A": self.A.detach().clone(), "B": self.B.detach().clone(),
                "open_rows": self.open_rows.clone()}

    def load(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.A.copy_(state["A"])
            self.B.copy_(state["B"])
            self.open_rows.copy_(state["open_rows"].bool())


class ExpertLinear(nn.Module):
    """A frozen ``nn.Linear`` with routed LoRA experts (by slot id) and a consolidated adapter."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        # str(slot) -> LoRA; only loaded experts live here, and only a routing context runs them
        self.experts = mark_routed_only(nn.ModuleDict())
        self.consolidated = LoRA(base.in_features, base.out_features, rank)
        self.weights: Tensor | None = None  # [batch, K] routing weights by slot
        self.slots: list[int] = []  # slot id of each column of ``weights``
        self.scale: Tensor | None = None  # [batch] share of the consolidated adapter (None: 1)

    def new_expert(self, slot: int) -> LoRA:
        lora = LoRA(self.base.in_features, self.base.out_features, self.rank)
        lora.to(self.base.weight.device)
        self.experts[str(slot)] = lora
        return lora

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        c = self.consolidated(x)
        y = y + (c if self.scale is None else _rows(self.scale, c) * c)
        if self.weights is None:
            return y
        for column, slot in enumerate(self.slots):
            w = self.weights[:, column]
            if not bool((w != 0).any()) or str(slot) not in self.experts:
                continue  # not routed: not run, so no gradient reaches it
            y = y + _rows(w, y) * self.experts[str(slot)](x)
        return y


def _rows(w: Tensor, like: Tensor) -> Tensor:
    """[batch] -> broadcastable over ``like`` ([batch, ..., out]). A batch of ``n`` times the
    routed rows (each row repeated for its ``n`` options, as the bench scores them) repeats
    each row's weight ``n`` times, as TTT's DualMLP does."""
    rows, given = like.shape[0], w.shape[0]
    if given not in (1, rows):
        if rows % given:
            raise ValueError(f"{given} routed rows for a batch of {rows}")
        w = w.repeat_interleave(rows // given)
    return w.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class ExpertPool:
    """The experts across every wrapped layer: slot ``k`` is one expert in all of them at once."""

    def __init__(self, layers: dict[str, ExpertLinear]) -> None:
        self.layers = layers

    @classmethod
    def install(cls, model: nn.Module, wanted: Callable[[str, nn.Linear], bool], rank: int) -> ExpertPool:
        """Wrap every ``nn.Linear`` of ``model`` that ``wanted(name, layer)`` picks, in place."""
        layers: dict[str, ExpertLinear] = {}
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                if isinstance(child, nn.Linear) and wanted(full, child):
                    wrapped = ExpertLinear(child, rank)
                    setattr(module, child_name, wrapped)
                    layers[full] = wrapped
        if not layers:
            raise ValueError("no nn.Linear layer was picked for the expert pool")
        return cls(layers)

    def uninstall(self, model: nn.Module) -> None:
        """Put the original ``nn.Linear`` layers back."""
        for full, wrapped in self.layers.items():
            parent_name, _, child_name = full.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child_name, wrapped.base)

    # --- experts ------------------------------------------------------------------------------
    def slots(self) -> list[int]:
        """Slots loaded in memory."""
        first = next(iter(self.layers.values()))
        return sorted(int(s) for s in first.experts.keys())

    def add(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.new_expert(slot)

    def drop(self, slot: int) -> None:
        """Take an expert out of memory (it may have been saved first)."""
        for layer in self.layers.values():
            if str(slot) in layer.experts:
                del layer.experts[str(slot)]

    def expert(self, slot: int) -> dict[str, Tensor]:
        """One expert's tensors, by ``layer.part`` (what a per-expert file holds)."""
        out: dict[str, Tensor] = {}
        for name, layer in self.layers.items():
            for part, t in layer.experts[str(slot)].tensors().items():
                out[f"{name}.{part}"] = t
        return out

    def load(self, slot: int, state: dict[str, Tensor]) -> None:
        """Put an expert saved by ``expert`` into ``slot`` (created if absent)."""
        for name, layer in self.layers.items():
            lora = layer.experts[str(slot)] if str(slot) in layer.experts else layer.new_expert(slot)
            lora.load({part: state[f"{name}.{part}"] for part in ("A", "B", "open_rows")})

    def clone(self, source: int, slot: int, noise: float = 0.0, seed: int = 0) -> None:
        """A new expert in ``slot`` starting as a copy of ``source`` (growth starts from the
        nearest expert, then distils briefly), every row open. ``noise``: Gaussian noise of that
        share of each tensor's standard deviation, so the copy is not its parent exactly."""
        self.load(slot, self.expert(source))
        generator = torch.Generator().manual_seed(seed)
        for layer in self.layers.values():
            lora = layer.experts[str(slot)]
            lora.open_rows.fill_(True)
            if noise > 0:
                with torch.no_grad():
                    for p in (lora.A, lora.B):
                        jitter = torch.randn(p.shape, generator=generator) * (noise * float(p.std()))
                        p.add_(jitter.to(device=p.device, dtype=p.dtype))

    def consolidated(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, layer in self.layers.items():
            for part, t in layer.consolidated.tensors().items():
                out[f"{name}.{part}"] = t
        return out

    def load_consolidated(self, state: dict[str, Tensor]) -> None:
        for name, layer in self.layers.items():
            layer.consolidated.load({part: state[f"{name}.{part}"] for part in ("A", "B", "open_rows")})

    def freeze_rows(self, slot: int, rows: dict[str, Tensor]) -> None:
        """Close rows of an expert (True in ``rows[layer]``: that output row never changes)."""
        for name, mask in rows.items():
            lora = self.layers[name].experts[str(slot)]
            lora.open_rows &= ~mask.bool()

    def parameters(self, slot: int | None) -> list[nn.Parameter]:
        """An expert's trainable tensors (``None``: the consolidated adapter's)."""
        found: list[nn.Parameter] = []
        for layer in self.layers.values():
            lora = layer.consolidated if slot is None else layer.experts[str(slot)]
            found += [lora.A, lora.B]
        return found

    # --- routing ------------------------------------------------------------------------------
    @contextmanager
    def routing(self, weights: Tensor | None, slots: list[int] | None = None,
                consolidated: Tensor | float | None = None) -> Iterator[None]:
        """Run the next forwards with row ``b`` mixing expert ``slots[k]`` by ``weights[b, k]``
        and the consolidated adapter by ``consolidated`` (a share per row, or one for all)."""
        slots = self.slots() if slots is None else slots
        if weights is not None and weights.shape[1] != len(slots):
            raise ValueError(f"{weights.shape[1]} routing columns for {len(slots)} slots")
        scale = None
        if consolidated is not None:
            rows = weights.shape[0] if weights is not None else 1
            scale = torch.as_tensor(consolidated, dtype=torch.float32).expand(rows) \
                if not isinstance(consolidated, Tensor) or consolidated.dim() == 0 else consolidated
        saved = [(layer.weights, layer.slots, layer.scale) for layer in self.layers.values()]
        for layer in self.layers.values():
            layer.weights, layer.slots, layer.scale = weights, list(slots), scale
        try:
            yield
        finally:
            for layer, (w, s, c) in zip(self.layers.values(), saved):
                layer.weights, layer.slots, layer.scale = w, s, c
