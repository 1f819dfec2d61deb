"""TTT-E2E with sparse memory finetuning: documents learned into the neocortex's MLP weights."""

from engines.registry import EngineSpec, register_engine
from engines.ttt.config import TTTConfig

register_engine(EngineSpec(
    name="ttt", config=TTTConfig, engine="engines.ttt.engine:TTTEngine", writes_weights=True,
    rebuilds="the MLP layers",
    bundle_state="engines.ttt.bundle_state:BUNDLE_STATE",
    description="Trains the model itself on each new document, so it can answer without looking it "
                "up (slow on a CPU)."))

__all__ = ["TTTConfig"]
