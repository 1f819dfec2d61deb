"""The ttt learned state in a bundle (``engines.bundle_state.BundleState``, registered with the
engine): what its tensors and counters must be to fit this machine's model, which documents it
belongs to, and how it becomes the engine's state, loaded or not.

The state is the one ``LiveState.snapshot`` writes: each learning layer's rows
(``layer{i}.ids|gate|up|down``), the router's keys and their documents (``router.keys``,
``router.owners``, and ``router.probe``: what tells the embedding model that made them) and a JSON half (counters, the learning layers, the recall pool). Nothing of
it is trusted: the header's names, dtypes and shapes are checked before a byte of data is read,
then the values (neuron ids in range and unique, finite floats, documents the bundle lists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from engines.bundle_state import (
    ModelShape,
    Remapped,
    StateRefused,
    TensorInfo,
    checked_meta,
    remap_router,
)
from engines.ttt.persistence import LIVE_KEY, PARTS, STATE_FORMAT, put_live
from engines.ttt.recall import MAX_CHARS
from engines.ttt.route_keys import ROUTE_KEYS
from engines.ttt.state import LEARNING_FROM
from store.blobs import JSON_KEY

if TYPE_CHECKING:
    from engines.base import Engine
    from engines.ttt.config import TTTConfig
    from engines.ttt.engine import TTTEngine
    from store.blobs import BlobStore

FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
INT_DTYPES = {"I64": 8, "I32": 4}
ROUTER = ("router.keys", "router.owners", "router.probe")
UNKNOWN_DIM = 4096
"""The embedding width a size bound assumes when the bundle does not say (wider than most)."""


class StateMeta(BaseModel):
    """The JSON half of a learned state (``LiveState.snapshot``)."""

    model_config = ConfigDict(extra="forbid")

    format: int
    documents: int = Field(ge=0)
    alpha: float = Field(ge=0.0, le=1.0)
    revision: int = Field(ge=0)
    layers: list[int] = Field(max_length=10_000)
    mode: str = Field(pattern=r"^(dual|full)$")
    neurons: int = Field(ge=1)
    hidden: int = Field(ge=1)
    replay_at: int = Field(0, ge=0)
    origin: str | None = Field(None, max_length=256)
    recall: dict[str, Any] | None = None


def learning_layers(shape: ModelShape, config: TTTConfig) -> list[int]:
    from models.dual_mlp import layer_range

    try:
        return layer_range(shape.layers, LEARNING_FROM, config.layers)
    except ValueError as exc:
        raise StateRefused("ttt.layers", str(exc)) from None


def _loaded(engine: Engine | None) -> TTTEngine | None:
    """The engine when its model is loaded in this process (its state lives there then)."""
    if engine is not None and getattr(engine, "state", None) is not None and engine.state.cortex is not None:
        return engine  # type: ignore[return-value]
    return None


class TTTBundleState:
    """``engines.bundle_state.BundleState`` for ttt (see the module docstring)."""

    # --- export ----------------------------------------------------------------------------------
    def learned(self, engine: Engine | None, blobs: BlobStore) -> dict[str, Any] | None:
        loaded = _loaded(engine)
        state = loaded.state_dict() if loaded is not None else blobs.get(LIVE_KEY)
        return state if state and int(state.get("documents", 0)) > 0 else None

    def learned_here(self, engine: Engine | None, blobs: BlobStore) -> bool:
        if engine is not None:
            return int(engine.stats().get("documents", 0)) > 0
        return int((blobs.meta(LIVE_KEY) or {}).get("documents", 0)) > 0

    # --- checks ------------------------------------------------------------------------------------
    def max_bytes(self, shape: ModelShape, config: BaseModel, documents: int, embedding_dim: int | None) -> int:
        """Every neuron of every learning layer learned (ids as I64, rows as F32), ``ROUTE_KEYS``
        router keys for each listed document, a full recall pool of the longest pairs (JSON,
        every character escaped)."""
        layers = len(learning_layers(shape, config))  # type: ignore[arg-type]
        rows = layers * shape.intermediate * (8 + 3 * shape.hidden * 4)
        keys = documents * ROUTE_KEYS * ((embedding_dim or UNKNOWN_DIM) * 4 + 8)
        header = (1 << 16) + config.recall_pool * (2 * 6 * MAX_CHARS + 64)  # type: ignore[attr-defined]
        return 8 + header + rows + keys

    def check_header(self, tensors: dict[str, TensorInfo], meta: dict[str, str], shape: ModelShape,
                     config: BaseModel, embedding_dim: int | None) -> None:
        values = checked_meta(StateMeta, meta, JSON_KEY, STATE_FORMAT)
        layers = learning_layers(shape, config)  # type: ignore[arg-type]
        if values.layers != layers:
            raise StateRefused(f"{JSON_KEY}.layers", f"{values.layers} are not the learning layers {layers} "
                               "of this model with the bundle's ttt.layers")
        if (values.neurons, values.hidden) != (shape.intermediate, shape.hidden):
            raise StateRefused(f"{JSON_KEY}.neurons", f"rows of {values.neurons} neurons x {values.hidden} do "
                               f"not fit this model's {shape.intermediate} x {shape.hidden}")
        pairs = (values.recall or {}).get("pairs")
        if isinstance(pairs, list) and len(pairs) > config.recall_pool:  # type: ignore[attr-defined]
            raise StateRefused(f"{JSON_KEY}.recall", f"{len(pairs)} pairs, more than ttt.recall_pool "
                               f"({config.recall_pool})")  # type: ignore[attr-defined]
        self._check_tensors(tensors, layers, shape, embedding_dim)

    @staticmethod
    def _check_tensors(tensors: dict[str, TensorInfo], layers: list[int], shape: ModelShape,
                       dim: int | None) -> None:
        allowed = {f"layer{i}.{p}" for i in layers for p in PARTS} | set(ROUTER)
        for name in tensors:
            if name not in allowed:
                raise StateRefused(name, "not a tensor of this engine's state")
        for i in layers:
            parts = {p: tensors.get(f"layer{i}.{p}") for p in PARTS}
            missing = [p for p, t in parts.items() if t is None]
            if missing:
                raise StateRefused(f"layer{i}", f"misses {', '.join(missing)}")
            ids = parts["ids"]
            if ids.dtype not in INT_DTYPES or len(ids.shape) != 1 or ids.shape[0] > shape.intermediate:
                raise StateRefused(f"layer{i}.ids", f"{ids.dtype} {ids.shape} is not a list of "
                                   f"at most {shape.intermediate} neuron ids")
            for p in PARTS[1:]:
                t = parts[p]
                if t.dtype not in FLOAT_DTYPES or t.shape != [ids.shape[0], shape.hidden]:
                    raise StateRefused(f"layer{i}.{p}", f"{t.dtype} {t.shape}; this model expects "
                                       f"floats of shape [{ids.shape[0]}, {shape.hidden}]")
        keys, owners = tensors.get("router.keys"), tensors.get("router.owners")
        if (keys is None) != (owners is None):
            raise StateRefused("router", "keys and owners come together")
        if keys is not None and owners is not None:
            if keys.dtype not in FLOAT_DTYPES or len(keys.shape) != 2 or (dim and keys.shape[1] != dim):
                raise StateRefused("router.keys", f"{keys.dtype} {keys.shape} are not "
                                   f"{dim or 'D'}-dimensional embeddings")
            if owners.dtype not in INT_DTYPES or owners.shape != [keys.shape[0]]:
                raise StateRefused("router.owners", f"{owners.dtype} {owners.shape}: not one document id per key")
        probe = tensors.get("router.probe")
        if probe is not None and (probe.dtype not in FLOAT_DTYPES or len(probe.shape) != 1
                                  or (keys is not None and probe.shape[0] != keys.shape[1])):
            raise StateRefused("router.probe", f"{probe.dtype} {probe.shape} is not one embedding of the keys' width")

    def load(self, tensors: dict[str, Any], meta: dict[str, str], documents: set[int], shape: ModelShape,
             config: BaseModel) -> dict[str, Any]:
        import torch

        from engines.ttt.recall import RecallPool, RecallPoolError

        values = StateMeta.model_validate_json(meta.get(JSON_KEY, "{}"))  # checked with the header
        state: dict[str, Any] = {**values.model_dump(), **tensors}
        for i in values.layers:
            ids = state[f"layer{i}.ids"]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= shape.intermediate
                                or ids.unique().numel() != ids.numel()):
                raise StateRefused(f"layer{i}.ids", f"ids outside 0-{shape.intermediate - 1} or repeated")
            state[f"layer{i}.ids"] = ids.to(torch.long)
            for p in PARTS[1:]:
                if not bool(torch.isfinite(state[f"layer{i}.{p}"]).all()):
                    raise StateRefused(f"layer{i}.{p}", "holds values that are not finite")
        if "router.owners" in state:
            if not set(state["router.owners"].tolist()) <= documents:
                raise StateRefused("router.owners", "names documents the manifest does not list")
            state["router.owners"] = state["router.owners"].to(torch.long)
        try:
            pool = RecallPool.from_json(state.get("recall"), config.recall_pool)  # type: ignore[attr-defined]
        except RecallPoolError as exc:
            raise StateRefused(f"{JSON_KEY}.recall", str(exc)) from None
        if not pool.documents() <= documents:
            raise StateRefused(f"{JSON_KEY}.recall", "pairs of documents the manifest does not list")
        return state

    def remapped(self, state: dict[str, Any], mapping: dict[int, int]) -> Remapped:
        """Router keys and recalled pairs moved onto this library's document ids (those of
        documents not here are left out and counted)."""

        state, out = dict(state), Remapped(state={})
        out.keys_left_out = remap_router(state, state, mapping)
        recall = state.get("recall")
        if isinstance(recall, dict):
            pairs = recall.get("pairs", [])
            kept = [[mapping[d], q, a] for d, q, a in pairs if d in mapping]
            out.pairs_left_out = len(pairs) - len(kept)
            state["recall"] = {**recall, "pairs": kept}
        out.state = state
        return out

    # --- taking it in ------------------------------------------------------------------------------
    @contextmanager
    def hold(self, engine: Engine | None) -> Iterator[None]:
        """No load of the model (``setup``), training or sleep (a running sleep stops at its next
        step) and no save (``saving``: a forget on the scan thread waits) until the import is done:
        nothing of the old state is written over the new one afterwards."""
        state = getattr(engine, "state", None)
        if state is None:
            yield
            return
        with state.setup, state.exclusive(), state.saving:
            yield

    def put(self, engine: Engine | None, blobs: BlobStore, state: dict[str, Any]) -> Callable[[], None]:
        """Through the engine when its model is loaded here (its own checks again, then saved),
        else as its saved state (loaded at its next start). Call inside ``hold``."""
        loaded = _loaded(engine)
        if loaded is not None:
            live = loaded.live
            with loaded.state.cortex.lock:  # type: ignore[union-attr]
                before, origin = live.snapshot(), loaded.state.origin
            try:
                live.apply(state)
            except ValueError as exc:
                raise StateRefused("state", str(exc)) from None
            if loaded.autosave:
                live.put()

            def undo_loaded() -> None:
                live.apply(before)
                loaded.state.origin = origin
                if loaded.autosave:
                    live.put()
            return undo_loaded
        old, old_meta = blobs.get(LIVE_KEY), blobs.meta(LIVE_KEY)
        put_live(blobs, state, None)

        def undo_saved() -> None:
            if old is None:
                blobs.delete(LIVE_KEY)
            else:
                blobs.put(LIVE_KEY, "state", old, meta=old_meta)
        return undo_saved


BUNDLE_STATE = TTTBundleState()
