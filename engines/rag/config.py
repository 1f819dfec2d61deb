"""Settings of the retrieval engine (the ``[rag]`` section of config.toml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    k: int = Field(4, ge=1, le=50, description="Most passages put into an answer's context.")
    min_similarity: float = Field(
        0.25, ge=-1.0, le=1.0,
        description="Passages less similar to the question than this (cosine) are left out.",
    )
    context_share: float = Field(
        0.75, gt=0.0, le=1.0,
        description="Share of the prompt's free tokens that passages may fill (the rest: history).",
    )
    logit_bias: bool = Field(
        False, description="Favour the tokens of retrieved passages while answering (JitRL MVP)."
    )
    logit_bias_strength: float = Field(
        1.0, ge=0.0, le=20.0, description="Logit added to each token of the retrieved passages."
    )
