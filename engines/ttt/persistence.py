"""The learned state as saved: rows, counters, recall pool and router keys, through the store.

A state is a flat dict: each learning layer's rows as tensors, the rest as JSON values (the
store writes them as safetensors with a JSON header; nothing is pickled). The live state is
saved after every change, so the next start answers with it; each save carries a new token, so
a sleep saves only over the state its own process holds. A state is checked whole before any
of it is applied: one that does not fit this model changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from engines.base import EngineContext, Neocortex
from engines.ttt.recall import RecallPool, RecallPoolError
from engines.ttt.routing import RouterKeysError, Routing
from engines.ttt.state import Part, TTTState, state_label
from store.blobs import BlobStore
from store.documents import DocumentStore

log = logging.getLogger(__name__)

LIVE_KEY = "ttt/live"
STATE_FORMAT = 1
PARTS = ("ids", "gate", "up", "down")  # a learning layer's rows, as ``DualMLP.learned`` gives them


def put_live(blobs: BlobStore, saved: dict[str, Any], origin: str | None) -> str:
    """Save ``saved`` as the live state with its summary (read without loading it) under a new
    token, which it returns: a sleep saves only over the state its process holds."""
    token = uuid.uuid4().hex
    documents, revision = int(saved["documents"]), int(saved["revision"])
    blobs.put(LIVE_KEY, "state", saved, meta={"documents": documents, "revision": revision,
                                              "label": state_label(revision, documents, origin),
                                              "origin": origin, "token": token})
    return token


class LiveState(Part):
    """Saving and loading the learned state (``autosave`` off: the bench throws its states away)."""

    def __init__(self, context: EngineContext, state: TTTState, blobs: BlobStore, routing: Routing,
                 cortex: Callable[[], Neocortex]) -> None:
        super().__init__(context, state)
        self.blobs = blobs
        self.routing = routing
        self.cortex = cortex
        self.autosave = True

    def meta(self) -> dict[str, Any]:
        """The saved live state's summary (read without loading the state)."""
        return self.blobs.meta(LIVE_KEY) or {}

    def state_dict(self) -> dict[str, Any]:
        """The learned state now: a consistent snapshot, never halfway through a commit."""
        cortex = self.cortex()
        with cortex.lock:
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        s = self.state
        saved: dict[str, Any] = {
            "format": STATE_FORMAT, "documents": s.documents, "alpha": s.alpha,
            "revision": s.revision, "layers": s.layer_ids, "mode": self.config.mode,
            "neurons": s.duals[0].neurons, "hidden": int(s.duals[0].gate.shape[1]),
            "replay_at": s.replay_at, "origin": s.origin,
            "recall": s.recall.to_json(),
        }
        saved.update({f"router.{k}": v for k, v in s.router.state().items()})
        for i, dual in zip(s.layer_ids, s.duals):
            for part, tensor in dual.learned().items():
                saved[f"layer{i}.{part}"] = tensor
        return saved

    def save(self) -> None:
        """One writer at a time: a forget (scan thread) may save while a learn (worker) does."""
        with self.state.saving:
            self.put()

    def put(self) -> None:
        """Save, under a new token: a sleep saves only over the state its process holds."""
        s = self.state
        s.token = put_live(self.blobs, self.state_dict(), s.origin)

    def restore(self, model_name: str) -> None:
        """The live state at start-up. An unreadable recall pool costs only the pool: the
        weights learned beside it are kept, and recall starts again from the next document.
        Unreadable router keys are embedded again from the stored documents."""
        saved = self.blobs.get(LIVE_KEY)
        if saved is None:
            self.state.fresh()
            return
        try:
            try:
                self.apply(saved)
            except RecallPoolError as exc:
                log.warning("%s; keeping the learned weights, recall starts afresh", exc)
                self.apply({**saved, "recall": None})
            except RouterKeysError as exc:
                log.warning("%s; keeping the learned weights, embedding the keys again", exc)
                self.apply({k: v for k, v in saved.items() if not k.startswith("router.")})
            self.state.origin = saved.get("origin")
        except ValueError as exc:
            log.warning("the saved ttt state does not fit %s (%s); starting afresh", model_name, exc)
            self.state.fresh()

    def apply(self, saved: dict[str, Any]) -> None:
        """Make ``saved`` the learned state, all of it checked first (a ValueError changes nothing)."""
        s = self.state
        parts = self._rows(saved)
        try:
            documents, alpha = int(saved["documents"]), float(saved["alpha"])
            revision, replay_at = int(saved.get("revision", documents)), int(saved.get("replay_at", 0))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"the state's counters are missing or not numbers ({exc})") from None
        recall = RecallPool.from_json(saved.get("recall"), self.config.recall_pool)
        present = DocumentStore(self.context.db).document_ids()
        recall.keep(present)  # not those that left since
        router = self.routing.loaded(saved, present, recall)
        with s.cortex.lock:  # type: ignore[union-attr]
            for i, dual in zip(s.layer_ids, s.duals):
                dual.load_learned(parts[i])
            s.documents, s.revision, s.replay_at = documents, revision, replay_at
            s.recall, s.router = recall, router
            s.set_alpha(alpha)
        s.origin = None

    def _rows(self, saved: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Each learning layer's rows in ``saved``, checked against this model's layers."""
        s = self.state
        if saved.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown ttt state format {saved.get('format')!r}")
        if list(saved.get("layers", [])) != s.layer_ids:
            raise ValueError(f"the state was learned in layers {saved.get('layers')}, this model "
                             f"learns in {s.layer_ids} (setting ttt.layers)")
        parts = {i: {p: saved.get(f"layer{i}.{p}") for p in PARTS} for i in s.layer_ids}
        if any(t is None for layer in parts.values() for t in layer.values()):
            raise ValueError("the state misses some layers' rows")
        for i, dual in zip(s.layer_ids, s.duals):
            dual.check_learned(parts[i])
        return parts
