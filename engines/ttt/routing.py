"""Routing: each question gets the learned weights as far as it is about a learned document.

Each learned document leaves keys (embeddings of its passages, ``route_keys``) in a
``models.delta_router.DeltaRouter``; an answer's rows get the share of the learned delta their
question's closeness to those keys calls for, so a question about nothing learned is answered
by the original model. ``Routing.route`` is what the engine sets as the neocortex's router.
"""

from __future__ import annotations

import logging
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

    def keys(self, text: str) -> Tensor:
        """A document's router keys: its passages embedded (its opening, if it has none).
        Keys of another embedding model (a checkpoint from elsewhere) are embedded again first."""
        keys = route_keys.embedded_keys(self.context.embed, text)
        router = self.state.router
        if router.dim() not in (None, keys.shape[1]):
            log.warning("the router's keys have %s dimensions, the embedder gives %s: embedding them again",
                        router.dim(), keys.shape[1])
            self.rekey(router, set(router.owners.tolist()))
        return keys

    def rekey(self, router: DeltaRouter, documents: set[int]) -> None:
        """Embed these stored documents' keys again (from their stored text)."""
        router.clear()
        store = DocumentStore(self.context.db)
        for document_id in sorted(documents):
            text = "\n\n".join(store.chunk_texts(document_id))
            if text.strip():
                router.add(document_id, route_keys.embedded_keys(self.context.embed, text))

    def loaded(self, saved: dict[str, Any], present: set[int], recall: RecallPool) -> DeltaRouter:
        """A saved state's router, kept to the documents still present. A state learned before
        routing has no keys: those of the documents it recalls are embedded from the store."""
        router = DeltaRouter(self.config.route_low, self.config.route_high)
        if "router.keys" in saved:
            try:
                router.load({"keys": saved["router.keys"], "owners": saved.get("router.owners")})
            except ValueError as exc:
                raise RouterKeysError(f"unreadable router keys ({exc})") from None
            router.keep(present)
        else:
            self.rekey(router, recall.documents() & present)
        return router

    def shares(self, queries: Sequence[str]) -> Tensor | None:
        """Each query's share of the learned weights (None: unrouted, all of them)."""
        if not self.config.route:
            return None
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
