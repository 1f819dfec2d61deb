"""Which engines exist: each engine's package registers itself once, here.

An engine is one subpackage of ``engines/`` whose ``__init__`` calls ``register_engine`` with its
name, its settings model, its engine class (as ``"module:Class"``, imported only when the engine is
enabled) and, where it has some, a click command group. Settings are built from the registered
configs (``app.settings``), so adding an engine is one subpackage plus one registration, as peft's
``register_peft_method`` does for tuning methods.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from engines.base import Engine, EngineContext

BUILTIN_PACKAGES = ("engines.rag", "engines.ace", "engines.ttt", "engines.d2l", "engines.cls",
                    "engines.hidden")


class EngineSpec(BaseModel):
    """What Engram needs to know about an engine before importing its (heavy) code."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    config: type[BaseModel]
    engine: str  # "module:Class"
    description: str
    commands: str | None = None  # "module:group", a click group added to the CLI as `engram NAME`
    writes_weights: bool = False  # it learns into the model's weights (the engine class says so too)
    rebuilds: str | None = None
    """The part of the model it replaces with modules of its own (e.g. "the MLP layers"). Two
    engines that rebuild the same part cannot both be enabled: each finds the other's modules
    where it expects the model's own, and neither's learned state would load."""
    bundle_state: str | None = None
    """"module:object", an ``engines.bundle_state.BundleState``: how a bundle carries its learned
    state (read without loading the engine or its model)."""


_REGISTRY: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec) -> None:
    """Add an engine; registering one name twice with another spec is a mistake."""
    if not spec.name.isidentifier():
        raise ValueError(f"engine name {spec.name!r} must be an identifier (it names a settings section)")
    known = _REGISTRY.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"engine {spec.name!r} is already registered as {known.engine}")
    _REGISTRY[spec.name] = spec


def registered() -> dict[str, EngineSpec]:
    """Every registered engine by name, the built-in ones first."""
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    return dict(_REGISTRY)


def clashes(names: list[str]) -> list[tuple[str, list[str]]]:
    """(part, the engines of ``names`` that each rebuild it) wherever more than one does."""
    specs = registered()
    by_part: dict[str, list[str]] = {}
    for name in names:
        part = specs[name].rebuilds if name in specs else None
        if part:
            by_part.setdefault(part, []).append(name)
    return [(part, found) for part, found in by_part.items() if len(found) > 1]


def engine_spec(name: str) -> EngineSpec:
    specs = registered()
    if name not in specs:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(specs)}")
    return specs[name]


def engine_class(name: str) -> type[Engine]:
    module, _, cls = engine_spec(name).engine.partition(":")
    return getattr(importlib.import_module(module), cls)


def bundle_states() -> dict[str, Any]:
    """Each engine whose learned state a bundle carries, by name: its ``BundleState``."""
    found = {}
    for name, spec in registered().items():
        if spec.bundle_state:
            module, _, obj = spec.bundle_state.partition(":")
            found[name] = getattr(importlib.import_module(module), obj)
    return found


def build_engine(name: str, context: EngineContext, config: Any) -> Engine:
    return engine_class(name)(context, config)
