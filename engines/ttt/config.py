"""Settings of the TTT-E2E engine (the ``[ttt]`` section of config.toml).

The defaults are what the learning bench showed wins (README.md, "Learning into weights", has
the figures): gating with question/answer rehearsal (no paraphrases), only among neurons that
fire in general use at most half as often as the average one, replay of everyday prose by its
own loss, three background questions distilled from the original model beside each mini-batch,
four earlier documents' pairs recalled per pair of the new one, one pass at a learning rate of
4e-3 (two at 2e-3 learned more per document in twice the time; a sleep makes up most of it), and
an alpha floor of 0.6. Sleep makes six passes over the recall pool at 2e-3 with the rows of
every neuron general use leaves quiet open, and is rolled back when it leaves the perplexity of
1,024 tokens of background prose more than 1% above both what it was before and what the original
model had; a rolled-back sleep tries again with only the rows documents changed open. Answers
are routed: a question gets the learned weights as far as it is close to a learned document's
passages (none below a cosine similarity of 0.5, all above 0.7), which kept every general
question the small and default sets had lost.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TTTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    layers: str = Field(
        "", pattern=r"^[0-9,\s-]*$", max_length=200,
        description="Decoder layers whose MLP learns, e.g. '22-29' or '20,25' (empty: the last 25% "
        "of the model's layers).")
    mode: Literal["dual", "full"] = Field(
        "dual", description="dual: frozen MLP + trainable copy mixed by alpha; full: plain "
        "finetune of the same MLPs (no frozen copy, no alpha, no gating; a bench baseline).")
    alpha_decay: float = Field(
        0.8, gt=0.0, lt=1.0, description="alpha (the frozen MLP's share) is multiplied by this "
        "for each learned document, starting from 1.")
    alpha_floor: float = Field(
        0.6, ge=0.0, lt=1.0, description="alpha never decays below this (0: the copy can take over).")
    lr: float = Field(4e-3, gt=0.0, le=1.0, description="Adam learning rate of the trained rows.")
    batch_tokens: int = Field(
        256, ge=16, le=8192, description="Tokens per mini-batch (document, rehearsal and replay).")
    passes: int = Field(
        1, ge=1, le=64, description="Gradient steps per mini-batch (passes over the material; one "
        "learns about twice as fast as two, and after a sleep scores nearly as well).")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient norm clip per step.")
    max_document_tokens: int = Field(
        20_000, ge=64, description="Longer documents are learned up to this many tokens.")
    gate: bool = Field(
        True, description="Sparse memory gating: update only the neurons most specific to the "
        "document (TF-IDF against general text) instead of every neuron.")
    gate_top_k: int = Field(64, ge=1, description="Neurons per layer a document may change.")
    gate_max_background: float = Field(
        0.5, ge=0.0, description="Neurons firing in general use (background prose and questions) "
        "more often than this many times the average neuron (fire_fraction) are never changed: "
        "everyday questions run through them (0: no limit).")
    gate_min_score: float = Field(
        0.0, ge=0.0, description="Neurons scoring at or below this TF-IDF are never changed.")
    fire_fraction: float = Field(
        0.02, gt=0.0, le=1.0, description="A neuron fires on a token when it is among the "
        "token's strongest this share of neurons.")
    calibration_tokens: int = Field(
        8192, ge=256, description="Tokens of general text the background firing rates are "
        "measured on (cached in the store).")
    rehearsal_qa: bool = Field(
        True, description="Also train on question/answer pairs extracted from the document.")
    rehearsal_paraphrase: bool = Field(
        False, description="Also train on restatements of the document's sentences (slower; sleep "
        "makes up the difference).")
    rehearsal_system: str = Field(
        "You are Engram, a helpful assistant. Answer briefly.",
        description="System message the rehearsal questions are asked under (the one chat uses "
        "when learned weights answer and no passage matched).")
    rehearsal_source: Literal["facts", "extract", "model"] = Field(
        "facts", description="facts (the default): every fact of the text (list items, table rows, "
        "key: value lines; pronouns and definite descriptions resolved) asked and restated several "
        "ways, with a passage per named entity (engines/ttt/facts.py); about five times the "
        "training of extract, and the written answers it buys are worth it; extract: each "
        "sentence's last span only (fast: learns little a written answer shows); model: the "
        "facts, plus questions a person would ask and rewrites that the chat model writes for "
        "each section, each answer and name checked against the text "
        "(engines/ttt/written.py; slower: for a larger chat model, Ollama or a GGUF).")
    replay_tokens: int = Field(
        64, ge=0, le=4096, description="Tokens of general background text mixed into each "
        "mini-batch to hold perplexity down (0: no replay).")
    replay_loss: Literal["lm", "distill"] = Field(
        "lm", description="lm: the replayed text's own next-token loss; distill: hold the "
        "model's predictions on it where the original model had them (KL divergence).")
    replay_questions: int = Field(
        3, ge=0, le=16, description="Questions about the background prose, in the chat template, "
        "distilled beside each mini-batch (holds how the model answers questions in general).")
    recall_per_pair: int = Field(
        4, ge=0, le=16, description="Question/answer pairs of earlier learned documents rehearsed "
        "for each pair of the new one, so that learning a document does not overwrite the ones "
        "before it (0: none).")
    recall_pool: int = Field(
        4096, ge=16, le=20_000, description="Earlier pairs kept for recall (a uniform random sample "
        "of all of them once there are more; kept in the learned state).")
    replay_weight: float = Field(
        1.0, gt=0.0, le=100.0, description="Weight of the distillation loss against the material's.")
    sleep_epochs: int = Field(
        6, ge=1, le=100, description="Passes over every recalled pair while consolidating (sleep), "
        "with the rows sleep_open names open.")
    sleep_open: Literal["changed", "quiet"] = Field(
        "quiet", description="Rows a sleep trains (gated): changed: those documents changed; "
        "quiet: every neuron general use leaves quiet (any that gating could choose, changed by a "
        "document or not), and when the forgetting probe rolls that back, those documents changed.")
    sleep_lr: float = Field(2e-3, gt=0.0, le=1.0, description="Adam learning rate while consolidating.")
    sleep_distill_tokens: int = Field(
        128, ge=0, le=4096, description="Tokens of background prose distilled from the original "
        "model beside each sleep step (with replay_questions background questions).")
    sleep_probe_tokens: int = Field(
        1024, ge=0, le=16_384, description="Tokens of background prose whose perplexity is measured "
        "before and after each sleep and on the original model (0: no probe).")
    sleep_probe_bound: float = Field(
        0.01, gt=0.0, le=10.0, description="A sleep that leaves the probe's perplexity more than this "
        "share (0.01: 1%) above both its value before the sleep and the original model's is rolled "
        "back: it keeps nothing.")
    values_only: bool = Field(
        False, description="Train only what the chosen neurons write (down_proj), not when they "
        "fire (gate_proj, up_proj).")
    route: bool = Field(
        True, description="Answer each question with as much of the learned weights as it is close "
        "to a learned document (embeddings of the documents' passages): questions about nothing "
        "learned are answered by the original model.")
    route_low: float = Field(
        0.5, ge=0.0, lt=1.0, description="A question whose best cosine similarity to a learned "
        "document's passage is at most this gets none of the learned weights.")
    route_high: float = Field(
        0.7, gt=0.0, le=1.0, description="... and at least this, all of them (linear in between).")

    @model_validator(mode="after")
    def _route_bounds(self) -> TTTConfig:
        if self.route_low >= self.route_high:
            raise ValueError(f"route_low ({self.route_low}) must be below route_high ({self.route_high})")
        return self
