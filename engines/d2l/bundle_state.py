"""The d2l learned state in a bundle (``engines.bundle_state.BundleState``, registered with the
engine): the meta-trained hypernetwork (hours of training: the part that must travel), AdamW's
moments (so training resumes), each document's adapter and its router keys.

One safetensors member holds it all, read from what the engine saved (its hypernetwork blob and
its adapter folders, ``store.adapters``; the engine saves after every learn and meta-training
save, so disk is its state): ``hyper.NAME`` (every parameter of ``models.hypernetwork``),
``opt.I.step|exp_avg|exp_avg_sq`` (AdamW's slot of parameter I), ``adapter.DOC.TARGET.A|B`` (A
[layers, rank, in], B [layers, out, rank]), ``router.keys|owners|probe`` and a JSON half (the
shape, layers, targets, the training record: steps, seconds, loss curve and what it was trained
on, as labels; a path or other free text stays here). Nothing of it is trusted: each
name, dtype and shape is checked against the hypernetwork this model and the bundle's d2l
settings make (built on the meta device: no memory, no weights) before a byte of data is read,
then the values (finite, documents the bundle lists, keys only of documents with an adapter).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from engines.bundle_state import (
    ModelShape,
    Remapped,
    StateRefused,
    TensorInfo,
    checked_meta,
    held,
    remap_router,
)
from engines.d2l.persistence import (
    CURVE_POINTS,
    HYPER_KEY,
    STORED_SOURCE,
    put_saved,
    shape_json,
)
from engines.ttt.route_keys import ROUTE_KEYS
from store.blobs import JSON_KEY

if TYPE_CHECKING:
    import torch

    from engines.base import Engine
    from engines.d2l.config import D2LConfig
    from engines.d2l.engine import D2LEngine
    from models.hypernetwork import HyperShape
    from store.adapters import AdapterStore, StoredAdapter
    from store.blobs import BlobStore

NAME = "d2l"
STATE_FORMAT = 1
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
INT_DTYPES = {"I64": 8, "I32": 4}
ADAM_SLOTS = ("step", "exp_avg", "exp_avg_sq")
ADAPTER = re.compile(r"^adapter\.(\d{1,12})\.([a-z_]{1,16})\.(A|B)$")
OPT = re.compile(r"^opt\.(\d{1,6})\.([a-z_]{1,16})$")
UNKNOWN_DIM = 4096
"""The embedding width a size bound assumes when the bundle does not say (wider than most)."""
SOURCE_LABEL = r"^[A-Za-z0-9][A-Za-z0-9 ,.:;()'_+-]{0,119}$"
"""A training source as ``meta_train`` names it ("stored documents", "fictional documents
(app.bench.fiction)", "bench: natural set seed 7"): no slash, so never a path; one line."""
MAX_SOURCES = 64
IMPORTED_SOURCE = "a bundle import"
OTHER_STORED_SOURCE = "stored documents of the library a bundle came from"
UNKNOWN_SOURCES = "not known (a bundle made before bundles carried the training sources)"


class TrainingRecord(BaseModel):
    """What the hypernetwork's training record carries (``persistence.record``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(ge=1)
    seconds: float = Field(ge=0.0)
    curve: list[tuple[int, float]] = Field(default_factory=list, max_length=2 * CURVE_POINTS)
    sources: list[Annotated[str, StringConstraints(pattern=SOURCE_LABEL)]] | None = Field(
        None, max_length=MAX_SOURCES, description="What it was trained on; None: an older bundle.")
    sources_left_out: int = Field(0, ge=0, le=10**6, description="Sources that were not labels (stayed there).")


class StateMeta(BaseModel):
    """The JSON half of a d2l state."""

    model_config = ConfigDict(extra="forbid")

    format: int
    documents: int = Field(ge=0)
    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._ +-]{0,127}$")
    shape: dict[str, Any]
    layers: list[int] | None = Field(None, max_length=10_000, description="As the adapters name them.")
    targets: list[str] = Field(min_length=1, max_length=3)
    record: TrainingRecord


def adapted_layers(shape: ModelShape, config: D2LConfig) -> list[int]:
    from models.dual_mlp import layer_range

    try:
        return layer_range(shape.layers, 0.0, config.layers)
    except ValueError as exc:
        raise StateRefused("d2l.layers", str(exc)) from None


def hyper_shape(shape: ModelShape, config: D2LConfig) -> HyperShape:
    """The hypernetwork this model and these settings make (as ``D2LEngine.shape`` does)."""
    from models.hypernetwork import HyperShape

    sizes = {"down_proj": (shape.intermediate, shape.hidden), "up_proj": (shape.hidden, shape.intermediate),
             "gate_proj": (shape.hidden, shape.intermediate)}
    return HyperShape(layers=len(adapted_layers(shape, config)), hidden=shape.hidden,
                      modules=tuple((t, *sizes[t]) for t in config.targets), rank=config.rank,
                      latent_dim=config.latent_dim, heads=config.heads, blocks=config.blocks)


def parameter_shapes(shape: HyperShape) -> list[tuple[str, list[int]]]:
    """Each hypernetwork parameter's name and shape, in ``parameters()`` order (AdamW's slots),
    from a module built on the meta device (no memory, no values)."""
    import torch

    from models.hypernetwork import Hypernetwork

    with torch.device("meta"):
        module = Hypernetwork(shape)
    return [(name, list(p.shape)) for name, p in module.named_parameters()]


def buffer_shapes(shape: HyperShape) -> dict[str, list[int]]:
    """Every tensor of the hypernetwork's ``state_dict`` (parameters and buffers) by name."""
    import torch

    from models.hypernetwork import Hypernetwork

    with torch.device("meta"):
        module = Hypernetwork(shape)
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def _adapter_shapes(hyper: HyperShape) -> dict[str, tuple[list[int], list[int]]]:
    """Per target: the shapes of one document's A and B."""
    return {name: ([hyper.layers, hyper.rank, fan_in], [hyper.layers, fan_out, hyper.rank])
            for name, fan_in, fan_out in hyper.modules}


def _d2l(engine: Engine | None) -> D2LEngine | None:
    """The d2l engine enabled in this process (its model loaded or not), or None."""
    return engine if engine is not None and hasattr(engine, "reload_saved") else None  # type: ignore[return-value]


def _adapters(blobs: BlobStore) -> AdapterStore:
    from store.adapters import AdapterStore

    return AdapterStore(blobs.root, NAME)


def _listed(blobs: BlobStore) -> set[int]:
    """The documents a bundle's manifest lists (``BundleService``: those indexed)."""
    from store.documents import DocumentStore

    return {r.id for r in DocumentStore(blobs.db).list(status="indexed", limit=10**9)}


class D2LBundleState:
    """``engines.bundle_state.BundleState`` for d2l (see the module docstring)."""

    # --- export ----------------------------------------------------------------------------------
    def learned(self, engine: Engine | None, blobs: BlobStore) -> dict[str, Any] | None:
        """The saved hypernetwork (trained) and the adapters of documents the bundle lists; None
        when the hypernetwork was never trained."""
        saved = blobs.get(HYPER_KEY)
        record = (saved or {}).get("record") or {}
        if not saved or int(record.get("steps", 0)) < 1:
            return None
        state: dict[str, Any] = {k: v for k, v in saved.items() if k.startswith(("hyper.", "opt."))}
        store, listed, shape = _adapters(blobs), _listed(blobs), record["shape"]
        layers: list[int] | None = None
        targets = sorted({m[0] for m in shape["modules"]})
        keys, owners, probe, documents = [], [], None, 0
        for d in store.documents():
            adapter = store.load(d) if d in listed else None
            found = _from_peft(adapter, targets) if adapter is not None else None
            here = (adapter.config.get("layers_to_transform") if adapter is not None else None) or []
            if found is None or not _fits(found, shape) or (layers is not None and here != layers):
                continue  # written under other d2l settings: the engine leaves it unused too
            layers = here
            for t, (a, b) in found.items():
                state[f"adapter.{d}.{t}.A"], state[f"adapter.{d}.{t}.B"] = a, b
            keys.append(adapter.keys)
            owners += [d] * len(adapter.keys)
            probe = adapter.probe if adapter.probe is not None else probe
            documents += 1
        if keys:
            import torch

            state["router.keys"] = torch.cat([k.float() for k in keys])
            state["router.owners"] = torch.tensor(owners, dtype=torch.long)
            if probe is not None:
                state["router.probe"] = probe.float()
        state.update(format=STATE_FORMAT, documents=documents, model=str(record.get("model") or "embedded"),
                     shape=record["shape"], layers=layers,
                     targets=targets, record={"steps": int(record["steps"]),
                                              "seconds": float(record.get("seconds", 0.0)),
                                              "curve": record.get("curve", []),
                                              **_exported_sources(record.get("sources", []))})
        return state

    def learned_here(self, engine: Engine | None, blobs: BlobStore) -> bool:
        """A trained hypernetwork or any document adapter here."""
        return int((blobs.meta(HYPER_KEY) or {}).get("steps", 0)) > 0 or bool(_adapters(blobs).documents())

    # --- checks ------------------------------------------------------------------------------------
    def max_bytes(self, shape: ModelShape, config: BaseModel, documents: int, embedding_dim: int | None) -> int:
        """The hypernetwork and both AdamW moments as F32, an adapter and ``ROUTE_KEYS`` keys for
        each listed document, the JSON half with a full loss curve."""
        hyper = hyper_shape(shape, config)  # type: ignore[arg-type]
        params = sum(_count(s) for _, s in parameter_shapes(hyper))
        buffers = sum(_count(s) for s in buffer_shapes(hyper).values())
        adapter = sum(_count(a) + _count(b) for a, b in _adapter_shapes(hyper).values()) * 4
        dim = embedding_dim or UNKNOWN_DIM
        keys = ROUTE_KEYS * (dim * 4 + 8)
        header = (1 << 16) + 2 * CURVE_POINTS * 64 + (documents * 3 * 2 + 4 * len(parameter_shapes(hyper))) * 200
        return 8 + header + (buffers + 2 * params) * 4 + 4 * len(parameter_shapes(hyper)) \
            + documents * (adapter + keys) + dim * 4

    def check_header(self, tensors: dict[str, TensorInfo], meta: dict[str, str], shape: ModelShape,
                     config: BaseModel, embedding_dim: int | None) -> None:
        values = checked_meta(StateMeta, meta, JSON_KEY, STATE_FORMAT)
        hyper = hyper_shape(shape, config)  # type: ignore[arg-type]
        if values.shape != shape_json(hyper):
            raise StateRefused(f"{JSON_KEY}.shape", f"{values.shape} is not the hypernetwork this model and the "
                               f"bundle's d2l settings make ({shape_json(hyper)})")
        layers = adapted_layers(shape, config)  # type: ignore[arg-type]
        if values.layers is not None and values.layers != layers:
            raise StateRefused(f"{JSON_KEY}.layers", f"{values.layers} are not the adapted layers {layers}")
        if sorted(values.targets) != sorted(config.targets):  # type: ignore[attr-defined]
            raise StateRefused(f"{JSON_KEY}.targets", f"{values.targets} are not d2l.targets")
        self._check_hyper(tensors, hyper)
        documents = self._check_adapters(tensors, hyper)
        if len(documents) != values.documents:
            raise StateRefused(f"{JSON_KEY}.documents", f"{values.documents}, but {len(documents)} adapters")
        _check_router(tensors, embedding_dim)

    @staticmethod
    def _check_hyper(tensors: dict[str, TensorInfo], hyper: HyperShape) -> None:
        expected = buffer_shapes(hyper)
        params = parameter_shapes(hyper)
        for name, want in expected.items():
            t = tensors.get(f"hyper.{name}")
            if t is None:
                raise StateRefused(f"hyper.{name}", "missing: the hypernetwork is incomplete")
            if t.dtype not in FLOAT_DTYPES or t.shape != want:
                raise StateRefused(f"hyper.{name}", f"{t.dtype} {t.shape}; this hypernetwork expects floats "
                                   f"of shape {want}")
        slots: dict[int, set[str]] = {}
        for name, t in tensors.items():
            if name.startswith("hyper."):
                if name[len("hyper."):] not in expected:
                    raise StateRefused(name, "not a tensor of this hypernetwork")
                continue
            if not name.startswith("opt."):
                continue
            match = OPT.match(name)
            if match is None or int(match.group(1)) >= len(params) or match.group(2) not in ADAM_SLOTS:
                raise StateRefused(name, "not an AdamW slot of this hypernetwork's parameters")
            i, slot = int(match.group(1)), match.group(2)
            want = [] if slot == "step" else params[i][1]
            if t.dtype not in FLOAT_DTYPES or t.shape != want:
                raise StateRefused(name, f"{t.dtype} {t.shape}; expected floats of shape {want} "
                                   f"({params[i][0]})")
            slots.setdefault(i, set()).add(slot)
        for i, found in slots.items():
            if found != set(ADAM_SLOTS):
                raise StateRefused(f"opt.{i}", f"misses {', '.join(sorted(set(ADAM_SLOTS) - found))}")

    @staticmethod
    def _check_adapters(tensors: dict[str, TensorInfo], hyper: HyperShape) -> set[int]:
        shapes = _adapter_shapes(hyper)
        documents: dict[int, set[str]] = {}
        for name, t in tensors.items():
            if name.startswith(("hyper.", "opt.", "router.")):
                if name.startswith("router.") and name not in ("router.keys", "router.owners", "router.probe"):
                    raise StateRefused(name, "not a tensor of this engine's state")
                continue
            match = ADAPTER.match(name)
            if match is None or match.group(2) not in shapes:
                raise StateRefused(name, "not a tensor of this engine's state")
            d, target, part = int(match.group(1)), match.group(2), match.group(3)
            want = shapes[target][0 if part == "A" else 1]
            if t.dtype not in FLOAT_DTYPES or t.shape != want:
                raise StateRefused(name, f"{t.dtype} {t.shape}; this model's adapters are floats of shape {want}")
            documents.setdefault(d, set()).add(f"{target}.{part}")
        every = {f"{t}.{p}" for t in shapes for p in ("A", "B")}
        for d, found in documents.items():
            if found != every:
                raise StateRefused(f"adapter.{d}", f"misses {', '.join(sorted(every - found))}")
        return set(documents)

    def load(self, tensors: dict[str, Any], meta: dict[str, str], documents: set[int], shape: ModelShape,
             config: BaseModel) -> dict[str, Any]:
        import torch

        values = StateMeta.model_validate_json(meta.get(JSON_KEY, "{}"))  # checked with the header
        state: dict[str, Any] = {**values.model_dump(), "scale": float(config.scale),  # type: ignore[attr-defined]
                                 "rank": int(config.rank),  # type: ignore[attr-defined]
                                 "layers": adapted_layers(shape, config)}  # type: ignore[arg-type]
        for name, t in tensors.items():
            if name == "router.owners":
                continue
            if not bool(torch.isfinite(t).all()):
                raise StateRefused(name, "holds values that are not finite")
            state[name] = t.float()
        adapted = {int(ADAPTER.match(n).group(1)) for n in tensors if ADAPTER.match(n)}  # type: ignore[union-attr]
        if not adapted <= documents:
            raise StateRefused("adapter", "an adapter of a document the manifest does not list")
        if "router.owners" in tensors:
            owners = tensors["router.owners"].to(torch.long)
            if not set(owners.tolist()) <= adapted:
                raise StateRefused("router.owners", "keys of a document that has no adapter in the bundle")
            state["router.owners"] = owners
        return state

    def remapped(self, state: dict[str, Any], mapping: dict[int, int]) -> Remapped:
        """Adapters and router keys moved onto this library's document ids (those of documents
        not here are left out and counted); the hypernetwork stays whole."""

        out: dict[str, Any] = {}
        adapters_out = set()
        for name, value in state.items():
            match = ADAPTER.match(name)
            if match is None:
                out[name] = value
            elif int(match.group(1)) in mapping:
                out[f"adapter.{mapping[int(match.group(1))]}.{match.group(2)}.{match.group(3)}"] = value
            else:
                adapters_out.add(int(match.group(1)))
        moved = Remapped(state=out, adapters_left_out=len(adapters_out), notes=_sources_notes(state["record"]))
        moved.keys_left_out = remap_router(state, out, mapping)
        out["documents"] = int(state["documents"]) - len(adapters_out)
        return moved

    # --- taking it in ------------------------------------------------------------------------------
    def hold(self, engine: Engine | None) -> AbstractContextManager[None]:
        """No model load, learning or meta-training in this process until the import is done."""
        return held(_d2l(engine))

    def put(self, engine: Engine | None, blobs: BlobStore, state: dict[str, Any]) -> Callable[[], None]:
        """Write the hypernetwork blob and the adapter folders in place of those here (the old ones
        kept in memory for the undo), then have an engine whose model is loaded read them. Call
        inside ``hold``."""
        loaded = _d2l(engine)
        running = loaded.saved_shape() if loaded is not None else None
        if running is not None and running != state["shape"]:
            raise StateRefused("shape", "the d2l engine running here has other settings than the bundle's; "
                               "import with Engram stopped (`engram bundle import`), then start it")
        store = _adapters(blobs)
        old_hyper, old_meta = blobs.get(HYPER_KEY), blobs.meta(HYPER_KEY)
        old = {d: a for d in store.documents() if (a := store.load(d)) is not None}

        def undo() -> None:
            _replace_adapters(store, old)
            if old_hyper is None:
                blobs.delete(HYPER_KEY)
            else:
                blobs.put(HYPER_KEY, "d2l-hypernetwork", old_hyper, meta=old_meta)
            if loaded is not None:
                loaded.reload_saved()
        try:
            record = {**{k: v for k, v in state["record"].items() if k != "sources_left_out"},
                      "sources": imported_sources(state["record"].get("sources")), "shape": state["shape"]}
            put_saved(blobs, {k: v for k, v in state.items() if k.startswith(("hyper.", "opt."))}, record)
            _replace_adapters(store, _stored(state))
            if loaded is not None:
                loaded.reload_saved()
        except BaseException:
            undo()
            raise
        return undo


def _exported_sources(sources: list[Any]) -> dict[str, Any]:
    """The record's sources that are plain labels (at most ``MAX_SOURCES``), and how many are not
    (a path or other free text: it stays on this machine)."""
    plain = [s for s in sources if isinstance(s, str) and re.fullmatch(SOURCE_LABEL, s)][:MAX_SOURCES]
    return {"sources": plain, "sources_left_out": len(sources) - len(plain)}


def imported_sources(sources: list[str] | None) -> list[str]:
    """The bundle's sources as this library reads them: the stored documents were the other
    library's, and the import comes last (None, an older bundle: not known)."""
    found = [UNKNOWN_SOURCES] if sources is None else \
        [OTHER_STORED_SOURCE if s == STORED_SOURCE else s for s in sources]
    return list(dict.fromkeys([*(s for s in found if s != IMPORTED_SOURCE), IMPORTED_SOURCE]))


def _sources_notes(record: dict[str, Any]) -> list[str]:
    """What the import says about the training record's sources it could not take."""
    if record.get("sources") is None:
        return [("this bundle does not say what the d2l hypernetwork was trained on (an older Engram made "
                 f"it): its training record lists its sources as {UNKNOWN_SOURCES!r}")]
    left = int(record.get("sources_left_out", 0))
    return [(f"{left} of the d2l training record's sources stayed on the machine the bundle came from "
             f"(not plain labels, such as a path, or past the first {MAX_SOURCES})")] if left else []


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _check_router(tensors: dict[str, TensorInfo], dim: int | None) -> None:
    keys, owners = tensors.get("router.keys"), tensors.get("router.owners")
    if (keys is None) != (owners is None):
        raise StateRefused("router", "keys and owners come together")
    if keys is not None and owners is not None:
        if keys.dtype not in FLOAT_DTYPES or len(keys.shape) != 2 or (dim and keys.shape[1] != dim):
            raise StateRefused("router.keys", f"{keys.dtype} {keys.shape} are not {dim or 'D'}-dimensional embeddings")
        if owners.dtype not in INT_DTYPES or owners.shape != [keys.shape[0]]:
            raise StateRefused("router.owners", f"{owners.dtype} {owners.shape}: not one document id per key")
    probe = tensors.get("router.probe")
    if probe is not None and (probe.dtype not in FLOAT_DTYPES or len(probe.shape) != 1
                              or (keys is not None and probe.shape[0] != keys.shape[1])):
        raise StateRefused("router.probe", f"{probe.dtype} {probe.shape} is not one embedding of the keys' width")


def _from_peft(adapter: StoredAdapter, targets: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """A saved adapter as (A, B) per target (None: it does not fit, as the engine leaves it unused)."""
    from engines.d2l.reading import from_peft_weights

    layers = adapter.config.get("layers_to_transform")
    try:
        return from_peft_weights(adapter.weights, list(layers or []), targets)
    except (KeyError, RuntimeError):
        return None


def _fits(adapter: dict[str, tuple[torch.Tensor, torch.Tensor]], shape: dict[str, Any]) -> bool:
    """Whether an adapter has the shapes the saved hypernetwork writes (``shape_json``)."""
    for name, fan_in, fan_out in shape["modules"]:
        a, b = adapter[name]
        if list(a.shape) != [shape["layers"], shape["rank"], fan_in] or \
                list(b.shape) != [shape["layers"], fan_out, shape["rank"]]:
            return False
    return True


def _stored(state: dict[str, Any]) -> dict[int, StoredAdapter]:
    """The state's adapters as the adapter store saves them (peft's files and the route keys)."""
    from engines.d2l.reading import peft_config, peft_weights
    from store.adapters import StoredAdapter

    layers, targets = list(state["layers"]), list(state["targets"])
    owners = state.get("router.owners")
    out = {}
    ids = sorted({int(m.group(1)) for n in state if (m := ADAPTER.match(n))})
    for d in ids:
        adapter = {t: (state[f"adapter.{d}.{t}.A"], state[f"adapter.{d}.{t}.B"]) for t in targets}
        keys = state["router.keys"][owners == d] if owners is not None else state.get("router.keys")
        out[d] = StoredAdapter(config=peft_config(state["model"], state["rank"], state["scale"], targets, layers),
                               weights=peft_weights(adapter, layers), keys=keys if keys is not None else _none(),
                               meta={"hypernetwork_steps": state["record"]["steps"], "from": "a bundle import"},
                               probe=state.get("router.probe"))
    return out


def _none() -> torch.Tensor:
    import torch

    return torch.zeros(0, 1)


def _replace_adapters(store: AdapterStore, adapters: dict[int, StoredAdapter]) -> None:
    """Make ``adapters`` the store's adapters: every other folder leaves (its llama.cpp copy too)."""
    for d in store.documents():
        store.delete(d)
    for d, a in adapters.items():
        store.save(d, a.config, a.weights, a.keys, a.meta, a.probe)


BUNDLE_STATE = D2LBundleState()
