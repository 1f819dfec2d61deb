"""Settings of the retrieval engine (the ``[rag]`` section of config.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RetrievalMode = Literal["hybrid", "dense", "bm25"]


class RagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    k: int = Field(4, ge=1, le=50, description="Most passages put into an answer's context.")
    min_similarity: float = Field(
        0.25, ge=-1.0, le=1.0,
        description="Passages less similar to the question than this (cosine) are left out, "
        "unless they hold an identifier, code or quoted phrase of the question exactly.",
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
    mode: RetrievalMode = Field(
        "hybrid", description="How chat, the engines and `engram search` rank chunks: hybrid (BM25 "
        "and embeddings fused, exact identifiers and quoted phrases first), dense (embeddings "
        "only) or bm25 (keywords only).",
    )
    rrf_k: int = Field(
        60, ge=1, le=10_000, description="Reciprocal rank fusion constant k in weight / (k + rank): "
        "larger flattens the difference between ranks.",
    )
    dense_weight: float = Field(
        1.0, ge=0.0, le=10.0, description="Weight of the embedding ranking in hybrid fusion.",
    )
    bm25_weight: float = Field(
        1.0, ge=0.0, le=10.0, description="Weight of the BM25 keyword ranking in hybrid fusion.",
    )
    keyword_bm25_weight: float = Field(
        100.0, ge=0.0, le=1000.0, description="Weight of the BM25 ranking, in place of bm25_weight, for "
        "a query typed as a few keywords (no function word such as 'the', 'how' or 'of', no question "
        "mark): the chunks that hold those words matter most.",
    )
    candidates: int = Field(
        50, ge=1, le=1000, description="Chunks each ranking (BM25, embeddings) hands to fusion.",
    )
    sentence_rerank: int = Field(
        15, ge=0, le=200, description="Hybrid search re-ranks this many of its best chunks by their "
        "most similar pair of consecutive sentences, fused with their hybrid rank (0: off). The pairs "
        "are embedded once, after ingestion (by `engram ingest`, or the app's worker in idle time), and "
        "kept beside their chunks; until then a search keeps its fused order.",
    )

    @property
    def window_rerank(self) -> bool:
        """Whether searches re-rank by sentence windows (only hybrid search does), so the windows
        are worth embedding."""
        return self.mode == "hybrid" and self.sentence_rerank > 0
