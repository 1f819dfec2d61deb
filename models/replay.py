"""An in-memory episodic buffer with reservoir sampling, drawn shuffled.

Reservoir sampling (Vitter 1985) keeps a uniform sample of everything seen in a fixed room, so
the first tasks are not crowded out by the last. Draws are shuffled with a seeded generator:
replay interleaves old episodes instead of replaying them in the order they came (which would
be a small sequential finetuning of its own). The engine keeps its buffer in the store; this
one serves the digits bench. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class ReplayBuffer(Generic[T]):
    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("a replay buffer needs room for at least one episode")
        self.capacity = capacity
        self.items: list[T] = []
        self.seen = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        j = int(torch.randint(self.seen, (1,), generator=self.generator))
        if j < self.capacity:
            self.items[j] = item

    def shuffled(self) -> list[T]:
        order = torch.randperm(len(self.items), generator=self.generator).tolist()
        return [self.items[i] for i in order]

    def draw(self, n: int) -> list[T]:
        """``n`` episodes drawn uniformly with replacement (empty buffer: none)."""
        if not self.items:
            return []
        picks = torch.randint(len(self.items), (n,), generator=self.generator).tolist()
        return [self.items[i] for i in picks]

    def batches(self, size: int) -> Iterator[list[T]]:
        """One shuffled pass in batches of ``size``."""
        items = self.shuffled()
        for start in range(0, len(items), size):
            yield items[start:start + size]
