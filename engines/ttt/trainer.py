"""From text to weight updates: tokenised pieces, packed mini-batches, firing counts, Adam steps.

A piece is one training sequence with its labels: a window of the document or of background
text (loss on every token), or a rehearsal question and answer in the model's chat template
(loss on the answer only, so the model learns to answer, not to ask). Pieces are packed into
padded mini-batches of about ``batch_tokens`` tokens. Training takes one Adam step per
mini-batch per pass, holding the neocortex's lock only for the step itself, so an answer can
be generated between two steps.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from models.dual_mlp import DualMLP
from models.neuron_gate import FiringCounts

IGNORE = -100


@dataclass
class Piece:
    ids: list[int]
    labels: list[int]  # IGNORE where the token is context only
    kind: str  # document, qa, paraphrase, replay

    def __len__(self) -> int:
        return len(self.ids)


def text_pieces(tokenizer: Any, text: str, window: int, kind: str, limit: int | None = None) -> list[Piece]:
    """``text`` cut into windows of at most ``window`` tokens (the first ``limit`` tokens)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
    return [Piece(ids[i:i + window], ids[i:i + window], kind) for i in range(0, len(ids), window)
            if len(ids[i:i + window]) > 1]


def chat_piece(tokenizer: Any, question: str, answer: str, system: str = "") -> Piece:
    """A question and its answer in the chat template; only the answer's tokens carry loss."""
    asked = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(asked, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(asked + [{"role": "assistant", "content": answer}],
                                         tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[:len(prompt_ids)] != prompt_ids:  # a template that re-tokenises the boundary
        ids = prompt_ids + tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return Piece(ids, [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):], "qa")


def pack(pieces: Sequence[Piece], batch_tokens: int) -> list[list[Piece]]:
    """Consecutive pieces grouped so that each padded batch holds about ``batch_tokens``."""
    batches: list[list[Piece]] = []
    current: list[Piece] = []
    for piece in pieces:
        longest = max([len(p) for p in current] + [len(piece)])
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(piece)
    if current:
        batches.append(current)
    return batches


def collate(batch: Sequence[Piece], pad_id: int, device: str) -> dict[str, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` [B, T]."""
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, piece in enumerate(batch):
        n = len(piece)
        ids[row, :n] = torch.tensor(piece.ids)
        labels[row, :n] = torch.tensor(piece.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def firing_counts(model: Any, lock: threading.Lock, duals: list[DualMLP],
                  batches: Sequence[dict[str, Tensor]], fraction: float,
                  progress: Callable[[float], None] | None = None) -> FiringCounts:
    """How often each neuron of ``duals`` fires over the (non-padding) tokens of ``batches``."""
    counts = FiringCounts(len(duals), duals[0].neurons)
    current: dict[str, Tensor] = {}
    for j, dual in enumerate(duals):
        dual.observer = lambda h, j=j: counts.add(j, h, fraction, current["mask"])
    try:
        for n, batch in enumerate(batches):
            current["mask"] = batch["attention_mask"].bool()
            with lock, torch.no_grad():  # the MLPs see every token; no logits are needed
                model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            if progress:
                progress((n + 1) / len(batches))
    finally:
        for dual in duals:
            dual.observer = None
    return counts


def labelled_loss(model: Any, batch: dict[str, Tensor]) -> Tensor:
    """Mean next-token loss over the labelled tokens, computing logits only there.

    The same value as ``model(**batch).loss``, without running the vocabulary-sized output
    layer over question tokens and padding (a fifth of a small model's compute per token).
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    wanted = labels != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][wanted])  # [N, V]
    return torch.nn.functional.cross_entropy(logits.float(), labels[wanted])


@dataclass
class TrainReport:
    steps: int
    losses: list[float]

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        """Mean loss of the last pass (the first pass's batches in the same order)."""
        return self.losses[-1] if self.losses else math.nan


def train(model: Any, lock: threading.Lock, params: list[torch.nn.Parameter],
          batches: Sequence[dict[str, Tensor]], passes: int, lr: float, max_grad_norm: float,
          report: Callable[[int, int, float], None]) -> TrainReport:
    """``passes`` Adam steps per mini-batch, in order; ``report(step, steps, loss)`` after each."""
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = passes * len(batches)
    losses: list[float] = []
    step = 0
    for _ in range(passes):
        pass_losses = []
        for batch in batches:
            with lock, torch.enable_grad():
                loss = labelled_loss(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            pass_losses.append(float(loss.detach()))
            report(step, steps, pass_losses[-1])
        losses.append(sum(pass_losses) / len(pass_losses))
    return TrainReport(step, losses)
