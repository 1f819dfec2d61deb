"""The language-model side of CLS: where experts go in the neocortex, and what a step measures.

The experts wrap the MLP projections (``targets``) of the last quarter of the decoder layers
(TTT learns there too). Losses run the whole model with ``labels`` (positions set to ``IGNORE``
carry none); the routing context of ``models.lora_experts`` decides which expert each row uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from engines.cls.config import CLSConfig
from engines.ttt.trainer import IGNORE, Piece, chat_piece, collate, pack
from models.dual_mlp import decoder_layers, layer_range
from models.lora_experts import ExpertPool

log = logging.getLogger(__name__)
LEARNING_FROM = 0.75  # experts sit in the last quarter of the decoder layers


def install(model: Any, config: CLSConfig, saved: dict[str, Any] | None = None) -> ExpertPool:
    """Wrap the chosen projections of the learning layers with the expert pool: where ``saved``
    (the engine's index) puts its adapters, if it holds any (see ``saved_layout``), else where
    ``config`` says."""
    total = len(decoder_layers(model))
    layers = set(layer_range(total, LEARNING_FROM, config.layers))
    targets = {t.strip() for t in config.targets.split(",") if t.strip()}
    rank = config.rank
    layout = saved_layout(saved or {})
    if layout is not None and layout != (layers, targets, rank):
        log.warning("the saved cls state was learned on layers %s, %s at rank %d, not as cls.layers, cls.targets "
                    "and cls.rank say: it keeps its own layout until it is cleared", sorted(layout[0]),
                    ",".join(sorted(layout[1])), layout[2])
        layers, targets, rank = layout

    def wanted(name: str, _layer: torch.nn.Linear) -> bool:
        parts = name.split(".")
        return (len(parts) >= 5 and parts[-2] == "mlp" and parts[-1] in targets and parts[-4] == "layers"
                and int(parts[-3]) in layers)

    model.requires_grad_(False)
    return ExpertPool.install(model, wanted, rank)


def saved_layout(index: dict[str, Any]) -> tuple[set[int], set[str], int] | None:
    """The layers, projections and rank a saved index's consolidated adapter was learned with
    (None: it holds none). A pool of another layout could not load it, so a changed setting or
    default never strands what was learned."""
    prefix = "consolidated."
    found = {k[len(prefix):-len(".A")]: v for k, v in index.items() if k.startswith(prefix) and k.endswith(".A")}
    if not found:
        return None
    parts = [name.split(".") for name in found]
    return {int(p[-3]) for p in parts}, {p[-1] for p in parts}, int(next(iter(found.values())).shape[0])


def batches(pieces: Sequence[Piece], config: CLSConfig, pad: int, device: str,
            replay: list[Piece] | None = None) -> list[dict[str, Tensor]]:
    """Pieces packed into mini-batches of about ``batch_tokens``, one background piece in each."""
    room = max(16, config.batch_tokens - (config.replay_tokens if replay else 0))
    out = []
    for n, group in enumerate(pack(sorted(pieces, key=len), room)):
        extra = [replay[n % len(replay)]] if replay else []
        batch = collate([*group, *extra], pad, device)
        batch.pop("counted", None)
        out.append(batch)
    return out


def lm_loss(model: Any, batch: dict[str, Tensor]) -> Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 labels=batch["labels"]).loss


def logits(model: Any, batch: dict[str, Tensor]) -> Tensor:
    """Next-token logits at the positions that predict a label ([B, T-1, V]) and their mask."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out[:, :-1]


def label_mask(batch: dict[str, Tensor]) -> Tensor:
    return batch["labels"][:, 1:] != IGNORE


def exact_answers(model: Any, batches_: Sequence[dict[str, Tensor]]) -> list[bool]:
    """Per row: every answer token is the model's top prediction (teacher-forced)."""
    right: list[bool] = []
    with torch.no_grad():
        for batch in batches_:
            predicted = logits(model, batch).argmax(-1)
            labels, mask = batch["labels"][:, 1:], label_mask(batch)
            ok = ((predicted == labels) | ~mask).all(dim=1) & mask.any(dim=1)
            right += ok.tolist()
    return right


def perplexity(model: Any, batches_: Sequence[dict[str, Tensor]]) -> float:
    with torch.no_grad():
        losses = [float(lm_loss(model, b)) for b in batches_]
    return float(torch.tensor(losses).mean().exp())


def windows(ids: list[int], size: int, tokens: int) -> list[Piece]:
    """The first ``tokens`` of ``ids`` in windows of ``size`` (whole-text loss)."""
    ids = ids[:tokens]
    return [Piece(ids[i:i + size], ids[i:i + size], "replay") for i in range(0, len(ids), size)
            if len(ids[i:i + size]) > 1]


def question_pieces(tokenizer: Any, pairs: Sequence[tuple[str, str]], system: str) -> list[Piece]:
    return [chat_piece(tokenizer, q, a, system, kind="qa") for q, a in pairs]
