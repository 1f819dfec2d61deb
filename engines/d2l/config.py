"""Settings of the Doc-to-LoRA engine (the ``[d2l]`` section of config.toml).

The hypernetwork's shape (rank, latents, blocks) is fixed when it is first trained: a saved
hypernetwork of another shape is refused rather than silently retrained. The route bounds are
TTT's: a question whose best cosine similarity to a learned document's passages is below
``route_low`` gets none of that document's adapter, above ``route_high`` all of it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class D2LConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    targets: list[str] = Field(
        default_factory=lambda: ["down_proj"], min_length=1,
        description="The MLP modules of each decoder layer that get an adapter (down_proj, up_proj "
        "or gate_proj).")
    layers: str = Field(
        "", pattern=r"^[0-9,\s-]*$", max_length=200,
        description="Decoder layers that get an adapter, e.g. '20-29' (empty: every layer).")
    rank: int = Field(4, ge=1, le=64, description="LoRA rank the hypernetwork writes per document.")
    latent_dim: int = Field(128, ge=16, le=1024, description="Width of the hypernetwork's latents.")
    heads: int = Field(4, ge=1, le=16, description="Attention heads of the hypernetwork.")
    blocks: int = Field(2, ge=0, le=8, description="Latent self-attention blocks.")
    scale: float = Field(1.0, gt=0.0, description="LoRA scale (alpha / r) the adapters apply with.")
    budget: int = Field(
        16, ge=1, le=1024, description="Most ranks an answer applies at once: the adapters of the "
        "documents a question is routed to are concatenated, closest first, up to this.")
    chunk_tokens: int = Field(
        512, ge=32, le=8192, description="The document is read by the frozen model in chunks of "
        "this many tokens (so documents longer than the context window still fit).")
    max_document_tokens: int = Field(8192, ge=32, description="Longer documents are read up to this.")
    route_low: float = Field(0.5, ge=0.0, lt=1.0, description="At or below this similarity a "
                             "question gets none of a document's adapter.")
    route_high: float = Field(0.7, gt=0.0, le=1.0, description="... at or above this, all of it.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Meta-training learning rate (AdamW).")
    questions_per_step: int = Field(2, ge=1, le=64, description="Questions about the document per "
                                    "meta-training step.")
    teacher_top_k: int = Field(32, ge=2, le=1024, description="The teacher's most likely tokens the "
                               "distillation matches at each answer token.")
    max_grad_norm: float = Field(1.0, gt=0.0)
    sleep_seconds: float = Field(
        300.0, ge=0.0, description="Most seconds a sleep spends meta-training the hypernetwork "
        "on the stored documents (0: never during sleep).")
    seed: int = Field(0, description="Order of the meta-training documents.")
    answer_runtime: Literal["llamacpp", "torch"] = Field(
        "llamacpp", description="What answers a question routed to learned documents: llamacpp "
        "applies their adapters' GGUF copies in the chat runtime (when that is llama.cpp on the same "
        "model; otherwise the torch model answers), torch runs them through the torch model.")

    @model_validator(mode="after")
    def _check(self) -> D2LConfig:
        if self.route_low >= self.route_high:
            raise ValueError(f"route_low ({self.route_low}) must be below route_high ({self.route_high})")
        if self.latent_dim % self.heads:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by heads ({self.heads})")
        unknown = set(self.targets) - {"down_proj", "up_proj", "gate_proj"}
        if unknown:
            raise ValueError(f"unknown target modules {sorted(unknown)}: use down_proj, up_proj, gate_proj")
        return self
