"""Routing the learned delta: how much of it each question gets, by what the question is about.

Sparse gating keeps training away from the neurons general use runs through, but the changed
neurons still fire a little on everyday questions, and over a hundred documents those small
changes add up to forgetting. A router keeps learned knowledge where it was learned for (after
Aljundi et al. 2017, "Expert Gate", which picks a task's expert by how close the input is to
what that expert was trained on): every learned document leaves keys (embeddings of its
sentences), and a question's share of the delta rises from 0 to 1 as its best cosine similarity
to any key goes from ``low`` to ``high``. A question about nothing learned is answered by the
original model; one about a learned document by the learned weights.

The keys are unit vectors from the app's sentence embedder; a document that leaves the library
takes its keys with it (``drop``), so its weights stop answering.
"""

from __future__ import annotations

import torch
from torch import Tensor


class DeltaRouter:
    """Per-document keys and the shares of the delta they grant (no I/O; state as tensors)."""

    def __init__(self, low: float, high: float) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"router bounds must satisfy 0 <= low < high <= 1, got {low} and {high}")
        self.low, self.high = low, high
        # ([N, D] unit vectors, [N] the document each key belongs to), replaced as one: a
        # question routed while a document is dropped sees the table before or after, not between
        self._table = (torch.zeros(0, 0, dtype=torch.float16), torch.zeros(0, dtype=torch.long))

    @property
    def keys(self) -> Tensor:
        return self._table[0]

    @property
    def owners(self) -> Tensor:
        return self._table[1]

    def __len__(self) -> int:
        return int(self.owners.numel())

    def add(self, owner: int, keys: Tensor) -> None:
        """Replace ``owner``'s keys with ``keys`` ([n, D], unit length)."""
        if keys.dim() != 2 or (len(self) and keys.shape[1] != self.keys.shape[1]):
            raise ValueError(f"keys of shape {tuple(keys.shape)} do not fit the router's "
                             f"{tuple(self.keys.shape)}")
        self.drop({owner})
        keys = keys.to(torch.float16)
        owned = torch.full((keys.shape[0],), owner, dtype=torch.long)
        self._table = (torch.cat([self.keys, keys]) if len(self) else keys, torch.cat([self.owners, owned]))

    def drop(self, owners: set[int]) -> bool:
        """Forget these documents' keys; whether any were held."""
        keys, held = self._table
        gone = torch.isin(held, torch.tensor(sorted(owners), dtype=torch.long))
        if not bool(gone.any()):
            return False
        self._table = (keys[~gone], held[~gone])
        return True

    def keep(self, owners: set[int]) -> None:
        """Keep only these documents' keys (those still in the library)."""
        self.drop(set(self.owners.tolist()) - owners)

    def similarity(self, queries: Tensor) -> Tensor:
        """[B, D] unit vectors -> [B]: each one's best cosine similarity to a key (-1: no keys)."""
        keys = self.keys
        if not keys.shape[0]:
            return torch.full((queries.shape[0],), -1.0)
        if queries.shape[1] != keys.shape[1]:
            raise ValueError(f"queries of {queries.shape[1]} dimensions cannot be compared with keys "
                             f"of {keys.shape[1]} (was the embedding model changed?)")
        return (queries.float() @ keys.float().t()).max(1).values

    def shares(self, queries: Tensor) -> Tensor:
        """[B, D] unit vectors -> [B] shares of the delta in [0, 1]."""
        return ((self.similarity(queries) - self.low) / (self.high - self.low)).clamp(0.0, 1.0)

    def state(self) -> dict[str, Tensor]:
        return {"keys": self.keys.clone(), "owners": self.owners.clone()}

    def load(self, state: dict[str, Tensor]) -> None:
        """Raise ValueError unless ``state`` (as ``state`` gives it) is a router's."""
        keys, owners = state.get("keys"), state.get("owners")
        if not isinstance(keys, Tensor) or not isinstance(owners, Tensor) or keys.dim() != 2 or (
                owners.dim() != 1 or owners.is_floating_point() or owners.numel() != keys.shape[0]):
            raise ValueError("the router's keys and owners do not fit together")
        self._table = (keys.to(torch.float16), owners.to(torch.long))
