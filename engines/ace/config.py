"""Settings of the playbook engine (the ``[ace]`` section of config.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.ace.playbook import NAME_PATTERN


class AceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    playbook: str = Field(
        "default", pattern=NAME_PATTERN, description="The playbook that answers use and learning edits."
    )
    agent_backend: Literal["", "llamacpp", "ollama", "torch"] = Field(
        "", description="Backend of the Reflector and Curator roles ('' = the chat runtime)."
    )
    agent_model: str = Field(
        "", description="Model of the Reflector and Curator: 'embedded', a GGUF path, an Ollama "
        "tag or a Hugging Face folder ('' = the chat model, or 'embedded' for llamacpp)."
    )
    agent_temperature: float = Field(
        0.2, ge=0.0, le=2.0, description="Sampling temperature of the roles (seeded: reproducible)."
    )
    online: bool = Field(True, description="Reflect and curate in the background after each feedback.")
    reflect_rounds: int = Field(
        2, ge=1, le=5, description="Most Reflector rounds (another round only when the lesson "
        "was unusable)."
    )
    max_operations: int = Field(3, ge=1, le=8, description="Most operations in one Curator delta.")
    prompt_bullets: int = Field(6, ge=0, le=50, description="Most bullets put into an answer's prompt.")
    prompt_tokens: int = Field(
        200, ge=0, le=4000, description="Token budget of the bullets put into an answer's prompt."
    )
    min_similarity: float = Field(
        0.15, ge=-1.0, le=1.0, description="Bullets less similar to the question (cosine) stay out."
    )
    max_bullets: int = Field(
        200, ge=1, le=5000, description="Playbook size cap: the least helpful bullets go first."
    )
    dedup_similarity: float = Field(
        0.9, gt=0.0, le=1.0, description="A new bullet this similar to an existing one is a duplicate."
    )
    prune_margin: int = Field(
        3, ge=1, le=1000, description="A bullet tagged harmful this many times more than helpful "
        "is pruned."
    )
    guard_cases: int = Field(
        4, ge=1, le=64, description="Episodes (or training pairs) replayed to check each delta."
    )
    guard_max_tokens: int = Field(
        48, ge=8, le=2048, description="Longest replayed answer, in tokens."
    )
    guard_min_gain: float = Field(
        0.0, ge=0.0, le=1.0, description="Mean replay score a delta must add to be kept "
        "(0: accept if not worse)."
    )

    @model_validator(mode="after")
    def _agent_model_named(self) -> AceConfig:
        if self.agent_backend in ("ollama", "torch") and not self.agent_model:
            raise ValueError(f"ace.agent_backend {self.agent_backend} needs ace.agent_model (an "
                             "Ollama tag or a Hugging Face folder)")
        return self
