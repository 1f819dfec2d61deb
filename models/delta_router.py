"""Routing the learned delta: how much of it each question gets, by what the question is about.

Sparse gating keeps training away from the neurons general use runs through, but the changed
neurons still fire a little on everyday questions, and over a hundred documents those small
changes add up to forgetting. A router keeps learned knowledge where it was learned for (after
Aljundi et al. 2017, "Expert Gate", which picks a task's expert by how close the input is to
what that expert was trained on): every learned document leaves keys (embeddings of its
passages), and a question's share of the delta rises from 0 to 1 as its best cosine similarity
to any key goes from ``low`` to ``high``. A question about nothing learned is answered by the
original model; one about a learned document by the learned weights.

The keys are unit vectors from the app's sentence embedder; a document that leaves the library
takes its keys with it (``drop``), so its weights stop answering.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor


KEYS_PER_PASS = 65_536  # keys compared per matrix product (100 MB of fp32 at 384 dimensions)


class DeltaRouter:
    """Per-document keys and the shares of the delta they grant (no I/O; state as tensors)."""

    def __init__(self, low: float, high: float) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"router bounds must satisfy 0 <= low < high <= 1, got {low} and {high}")
        self.low, self.high = low, high
        # ([N, D] unit vectors, [N] the document each key belongs to), replaced as one: a
        # question routed while a document is dropped sees the table before or after, not between
        self._table = _empty()
        self._writing = threading.Lock()  # one writer at a time (a learn beside a forget)
        self.probe: Tensor | None = None
        """A fixed sentence as the embedder that made the keys embeds it: another embedding model
        gives another vector, so its questions must not be compared with these keys."""

    @property
    def keys(self) -> Tensor:
        return self._table[0]

    @property
    def owners(self) -> Tensor:
        return self._table[1]

    def __len__(self) -> int:
        return int(self.owners.numel())

    def dim(self) -> int | None:
        """The keys' dimension (None: no keys yet)."""
        keys = self.keys
        return int(keys.shape[1]) if keys.shape[0] else None

    def add(self, owner: int, keys: Tensor) -> None:
        """Replace ``owner``'s keys with ``keys`` ([n, D], unit length)."""
        with self._writing:
            held, owners = self._table
            if keys.dim() != 2 or (held.shape[0] and keys.shape[1] != held.shape[1]):
                raise ValueError(f"keys of shape {tuple(keys.shape)} do not fit the router's "
                                 f"{tuple(held.shape)}")
            mine = owners == owner
            held, owners = held[~mine], owners[~mine]
            keys = keys.to(torch.float16)
            owned = torch.full((keys.shape[0],), owner, dtype=torch.long)
            self._table = (torch.cat([held, keys]) if held.shape[0] else keys, torch.cat([owners, owned]))

    def drop(self, owners: set[int]) -> bool:
        """Forget these documents' keys; whether any were held."""
        with self._writing:
            keys, held = self._table
            gone = torch.isin(held, torch.tensor(sorted(owners), dtype=torch.long))
            if not bool(gone.any()):
                return False
            self._table = (keys[~gone], held[~gone])
            return True

    def keep(self, owners: set[int]) -> None:
        """Keep only these documents' keys (those still in the library)."""
        self.drop(set(self.owners.tolist()) - owners)

    def clear(self) -> None:
        with self._writing:
            self._table = _empty()
            self.probe = None

    def similarity(self, queries: Tensor) -> Tensor:
        """[B, D] unit vectors -> [B]: each one's best cosine similarity to a key (-1: no keys)."""
        keys = self.keys
        if not keys.shape[0]:
            return torch.full((queries.shape[0],), -1.0)
        if queries.shape[1] != keys.shape[1]:
            raise ValueError(f"queries of {queries.shape[1]} dimensions cannot be compared with keys "
                             f"of {keys.shape[1]} (was the embedding model changed?)")
        queries = queries.float()
        best = torch.full((queries.shape[0],), -1.0)
        for start in range(0, keys.shape[0], KEYS_PER_PASS):  # a bounded fp32 copy at a time
            part = keys[start:start + KEYS_PER_PASS].float()
            best = torch.maximum(best, (queries @ part.t()).max(1).values)
        return best

    def shares(self, queries: Tensor) -> Tensor:
        """[B, D] unit vectors -> [B] shares of the delta in [0, 1]."""
        return self.shares_at(self.similarity(queries))

    def shares_at(self, similarity: Tensor) -> Tensor:
        """Best similarities (as ``similarity`` gives them) -> the shares they grant."""
        return ((similarity - self.low) / (self.high - self.low)).clamp(0.0, 1.0)

    def state(self) -> dict[str, Tensor]:
        found = {"keys": self.keys.clone(), "owners": self.owners.clone()}
        if self.probe is not None:
            found["probe"] = self.probe.clone()
        return found

    def load(self, state: dict[str, Tensor | None]) -> None:
        """Raise ValueError unless ``state`` (as ``state`` gives it) is a router's (a state saved
        before probes existed has none)."""
        keys, owners, probe = state.get("keys"), state.get("owners"), state.get("probe")
        if not isinstance(keys, Tensor) or not isinstance(owners, Tensor) or keys.dim() != 2 or (
                owners.dim() != 1 or owners.is_floating_point() or owners.numel() != keys.shape[0]):
            raise ValueError("the router's keys and owners do not fit together")
        if probe is not None and (not isinstance(probe, Tensor) or probe.dim() != 1):
            raise ValueError("the router's probe is not a vector")
        with self._writing:
            self._table = (keys.to(torch.float16), owners.to(torch.long))
            self.probe = None if probe is None else probe.float()


def _empty() -> tuple[Tensor, Tensor]:
    return torch.zeros(0, 0, dtype=torch.float16), torch.zeros(0, dtype=torch.long)
