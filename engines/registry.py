"""Which engines exist: one line each, ``name -> "module:Class"``, imported only when enabled.

An engine's settings live in the section of ``Settings`` with the engine's name.
"""

from __future__ import annotations

import importlib
from typing import Any

from engines.base import Engine, EngineContext

ENGINES: dict[str, str] = {
    "rag": "engines.rag.engine:RagEngine",
    "ace": "engines.ace.engine:AceEngine",
    "ttt": "engines.ttt.engine:TTTEngine",
}


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_engine(name: str, context: EngineContext, config: Any) -> Engine:
    return engine_class(name)(context, config)
