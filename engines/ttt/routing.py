"""Routing: each question gets the learned weights as far as it is about a learned document.

Each learned document leaves keys (embeddings of its passages, ``route_keys``) in a
``models.delta_router.DeltaRouter``; an answer's rows get the share of the learned delta their
question's closeness to those keys calls for, so a question about nothing learned is answered
by the original model. ``Routing.route`` is what the engine sets as the neocortex's router.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from engines.base import EngineContext
from engines.ttt import route_keys
from engines.ttt.recall import RecallPool
from engines.ttt.state import Part, TTTState
from models.delta_router import DeltaRouter
from models.dual_mlp import shared
from store.documents import DocumentStore

log = logging.getLogger(__name__)


class RouterKeysError(ValueError):
    """A learned state's router keys cannot be read."""


class Routing(Part):
    """The router keys of learned documents, and the shares of the learned weights they give."""

    def __init__(self, context: EngineContext, state: TTTState) -> None:
        super().__init__(context, state)
        self._checked_at = float("-inf")  # when the keys' embedder was last compared with today's

    def keys(self, text: str) -> Tensor:
        """A document's router keys: its passages embedded (its opening, if it has none).
        Keys of another embedding model (a checkpoint from elsewhere, a model switched since)
        are embedded again first."""
        self.check_embedder(self.state.router)
        return route_keys.embedded_keys(self.context.embed, text)

    def check_embedder(self, router: DeltaRouter) -> None:
        """Embed the keys again when the embedding model is not the one that made them (the
        probe sentence embeds elsewhere, or the dimension differs): questions embedded by one
        model are never compared with another's keys."""
        self._checked_at = time.monotonic()
        if route_keys.matches(router, route_keys.probe(self.context.embed)):
            return
        log.warning("the router's %d keys were made by another embedding model: embedding them again", len(router))
        self.rekey(router, set(router.owners.tolist()))

    def rekey(self, router: DeltaRouter, documents: set[int]) -> None:
        """Embed these stored documents' keys again (from their stored text)."""
        router.clear()
        for document_id, keys in route_keys.stored_keys(self.context.embed, DocumentStore(self.context.db),
                                                        documents).items():
            router.add(document_id, keys)
        router.probe = route_keys.probe(self.context.embed)

    def loaded(self, saved: dict[str, Any], present: set[int], recall: RecallPool) -> DeltaRouter:
        """A saved state's router, kept to the documents still present. A state learned before
        routing has no keys: those of the documents it recalls are embedded from the store."""
        router = DeltaRouter(self.config.route_low, self.config.route_high)
        if "router.keys" in saved:
            try:
                router.load({"keys": saved["router.keys"], "owners": saved.get("router.owners"),
                             "probe": saved.get("router.probe")})
            except ValueError as exc:
                raise RouterKeysError(f"unreadable router keys ({exc})") from None
            router.keep(present)
            self.check_embedder(router)
        else:
            self.rekey(router, recall.documents() & present)
        return router

    def shares(self, queries: Sequence[str]) -> Tensor | None:
        """Each query's share of the learned weights (None: unrouted, all of them)."""
        if not self.config.route:
            return None
        if time.monotonic() - self._checked_at > route_keys.RECHECK_S:  # a model switch swaps the embedder
            self.check_embedder(self.state.router)
        try:
            return self.state.router.shares(torch.from_numpy(self.context.embed(list(queries))))
        except ValueError as exc:
            log.warning("answering unrouted: %s", exc)
            return None

    @contextmanager
    def route(self, queries: Sequence[str]) -> Iterator[None]:
        """Answer row ``b`` of the next batches with the share of the learned weights that
        ``queries[b]`` calls for (the cortex's router; enter it holding the cortex lock)."""
        shares = self.shares(queries) if self.state.alpha < 1.0 and self.state.duals else None
        if shares is None:
            yield
            return
        with shared(self.state.duals, shares):
            yield
