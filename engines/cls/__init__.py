"""CLS: fast LoRA experts learn documents by day; sleep distils them into one slow adapter."""

from engines.cls.config import CLSConfig
from engines.registry import EngineSpec, register_engine

register_engine(EngineSpec(
    name="cls", config=CLSConfig, engine="engines.cls.engine:CLSEngine", writes_weights=True,
    rebuilds="the MLP layers",
    bundle_state="engines.cls.bundle_state:BUNDLE_STATE",
    description="Learns each document into a small routed expert of the model's weights, and "
                "merges the experts into the model during sleep (slow on a CPU)."))

__all__ = ["CLSConfig"]
