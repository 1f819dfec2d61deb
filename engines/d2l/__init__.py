"""Doc-to-LoRA: a hypernetwork writes each document into a LoRA adapter in one forward pass."""

from engines.d2l.config import D2LConfig
from engines.registry import EngineSpec, register_engine

register_engine(EngineSpec(
    name="d2l", config=D2LConfig, engine="engines.d2l.engine:D2LEngine", writes_weights=True,
    commands="app.cli.d2l:d2l", bundle_state="engines.d2l.bundle_state:BUNDLE_STATE",
    description="Writes each document into a small adapter of the model in one pass of a trained "
                "hypernetwork (train it first: engram d2l train)."))

__all__ = ["D2LConfig"]
