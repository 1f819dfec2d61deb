"""The hidden-state knowledge tier (JitRL): chunks kept as the model's last hidden states, turned
into a reward over the vocabulary that modulates the answer's logits."""

from engines.hidden.config import HiddenConfig
from engines.registry import EngineSpec, register_engine

register_engine(EngineSpec(
    name="hidden", config=HiddenConfig, engine="engines.hidden.engine:HiddenStateEngine",
    commands="app.cli.hidden:hidden",
    description="Keeps each chunk as the model's hidden states and, while answering, favours the words "
                "the retrieved passages add (JitRL, experimental: measured no better than rag.logit_bias)."))

__all__ = ["HiddenConfig"]
