"""The ttt engine's learned state in memory, and the locks that keep its writers apart.

One object the engine's parts share: the neocortex with its DualMLPs, the counters saved with
the learned rows, the recall pool and the router. Each guard is there for one race:

- ``setup`` (re-entrant): the model is loaded and its DualMLPs installed once;
- ``training``: one training at a time, since learning and sleep open the same rows;
- ``wanted``: a reset or a load is waiting for ``training``; a running sleep sees it and stops;
- ``saving``: one writer of the saved state at a time (a forget on the scan thread may save
  while a learn on the worker does);
- ``keeping``: a document's recall pairs and router keys are kept, or forgotten, as one.

The cortex's own lock guards the weights themselves: an answer never sees half an update.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from engines.base import EngineContext, Neocortex, Router
from engines.ttt.config import TTTConfig
from engines.ttt.recall import RecallPool
from models.delta_router import DeltaRouter
from models.dual_mlp import DualMLP, decoder_layers, install, layer_range, uninstall

NAME = "ttt"
LEARNING_FROM = 0.75  # learning layers start this far into the decoder (TTT-E2E: its last quarter)


def state_label(revision: int, documents: int, origin: str | None) -> str:
    """How chat and the UI name a learned state."""
    origin_text = f", from checkpoint '{origin}'" if origin else ""
    return f"ttt rev {revision}: {documents} documents{origin_text}"


class TTTState:
    """What the engine has learned so far, and the locks around it."""

    def __init__(self, config: TTTConfig) -> None:
        self.config = config
        self.cortex: Neocortex | None = None
        self.duals: list[DualMLP] = []
        self.layer_ids: list[int] = []
        self.documents = 0
        self.alpha = 1.0
        self.revision = 0
        self.replay_at = 0  # where background replay goes on (saved with the rows)
        self.origin: str | None = None  # the checkpoint the current state was loaded from
        self.recall = RecallPool(config.recall_pool)
        self.router = DeltaRouter(config.route_low, config.route_high)  # kept even when routing is off
        self.forgotten: set[int] = set()  # forgotten while being learned: not to be recalled
        self.token: str | None = None  # the saved state this process holds (see ``LiveState.put``)
        self.keeping = threading.Lock()
        self.setup = threading.RLock()
        self.saving = threading.Lock()
        self.training = threading.Lock()
        self.wanted = threading.Event()

    @property
    def first(self) -> int:
        """The first learning layer: the layers below it never change."""
        return min(self.layer_ids)

    @property
    def span(self) -> tuple[int, int]:
        """The first and the last learning layer."""
        return min(self.layer_ids), max(self.layer_ids)

    @property
    def label(self) -> str:
        """How chat and the UI name what is learned."""
        return state_label(self.revision, self.documents, self.origin)

    def install(self, cortex: Neocortex, route: Router) -> None:
        """Put DualMLPs into the learning layers of ``cortex`` and make ``route`` its router."""
        total = len(decoder_layers(cortex.model))
        self.layer_ids = layer_range(total, LEARNING_FROM, self.config.layers)
        with cortex.lock:
            cortex.model.requires_grad_(False)
            self.duals = install(cortex.model, self.layer_ids)
            cortex.router = route
        self.cortex = cortex

    def uninstall(self, route: Router) -> None:
        """Put the original MLPs back (the bench reuses one model for several runs); the
        router leaves too, unless another engine has set its own since."""
        if self.cortex is not None:
            with self.cortex.lock:
                uninstall(self.cortex.model)
                if self.cortex.router == route:
                    self.cortex.router = None
            self.cortex = None
            self.duals = []

    def set_alpha(self, alpha: float) -> None:
        self.alpha = alpha
        for dual in self.duals:
            dual.alpha = alpha

    def open(self, neurons: list[Tensor]) -> list[torch.nn.Parameter]:
        """Open these neurons' rows in each layer for training; their parameters."""
        return [p for dual, ids in zip(self.duals, neurons) if ids.numel()
                for p in dual.open_rows(ids, self.config.values_only).trainable()]

    def commit(self) -> int:
        """Write the trained rows back (every layer at once, between two answers); how many."""
        with self.cortex.lock:  # type: ignore[union-attr]
            return sum(dual.commit() for dual in self.duals)

    def discard(self) -> None:
        """Close the open rows without writing them back."""
        for dual in self.duals:
            dual.discard()

    def fresh(self) -> None:
        """Nothing learned: the model answers as the original again."""
        with self.cortex.lock:  # type: ignore[union-attr]
            for dual in self.duals:
                dual.reset()
            self.documents = self.revision = self.replay_at = 0
            self.recall = RecallPool(self.config.recall_pool)
            self.router.clear()
            self.set_alpha(1.0)
        self.origin = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The training lock for a reset or a load, asking a running sleep to stop first."""
        self.wanted.set()
        try:
            with self.training:
                self.wanted.clear()
                yield
        finally:
            self.wanted.clear()


class Part:
    """One part of the engine: it works on the shared state, under the settings the engine has
    now (``TTTEngine.config`` may be replaced: the bench and the tests do)."""

    def __init__(self, context: EngineContext, state: TTTState) -> None:
        self.context = context
        self.state = state

    @property
    def config(self) -> TTTConfig:
        return self.state.config
