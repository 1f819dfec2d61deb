"""The cls learned state in a bundle (``engines.bundle_state.BundleState``, registered with the
engine): every expert (a LoRA over each adapted MLP projection), the consolidated adapter sleep
distilled them into, the router's keys (owned by expert slots) and the bookkeeping (which
documents each expert learned, uses, sleeps).

One safetensors member holds it, read from what the engine saved (its index blob and one blob
per expert; the engine saves after every learn and sleep): ``consolidated.MODULE.A|B|open_rows``,
``expert.SLOT.MODULE.A|B|open_rows``, ``router.keys|owners|probe``, the learned gate when a sleep
trained one (``gate.weight|bias|slots``: [E, D], [E], the E expert slots it routes to) and a JSON half. MODULE is
``model.layers.I.mlp.TARGET`` for the learning layers and targets of this model and the bundle's
cls settings; A is [rank, in], B [out, rank], open_rows [out] booleans. Each name, dtype and
shape is checked from the header before a byte of data is read, then the values (finite floats,
keys only of experts in the bundle, documents the bundle lists).

The replay buffer (``store.cls_episodes``: the passages and question/answer pairs each expert
learned) is not carried: that is the documents' own text, which a bundle holds only with
``--with-documents``. After an import the next sleep has nothing of the imported experts to
replay until their documents are learned again; the import says so. Replacing what is here
takes this library's episodes out too (they belong to the experts replaced); the undo puts
them back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from engines.bundle_state import (
    ModelShape,
    Remapped,
    StateRefused,
    TensorInfo,
    checked_meta,
    held,
)
from engines.ttt.route_keys import ROUTE_KEYS
from store.blobs import JSON_KEY

if TYPE_CHECKING:
    from engines.base import Engine
    from engines.cls.config import CLSConfig
    from engines.cls.engine import CLSEngine
    from store.blobs import BlobStore

INDEX, EXPERT, RESUME = "cls/index", "cls/expert-{}", "cls/sleep-resume"
STATE_FORMAT = 1
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
INT_DTYPES = {"I64": 8, "I32": 4}
PARTS = ("A", "B", "open_rows")
EXPERT_TENSOR = re.compile(r"^expert\.(\d{1,9})\.(.+)$")
UNKNOWN_DIM = 4096
EPISODES_NOTE = ("the cls replay buffer does not travel (that is the documents' own text): the next sleep "
                 "replays nothing of the imported experts until their documents are learned again here")


class ExpertEntry(BaseModel):
    """An expert's bookkeeping (``engines.cls.engine.ExpertInfo``), checked."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    documents: list[int] = Field(default_factory=list, max_length=1_000_000)
    created: float = 0.0
    last_used: float = 0.0
    uses: int = Field(0, ge=0)
    consolidated: bool = False
    layered: bool = True  # a bundle from before the field: its experts learned on top of the adapter


class StateMeta(BaseModel):
    """The JSON half of a cls state."""

    model_config = ConfigDict(extra="forbid")

    format: int
    documents: int = Field(ge=0)
    sleeps: int = Field(0, ge=0)
    experts: dict[str, ExpertEntry] = Field(max_length=4096)


def modules(shape: ModelShape, config: CLSConfig) -> dict[str, tuple[int, int]]:
    """Each adapted projection's name (as the engine's pool names it) -> (in, out) features."""
    from engines.cls.lm import LEARNING_FROM
    from models.dual_mlp import layer_range

    try:
        layers = layer_range(shape.layers, LEARNING_FROM, config.layers)
    except ValueError as exc:
        raise StateRefused("cls.layers", str(exc)) from None
    sizes = {"down_proj": (shape.intermediate, shape.hidden), "up_proj": (shape.hidden, shape.intermediate),
             "gate_proj": (shape.hidden, shape.intermediate)}
    targets = [t.strip() for t in config.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in sizes]
    if unknown:
        raise StateRefused("cls.targets", f"unknown projections {unknown}")
    return {f"model.layers.{i}.mlp.{t}": sizes[t] for i in layers for t in targets}


def lora_shapes(shape: ModelShape, config: CLSConfig) -> dict[str, tuple[str, list[int]]]:
    """``MODULE.PART`` -> (the dtypes it may have, its shape) for one LoRA over every module."""
    out = {}
    for name, (fan_in, fan_out) in modules(shape, config).items():
        out[f"{name}.A"] = ("float", [config.rank, fan_in])
        out[f"{name}.B"] = ("float", [fan_out, config.rank])
        out[f"{name}.open_rows"] = ("bool", [fan_out])
    return out


def _cls(engine: Engine | None) -> CLSEngine | None:
    """The cls engine enabled in this process (its model loaded or not), or None."""
    return engine if engine is not None and hasattr(engine, "reload_saved") else None  # type: ignore[return-value]


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class CLSBundleState:
    """``engines.bundle_state.BundleState`` for cls (see the module docstring)."""

    # --- export ----------------------------------------------------------------------------------
    def learned(self, engine: Engine | None, blobs: BlobStore) -> dict[str, Any] | None:
        """The saved index and every expert whose blob is there; None when there is no expert."""
        import torch

        index = blobs.get(INDEX)
        if not index or not index.get("experts"):
            return None
        from store.documents import DocumentStore

        listed = {r.id for r in DocumentStore(blobs.db).list(status="indexed", limit=10**9)}  # the manifest's
        experts: dict[str, Any] = {}
        state: dict[str, Any] = {}
        for slot, info in index["experts"].items():
            saved = blobs.get(EXPERT.format(slot))
            if saved is None:  # never saved: the engine could not load it either
                continue
            # a document forgotten since leaves the list (its training stays in the expert)
            experts[slot] = {**info, "documents": [d for d in info.get("documents", []) if d in listed]}
            state.update({f"expert.{slot}.{k}": v for k, v in saved.items() if isinstance(v, torch.Tensor)})
        state.update({k: v for k, v in index.items() if k.startswith(("consolidated.", "router.probe"))})
        gate_slots = index.get("gate.slots")
        if gate_slots is not None and all(str(s) in experts for s in gate_slots.tolist()):
            state.update({k: v for k, v in index.items() if k.startswith("gate.")})  # else keys until a sleep
        owners = index["router.owners"].long()
        keep = torch.tensor([str(o) in experts for o in owners.tolist()], dtype=torch.bool)
        state["router.keys"], state["router.owners"] = index["router.keys"][keep], owners[keep]
        state.update(format=STATE_FORMAT, documents=int(index.get("documents", 0)),
                     sleeps=int(index.get("sleeps", 0)), experts=experts)
        return state if experts else None

    def learned_here(self, engine: Engine | None, blobs: BlobStore) -> bool:
        return int((blobs.meta(INDEX) or {}).get("experts", 0)) > 0

    # --- checks ------------------------------------------------------------------------------------
    def max_bytes(self, shape: ModelShape, config: BaseModel, documents: int, embedding_dim: int | None) -> int:
        """``max_experts`` experts and the consolidated adapter as F32 (open rows as bytes),
        ``ROUTE_KEYS`` keys for each listed document, the JSON half."""
        lora = sum(_count(s) * (1 if kind == "bool" else 4)
                   for kind, s in lora_shapes(shape, config).values())  # type: ignore[arg-type]
        experts = config.max_experts  # type: ignore[attr-defined]
        dim = embedding_dim or UNKNOWN_DIM
        keys = documents * ROUTE_KEYS * (dim * 4 + 8) + dim * 4 + experts * (dim * 4 + 12)  # + the gate
        header = (1 << 16) + experts * (512 + 24 * documents) + (experts + 1) * len(lora_shapes(
            shape, config)) * 200  # type: ignore[arg-type]
        return 8 + header + (experts + 1) * lora + keys

    def check_header(self, tensors: dict[str, TensorInfo], meta: dict[str, str], shape: ModelShape,
                     config: BaseModel, embedding_dim: int | None) -> None:
        values = checked_meta(StateMeta, meta, JSON_KEY, STATE_FORMAT)
        slots = set(values.experts)
        if not all(s.isdigit() and len(s) <= 9 for s in slots):
            raise StateRefused(f"{JSON_KEY}.experts", "slots are not numbers")
        if len(slots) > config.max_experts:  # type: ignore[attr-defined]
            raise StateRefused(f"{JSON_KEY}.experts", f"{len(slots)} experts, more than cls.max_experts "
                               f"({config.max_experts})")  # type: ignore[attr-defined]
        want = lora_shapes(shape, config)  # type: ignore[arg-type]
        found: dict[str, set[str]] = {}
        for name, t in tensors.items():
            if name.startswith(("router.", "gate.")):
                continue
            if name.startswith("consolidated."):
                owner, part = "consolidated", name[len("consolidated."):]
            else:
                match = EXPERT_TENSOR.match(name)
                if match is None or str(int(match.group(1))) != match.group(1):
                    raise StateRefused(name, "not a tensor of this engine's state")
                owner, part = f"expert.{match.group(1)}", match.group(2)
                if match.group(1) not in slots:
                    raise StateRefused(name, f"expert {match.group(1)} is not in {JSON_KEY}.experts")
            if part not in want:
                raise StateRefused(name, "not a tensor of this engine's state (this model, cls.layers and "
                                   "cls.targets)")
            kind, dims = want[part]
            ok = t.dtype == "BOOL" if kind == "bool" else t.dtype in FLOAT_DTYPES
            if not ok or t.shape != dims:
                raise StateRefused(name, f"{t.dtype} {t.shape}; this model expects "
                                   f"{'booleans' if kind == 'bool' else 'floats'} of shape {dims}")
            found.setdefault(owner, set()).add(part)
        for owner in ["consolidated", *(f"expert.{s}" for s in sorted(slots))]:
            missing = set(want) - found.get(owner, set())
            if missing:
                raise StateRefused(owner, f"misses {len(missing)} tensors, e.g. {sorted(missing)[0]}")
        self._check_router(tensors, embedding_dim)
        self._check_gate(tensors, len(slots), tensors["router.keys"].shape[1])

    @staticmethod
    def _check_gate(tensors: dict[str, TensorInfo], experts: int, dim: int) -> None:
        """A learned gate, when there is one: E <= the experts' count rows over the keys' width."""
        names = {n for n in tensors if n.startswith("gate.")}
        if not names:
            return
        if names != {"gate.weight", "gate.bias", "gate.slots"}:
            raise StateRefused("gate", f"a gate is gate.weight, gate.bias and gate.slots, not {sorted(names)}")
        weight, bias, slots = tensors["gate.weight"], tensors["gate.bias"], tensors["gate.slots"]
        rows = slots.shape[0] if len(slots.shape) == 1 else -1
        if slots.dtype not in INT_DTYPES or not 2 <= rows <= experts:
            raise StateRefused("gate.slots", f"{slots.dtype} {slots.shape}: not between 2 and {experts} expert slots")
        if weight.dtype not in FLOAT_DTYPES or weight.shape != [rows, dim]:
            raise StateRefused("gate.weight", f"{weight.dtype} {weight.shape}; the gate expects floats of shape {[rows, dim]}")
        if bias.dtype not in FLOAT_DTYPES or bias.shape != [rows]:
            raise StateRefused("gate.bias", f"{bias.dtype} {bias.shape}; the gate expects floats of shape {[rows]}")

    @staticmethod
    def _check_router(tensors: dict[str, TensorInfo], dim: int | None) -> None:
        for name in tensors:
            if name.startswith("router.") and name not in ("router.keys", "router.owners", "router.probe"):
                raise StateRefused(name, "not a tensor of this engine's state")
        keys, owners = tensors.get("router.keys"), tensors.get("router.owners")
        if keys is None or owners is None:
            raise StateRefused("router", "the router's keys and owners are missing")
        if keys.dtype not in FLOAT_DTYPES or len(keys.shape) != 2 or (dim and keys.shape[1] != dim):
            raise StateRefused("router.keys", f"{keys.dtype} {keys.shape} are not {dim or 'D'}-dimensional embeddings")
        if owners.dtype not in INT_DTYPES or owners.shape != [keys.shape[0]]:
            raise StateRefused("router.owners", f"{owners.dtype} {owners.shape}: not one expert slot per key")
        probe = tensors.get("router.probe")
        if probe is not None and (probe.dtype not in FLOAT_DTYPES or probe.shape != [keys.shape[1]]):
            raise StateRefused("router.probe", f"{probe.dtype} {probe.shape} is not one embedding of the keys' width")

    def load(self, tensors: dict[str, Any], meta: dict[str, str], documents: set[int], shape: ModelShape,
             config: BaseModel) -> dict[str, Any]:
        import torch

        values = StateMeta.model_validate_json(meta.get(JSON_KEY, "{}"))  # checked with the header
        state: dict[str, Any] = values.model_dump(mode="json")
        for name, t in tensors.items():
            if name in ("router.owners", "gate.slots"):
                state[name] = t.to(torch.long)
            elif t.dtype == torch.bool:
                state[name] = t.clone()
            elif not bool(torch.isfinite(t).all()):
                raise StateRefused(name, "holds values that are not finite")
            else:
                state[name] = t.float()
        if not {str(s) for s in state["router.owners"].tolist()} <= set(values.experts):
            raise StateRefused("router.owners", "keys of an expert the bundle does not hold")
        if "gate.slots" in state and not {str(s) for s in state["gate.slots"].tolist()} <= set(values.experts):
            raise StateRefused("gate.slots", "routes to an expert the bundle does not hold")
        for slot, info in values.experts.items():
            if not set(info.documents) <= documents:
                raise StateRefused(f"{JSON_KEY}.experts.{slot}.documents", "names documents the manifest does not list")
        return state

    def remapped(self, state: dict[str, Any], mapping: dict[int, int]) -> Remapped:
        """Each expert's documents moved onto this library's ids (those not here leave its list:
        its weights stay, its keys are re-embedded from the documents it lists after a model switch)."""
        experts = {slot: {**info, "documents": [mapping[d] for d in info["documents"] if d in mapping]}
                   for slot, info in state["experts"].items()}
        return Remapped(state={**state, "experts": experts}, notes=[EPISODES_NOTE])

    # --- taking it in ------------------------------------------------------------------------------
    def hold(self, engine: Engine | None) -> AbstractContextManager[None]:
        """No model load, learning or sleep in this process until the import is done."""
        return held(_cls(engine))

    def put(self, engine: Engine | None, blobs: BlobStore, state: dict[str, Any]) -> Callable[[], None]:
        """The index and one blob per expert in place of those here (the old ones kept in memory
        for the undo; a sleep's resume blob and the replay buffer of the replaced experts leave
        with them), then an engine whose model is loaded reads them. Call inside ``hold``."""
        from store.cls_episodes import ClsEpisodeStore

        found = _cls(engine)
        running = found.loaded_shapes() if found is not None else None
        prefix = "consolidated."
        if running is not None and running != {k[len(prefix):]: list(v.shape) for k, v in state.items()
                                               if k.startswith(prefix)}:
            raise StateRefused("consolidated", "the cls engine running here has other settings than the bundle's; "
                               "import with Engram stopped (`engram bundle import`), then start it")
        episodes = ClsEpisodeStore(blobs.db)
        old_index, old_meta = blobs.get(INDEX), blobs.meta(INDEX)
        old_slots = list((old_index or {}).get("experts", {}))
        old_experts = {s: e for s in old_slots if (e := blobs.get(EXPERT.format(s))) is not None}
        old_resume, old_resume_meta = blobs.get(RESUME), blobs.meta(RESUME)
        taken: list[Any] = []

        def undo() -> None:
            for slot in state["experts"]:
                blobs.delete(EXPERT.format(slot))
            for slot, saved in old_experts.items():
                blobs.put(EXPERT.format(slot), "cls-expert", saved)
            if old_index is None:
                blobs.delete(INDEX)
            else:
                blobs.put(INDEX, "cls-index", old_index, meta=old_meta)
            if old_resume is not None:
                blobs.put(RESUME, "cls-sleep-resume", old_resume, meta=old_resume_meta)
            episodes.restore(taken)
            if found is not None:
                found.reload_saved()
        try:
            taken[:] = episodes.take_all()
            blobs.delete(RESUME)
            for slot in old_slots:
                blobs.delete(EXPERT.format(slot))
            for slot in state["experts"]:
                part = f"expert.{slot}."
                blobs.put(EXPERT.format(slot), "cls-expert",
                          {k[len(part):]: v for k, v in state.items() if k.startswith(part)})
            index = {k: v for k, v in state.items() if k.startswith(("consolidated.", "router.", "gate."))}
            index.update(experts=state["experts"], documents=state["documents"], sleeps=state["sleeps"])
            blobs.put(INDEX, "cls-index", index, {"experts": len(state["experts"]), "documents": state["documents"]})
            if found is not None:
                found.reload_saved()
        except BaseException:
            undo()
            raise
        return undo


BUNDLE_STATE = CLSBundleState()
