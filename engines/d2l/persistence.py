"""The hypernetwork's weights, optimizer and training record, kept through the store.

One blob (``store.blobs``: safetensors under the data folder, nothing pickled) holds the
hypernetwork's parameters, AdamW's moments (so training resumes where it stopped) and, in its
JSON, the training record: steps taken, seconds spent, where the documents came from and the
loss curve. A hypernetwork saved for another shape or another model is refused, not retrained
over.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from models.hypernetwork import Hypernetwork, HyperShape
from store.blobs import BlobStore

HYPER_KEY = "d2l/hypernetwork"
CURVE_POINTS = 2000  # the loss curve keeps at most this many points (older ones thinned)
STORED_SOURCE = "stored documents"
"""The source a sleep (or ``engram d2l train``) records for the person's own documents."""


class HypernetworkMismatch(ValueError):
    """The saved hypernetwork was trained for another shape or model."""


def record(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The training record (a fresh one when nothing is saved)."""
    base = {"steps": 0, "seconds": 0.0, "curve": [], "sources": []}
    return {**base, **(meta or {})}


def saved_record(blobs: BlobStore) -> dict[str, Any]:
    """The saved training record, read without building the hypernetwork or loading a model: from
    the blob's header alone (stats read it while the hypernetwork is not loaded)."""
    return record((blobs.get(HYPER_KEY, tensors=False) or {}).get("record"))


def save(blobs: BlobStore, hyper: Hypernetwork, optimizer: torch.optim.Optimizer | None,
         meta: dict[str, Any]) -> None:
    state: dict[str, Any] = {f"hyper.{k}": v for k, v in hyper.state_dict().items()}
    if optimizer is not None:
        for i, slot in optimizer.state_dict()["state"].items():
            for name, value in slot.items():
                state[f"opt.{i}.{name}"] = torch.as_tensor(value).float()
    put_saved(blobs, state, {**meta, "shape": shape_json(hyper.shape)})


def put_saved(blobs: BlobStore, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``hyper.*`` and ``opt.*`` tensors with their training record (a bundle import puts a
    hypernetwork here without building one)."""
    curve = meta.get("curve", [])
    if len(curve) > CURVE_POINTS:
        curve = curve[::2]
    meta = {**meta, "curve": curve}
    blobs.put(HYPER_KEY, "d2l-hypernetwork", {**tensors, "record": meta},
              meta={k: v for k, v in meta.items() if k != "curve"})


def load(blobs: BlobStore, shape: HyperShape, model_name: str) -> tuple[Hypernetwork, dict[str, Any],
                                                                        dict[str, torch.Tensor]]:
    """(hypernetwork, training record, saved optimizer tensors); a fresh untrained one when none
    is saved. Raises ``HypernetworkMismatch`` for one saved for another shape or model."""
    hyper = Hypernetwork(shape)
    state = blobs.get(HYPER_KEY)
    if state is None:
        return hyper, record(None), {}
    meta = record(state.get("record"))
    if meta.get("shape") != shape_json(shape) or meta.get("model") not in (None, model_name):
        raise HypernetworkMismatch(
            f"the saved hypernetwork was trained for {meta.get('model')} with shape {meta.get('shape')}, "
            f"not {model_name} with {shape_json(shape)}: train it again under another data folder, "
            "or put the d2l settings back")
    hyper.load_state_dict({k[len("hyper."):]: v for k, v in state.items() if k.startswith("hyper.")})
    return hyper, meta, {k: v for k, v in state.items() if k.startswith("opt.")}


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, torch.Tensor]) -> None:
    """Put AdamW's saved moments back (nothing saved: a fresh optimizer)."""
    if not saved:
        return
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in saved.items():
        _, i, name = key.split(".", 2)
        slots.setdefault(int(i), {})[name] = value
    state = optimizer.state_dict()
    state["state"] = slots
    optimizer.load_state_dict(state)


def shape_json(shape: HyperShape) -> dict[str, Any]:
    found = asdict(shape)
    found["modules"] = [list(m) for m in shape.modules]
    return found
