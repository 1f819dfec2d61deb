"""A weight-writing engine's learned state in a bundle: the part of export and import only the
engine knows.

A bundle (``app.services.bundles``) carries each weight-writing engine's learned state as one
safetensors member. What that state holds (its tensor names, shapes, counters, which documents
it belongs to, where it is saved, which locks guard it) is the engine's business: the engine's
registration names an object with the ``BundleState`` methods (``EngineSpec.bundle_state``), and
the bundle service calls those for every engine that has one, reading it without loading the
model. Engines never import ``app``, so what they need of the bundle arrives as plain values:
the base model's shape (``ModelShape``), the engine's settings as the import would leave them,
the embedding dimension.

A state that does not fit is refused with ``StateRefused`` (the field inside the member, and
why); the service names the member and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from engines.base import Engine
    from store.blobs import BlobStore


class ModelShape(NamedTuple):
    """The base model's shapes a learned state must fit (read from its header, no model load)."""

    layers: int
    hidden: int
    intermediate: int


class TensorInfo(NamedTuple):
    """A tensor as a safetensors header declares it (before a byte of it is read)."""

    dtype: str
    shape: list[int]


class StateRefused(ValueError):
    """The state cannot be taken in: ``field`` inside the member (a tensor name, a JSON key),
    ``reason`` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class Remapped:
    """A state moved onto this library's document ids, with what had to be left out."""

    state: dict[str, Any]
    keys_left_out: int = 0
    pairs_left_out: int = 0
    adapters_left_out: int = 0
    notes: list[str] = field(default_factory=list)
    """What did not travel with the state and what that means, in words for the person."""


class BundleState(Protocol):
    """What a weight-writing engine offers bundles (see the module docstring). ``engine`` is the
    engine enabled in this process, or None; ``blobs`` the store its state is saved in."""

    def learned(self, engine: Engine | None, blobs: BlobStore) -> dict[str, Any] | None:
        """The learned state to export (the loaded engine's, else the saved one); None when
        nothing is learned."""

    def learned_here(self, engine: Engine | None, blobs: BlobStore) -> bool:
        """Whether something is learned here already (an import without replace refuses then)."""

    def max_bytes(self, shape: ModelShape, config: BaseModel, documents: int, embedding_dim: int | None) -> int:
        """The most bytes a state of this model can take in a bundle listing ``documents``."""

    def check_header(self, tensors: dict[str, TensorInfo], meta: dict[str, str], shape: ModelShape,
                     config: BaseModel, embedding_dim: int | None) -> None:
        """Names, dtypes, shapes and the JSON counters, from the header alone (``StateRefused``)."""

    def load(self, tensors: dict[str, Any], meta: dict[str, str], documents: set[int], shape: ModelShape,
             config: BaseModel) -> dict[str, Any]:
        """The state whose header passed ``check_header`` (its tensors, read only then, and its
        text metadata), its values checked; ``documents``: the ids the bundle lists."""

    def remapped(self, state: dict[str, Any], mapping: dict[int, int]) -> Remapped:
        """The state with its documents' ids moved by ``mapping`` (those not in it left out)."""

    def hold(self, engine: Engine | None) -> AbstractContextManager[None]:
        """Keep the engine from saving or loading its state until the import is done."""

    def put(self, engine: Engine | None, blobs: BlobStore, state: dict[str, Any]) -> Callable[[], None]:
        """Make ``state`` the engine's learned state (inside ``hold``); returns its undo."""


Meta = TypeVar("Meta", bound=BaseModel)


def checked_meta(model: type[Meta], meta: dict[str, str], key: str, state_format: str) -> Meta:
    """A state's JSON metadata (under ``key``) read strictly into ``model``, whose ``format``
    must be ``state_format``; ``StateRefused`` names the first field that does not fit."""
    try:
        values = model.model_validate_json(meta.get(key, "{}"))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise StateRefused(f"{key}.{where}" if where else key, error["msg"]) from None
    found = getattr(values, "format", None)
    if found != state_format:
        raise StateRefused(f"{key}.format", f"{found} is not {state_format}")
    return values


@contextmanager
def held(engine: Any | None) -> Iterator[None]:
    """Inside the engine's own ``held()`` (no model load, learning or sleep until an import is
    done); nothing to hold when the engine is not running in this process."""
    if engine is None:
        yield
        return
    with engine.held():
        yield


def remap_router(state: dict[str, Any], out: dict[str, Any], mapping: dict[int, int]) -> int:
    """``state``'s router keys and owners into ``out`` with the owners moved by ``mapping`` (keys
    of documents not in it left out); returns how many keys were left out."""
    import torch

    if "router.owners" not in state:
        return 0
    owners = state["router.owners"].tolist()
    keep = torch.tensor([o in mapping for o in owners], dtype=torch.bool)
    out["router.keys"] = state["router.keys"][keep]
    out["router.owners"] = torch.tensor([mapping[o] for o in owners if o in mapping], dtype=torch.long)
    return int((~keep).sum())
