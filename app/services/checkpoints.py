"""Checkpoints: named snapshots of what a weight-writing engine learned, to go back to later.

A checkpoint is the engine's ``state_dict`` (tensors + JSON values) in
``checkpoints/NAME.safetensors`` with a row in the ``checkpoints`` table (``store.blobs``).
Saving replaces the file atomically, so a crash or kill mid-save leaves the previous checkpoint
of that name intact. Loading validates the state against the engine before changing anything.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from engines.base import Engine
from store.blobs import BlobStore, CheckpointRow

BEFORE_SLEEP = "before-sleep"


class CheckpointNotSaved(RuntimeError):
    """The learned state before a sleep could not be saved, so the sleep did not begin."""


class LearnedState(BaseModel):
    """What one weight-writing engine holds now (shown beside answers and in the UI)."""

    engine: str
    label: str
    documents: int
    origin: str | None = None


class AnsweringState(BaseModel):
    """Which runtime answers the next question, and with which learned weights."""

    backend: str
    model: str
    learned: list[LearnedState]


class CheckpointService:
    def __init__(self, blobs: BlobStore, engines: Callable[[], list[Engine]]) -> None:
        self.blobs = blobs
        self.engines = engines

    def engine(self, name: str | None = None) -> Engine:
        """The enabled weight-writing engine called ``name`` (the only one when None)."""
        writers = [e for e in self.engines() if e.writes_weights]
        if not writers:
            raise ValueError("learning into weights is off, so there are no learned weights to save "
                             "or load: add ttt to the engines setting (in Settings, or `engram config "
                             "set engines rag,ttt`)")
        if name is None:
            if len(writers) > 1:
                raise ValueError(f"several engines write weights ({', '.join(e.name for e in writers)}): "
                                 "name one")
            return writers[0]
        for engine in writers:
            if engine.name == name:
                return engine
        raise ValueError(f"engine {name!r} is not an enabled weight-writing engine")

    def save(self, name: str, engine: str | None = None) -> CheckpointRow:
        if name.startswith(f"{BEFORE_SLEEP}-"):
            raise ValueError(f"names starting with '{BEFORE_SLEEP}-' are kept for the learned state "
                             "saved before each sleep (the next sleep replaces it): choose another name")
        return self._save(name, self.engine(engine))

    def _save(self, name: str, engine: Engine) -> CheckpointRow:
        return self.blobs.save_checkpoint(name, engine.name, engine.state_dict(), meta=engine.stats())

    def save_before_sleep(self, engine: Engine) -> str:
        """Checkpoint what ``engine`` learned as ``before-sleep-ENGINE`` (one per engine, replaced
        by the next sleep); returns the name. Raises ``CheckpointNotSaved`` when it cannot."""
        name = f"{BEFORE_SLEEP}-{engine.name}"
        try:
            return self._save(name, engine).name
        except (OSError, ValueError) as exc:
            raise CheckpointNotSaved(
                f"the sleep did not begin: the learned state could not be saved as checkpoint {name} "
                f"({exc}); free some disk space, or sleep without it: "
                "`engram config set sleep.checkpoint false`") from exc

    def list(self) -> list[CheckpointRow]:
        return self.blobs.checkpoints()

    def load(self, name: str) -> CheckpointRow:
        row, state = self.blobs.load_checkpoint(name)
        engine = self.engine(row.engine)
        engine.load_state_dict(state, origin=name)
        return row

    def delete(self, name: str) -> None:
        self.blobs.delete_checkpoint(name)

    def active(self) -> list[LearnedState]:
        """The learned states in use (engines that learned nothing yet are left out).

        Reads the saved state's summary when the model is not loaded, so asking is cheap."""
        out = []
        for engine in self.engines():
            if not engine.writes_weights:
                continue
            stats = engine.stats()
            if stats.get("documents"):
                out.append(LearnedState(engine=engine.name, label=str(stats.get("label", engine.name)),
                                        documents=int(stats["documents"]), origin=stats.get("origin")))
        return out
