"""Which experts an input goes to: three routers with one output, weights ``[batch, K]``.

- ``KeyRouter``: each expert keeps keys (unit embeddings of what it learned: a document's
  passages, a task's inputs); an input goes to the expert with the closest key, if that is close
  enough (as TTT's router and Expert Gate, Aljundi et al. 2017). ``novelty`` (1 - best cosine)
  is what growth reads: nothing close means no expert covers the input.
- ``SoftmaxGate``: a learned linear gate, softmax over experts (dense mixture).
- ``KWTAGate``: the same learned scores, but only the ``k`` winners keep a weight (k-winners-
  take-all sparse gating, after the Bio-MoE seed): the losers' weights are exactly zero, so
  their experts are not run and get no gradient.

The learned gates are trained on (input, expert) pairs from the replay buffer (``fit``); the
key router needs no training. No I/O: state moves as tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KeyRouter:
    """Per-expert keys; weight 1 for the nearest expert when its cosine is at least ``low``."""

    def __init__(self, low: float = 0.0) -> None:
        self.low = low
        self.keys = torch.zeros(0, 0)
        self.owners = torch.zeros(0, dtype=torch.long)  # the slot each key belongs to
        self.probe: Tensor | None = None  # a fixed sentence as the keys' embedder embeds it

    def __len__(self) -> int:
        return int(self.owners.numel())

    def dim(self) -> int | None:
        """The keys' width (None: no keys yet)."""
        return int(self.keys.shape[1]) if self.owners.numel() else None

    def clear(self) -> None:
        self.keys, self.owners, self.probe = torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), None

    def add(self, slot: int, keys: Tensor) -> None:
        keys = F.normalize(keys.float(), dim=1)
        if self.keys.numel() == 0:
            self.keys = keys
        else:
            self.keys = torch.cat([self.keys, keys])
        self.owners = torch.cat([self.owners, torch.full((keys.shape[0],), slot, dtype=torch.long)])

    def drop(self, slot: int) -> None:
        keep = self.owners != slot
        self.keys, self.owners = self.keys[keep], self.owners[keep]

    def slots(self) -> list[int]:
        return sorted(set(self.owners.tolist()))

    def best(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each row's best cosine ([batch]) and the slot owning that key ([batch]; -1: none)."""
        if self.owners.numel() == 0:
            return torch.full((x.shape[0],), -1.0), torch.full((x.shape[0],), -1, dtype=torch.long)
        sims = F.normalize(x.float(), dim=1) @ self.keys.t()  # [batch, keys]
        value, index = sims.max(dim=1)
        return value, self.owners[index]

    def novelty(self, x: Tensor) -> Tensor:
        """1 - best cosine to any key, per row (2: no keys at all)."""
        return 1.0 - self.best(x)[0]

    def entropy(self, x: Tensor) -> float:
        """Gate entropy of a set of inputs (nats): of the share of rows whose nearest expert is
        each slot. 0 when one expert takes them all; high when they spread (no expert covers them)."""
        owner = self.best(x)[1]
        if owner.numel() == 0 or self.owners.numel() == 0:
            return 0.0
        p = torch.bincount(owner - owner.min()).float()
        p = p[p > 0] / owner.numel()
        return max(0.0, float(-(p * p.log()).sum()))  # never -0.0

    def weights(self, x: Tensor, slots: list[int]) -> Tensor:
        value, owner = self.best(x)
        out = torch.zeros(x.shape[0], len(slots))
        for column, slot in enumerate(slots):
            out[:, column] = ((owner == slot) & (value >= self.low)).float()
        return out

    def state(self) -> dict[str, Tensor]:
        found = {"keys": self.keys.clone(), "owners": self.owners.clone()}
        if self.probe is not None:
            found["probe"] = self.probe.clone()
        return found

    def load(self, state: dict[str, Tensor | None]) -> None:
        keys, owners, probe = state["keys"], state["owners"], state.get("probe")
        assert keys is not None and owners is not None
        self.keys, self.owners = keys.float(), owners.long()
        self.probe = None if probe is None else probe.float()


class SoftmaxGate(nn.Module):
    """Learned scores over ``experts`` slots, softmax-mixed."""

    def __init__(self, dim: int, experts: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, experts)

    def logits(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Scores [batch, experts]; columns not ``allowed`` ([experts] bool: an expert recycled
        since the gate was trained) score -inf, so they never win and keep no weight."""
        scores = self.score(F.normalize(x.float(), dim=1) * x.shape[1] ** 0.5)
        return scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))

    def weights(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        return torch.softmax(self.logits(x, allowed), dim=1)

    def entropy(self, x: Tensor) -> Tensor:
        """Gate entropy per row: high when no expert is clearly responsible (growth reads it)."""
        p = self.weights(x)
        return -(p * p.clamp_min(1e-12).log()).sum(dim=1)

    def fit(self, x: Tensor, slot_index: Tensor, epochs: int = 100, lr: float = 0.05) -> float:
        """Train the gate to send each input to its expert's column (full batch); last loss."""
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        loss = torch.tensor(0.0)
        for _ in range(epochs):
            opt.zero_grad()
            loss = F.cross_entropy(self.logits(x), slot_index)
            loss.backward()
            opt.step()
        return float(loss.detach())


class KWTAGate(SoftmaxGate):
    """Only the ``k`` best-scoring experts keep a weight (softmax among the winners)."""

    def __init__(self, dim: int, experts: int, k: int = 1) -> None:
        super().__init__(dim, experts)
        self.k = k

    def weights(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        logits = self.logits(x, allowed)
        k = min(self.k, logits.shape[1] if allowed is None else max(1, int(allowed.sum())))
        top = logits.topk(k, dim=1)
        out = torch.zeros_like(logits)
        out.scatter_(1, top.indices, torch.softmax(top.values, dim=1))
        return out
