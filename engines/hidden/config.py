"""Settings of the hidden-state tier (the ``[hidden]`` section of config.toml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HiddenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strength: float = Field(
        1.5, ge=0.0, le=20.0, description="Logit added to the best-rewarded token (the others in "
        "proportion to their reward); 0 turns the modulation off without unloading anything. "
        "Measured (engram bench chat --hidden): 4.0 made answers loop and lose exact matches.")
    k: int = Field(4, ge=1, le=20, description="Passages whose states are read for an answer.")
    min_similarity: float = Field(
        0.25, ge=-1.0, le=1.0, description="Passages less similar to the question (cosine) are left out.")
    states: int = Field(
        64, ge=0, le=4096, description="Stored states closest to the question's own last state that "
        "earn rewards (0: every state of the passages).")
    temperature: float = Field(
        0.1, gt=0.0, le=10.0, description="Softmax temperature over the kept states' similarities.")
    tokens: int = Field(32, ge=1, le=400, description="Most vocabulary tokens rewarded per answer.")
    max_chunk_tokens: int = Field(
        512, ge=8, le=4096, description="Tokens of a chunk kept as states (the rest is cut).")
