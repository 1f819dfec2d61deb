"""From text to weight updates: tokenised pieces, packed mini-batches, firing counts, Adam steps.

A piece is one training sequence with its labels: a window of the document or of background
text (loss on every token), or a rehearsal question and answer in the model's chat template
(loss on the answer only, so the model learns to answer, not to ask). Pieces are packed into
padded mini-batches of about ``batch_tokens`` tokens. Every layer below the first learning one
is frozen, so each batch runs through those layers once (its ``Prefix``); the gate's firing
counts, the distillation teacher and every training step start from there. Those frozen runs
regroup a document's rows across batches: the rehearsal questions' shared opening (system
prompt and chat header) runs once, and rows of similar length run together. Training takes one
Adam step per mini-batch per pass, holding the neocortex's lock only for the step itself, so an
answer can be generated between two steps.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import Cache, DynamicCache

from models.dual_mlp import DualMLP
from models.kv_cache import with_cache
from models.neuron_gate import FiringCounts

IGNORE = -100
UNCOUNTED = frozenset({"replay", "recall"})  # pieces that say nothing about the document's neurons
MIN_SHARED = 8  # tokens rows must share at their start for the frozen layers to run them once
WINDOW_TOKENS = 8192  # real tokens of consecutive batches whose frozen forwards are regrouped together
FORWARD_TOKENS = 1024  # padded tokens per regrouped forward (the lock is held for one)
TEACHER_BUDGET = 2**26  # floats of teacher log-probabilities kept per document (256 MB in fp32)


@dataclass
class Piece:
    ids: list[int]
    labels: list[int]  # IGNORE where the token is context only
    kind: str  # document, qa, paraphrase, replay, recall (an earlier document's pair), background

    def __len__(self) -> int:
        return len(self.ids)


def text_pieces(tokenizer: Any, text: str, window: int, kind: str, limit: int | None = None) -> list[Piece]:
    """``text`` cut into windows of at most ``window`` tokens (the first ``limit`` tokens)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
    return [Piece(ids[i:i + window], ids[i:i + window], kind) for i in range(0, len(ids), window)
            if len(ids[i:i + window]) > 1]


def chat_piece(tokenizer: Any, question: str, answer: str, system: str = "", kind: str = "qa") -> Piece:
    """A question and its answer in the chat template; only the answer's tokens carry loss."""
    asked = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(asked, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(asked + [{"role": "assistant", "content": answer}],
                                         tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[:len(prompt_ids)] != prompt_ids:  # a template that re-tokenises the boundary
        ids = prompt_ids + tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return Piece(ids, [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):], kind)


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
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` [B, T], and ``counted``
    [B, T]: the tokens whose firing counts for the gate (not padding, replay or recall)."""
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    counted = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, piece in enumerate(batch):
        n = len(piece)
        ids[row, :n] = torch.tensor(piece.ids)
        labels[row, :n] = torch.tensor(piece.labels)
        mask[row, :n] = 1
        counted[row, :n] = piece.kind not in UNCOUNTED
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "counted": counted.to(device)}


class _Stop(Exception):
    """Raised by the pre-hook once the first learning layer's input is captured."""


@dataclass
class Prefix:
    """A batch as it enters the first learning layer: everything before it is frozen, so it is
    computed once per document instead of once per step and once more for the gate."""

    hidden: Tensor  # [B, T, H]
    layer_kwargs: dict[str, Any]  # the causal mask, rotary embeddings and positions, as HF built them
    labels: Tensor  # [B, T]
    counted: Tensor  # [B, T] bool: the tokens whose firing the gate counts
    teacher: Tensor | None = None  # [N, V] the original model's log-probabilities where a label is predicted


def _run_to(model: Any, layer: int, **inputs: Any) -> tuple[Tensor, dict[str, Any]]:
    """What decoder layer ``layer`` receives for ``inputs``: its hidden states, and the mask and
    rotary arguments transformers prepared (not a cache: none is kept). A pre-hook catches them
    and stops the forward there, so the layers above are not run at all."""
    captured: dict[str, Any] = {}

    def catch(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = kwargs
        raise _Stop

    handle = model.get_decoder().layers[layer].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            model.get_decoder()(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    kwargs = {k: v for k, v in captured["kwargs"].items() if k != "hidden_states" and not isinstance(v, Cache)}
    return captured["hidden"].detach(), kwargs


def opening(rows: Sequence[Sequence[int]]) -> list[int]:
    """The tokens that the rows opening with the most common first ``MIN_SHARED`` tokens all
    share at their start (each keeping at least one of its own); none when fewer than two rows
    share ``MIN_SHARED``. Rehearsal questions all open with the same system prompt and chat
    template, about half their tokens."""
    groups: dict[tuple[int, ...], list[Sequence[int]]] = {}
    for ids in rows:
        if len(ids) > MIN_SHARED:
            groups.setdefault(tuple(ids[:MIN_SHARED]), []).append(ids)
    group = max(groups.values(), key=len, default=[])
    if len(group) < 2:
        return []
    length = min(len(ids) for ids in group) - 1
    for ids in group:
        length = next((i for i in range(length) if ids[i] != group[0][i]), length)
    return list(group[0][:length])


def _plain_attention(model: Any, first: int) -> bool:
    """Whether layers 0 to ``first`` all use full attention, so that layer ``first`` gets the
    mask layer 0 gets and a plain key/value cache serves them (not so with sliding-window or
    linear-attention layers, which then run per batch)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None)
    return not types or set(types[:first + 1]) == {"full_attention"}


def frozen_prefix(model: Any, batch: dict[str, Tensor], first: int) -> Prefix:
    """Run the frozen layers below ``first`` over one batch and keep what layer ``first``
    receives (the caller holds the model's lock)."""
    return _batch_prefix(batch, *_run_to(model, first, input_ids=batch["input_ids"],
                                         attention_mask=batch["attention_mask"], use_cache=False))


def _batch_prefix(batch: dict[str, Tensor], hidden: Tensor, kwargs: dict[str, Any]) -> Prefix:
    """``batch``'s prefix from what its first learning layer receives."""
    return Prefix(hidden=hidden, layer_kwargs=kwargs, labels=batch["labels"],
                  counted=batch.get("counted", batch["attention_mask"].bool()))


def frozen_prefixes(model: Any, lock: threading.Lock, batches: Sequence[dict[str, Tensor]], first: int,
                    progress: Callable[[float], None] | None = None) -> Iterator[Prefix]:
    """``frozen_prefix`` of each batch, computed a window of batches at a time.

    In the frozen layers a row's states depend on that row alone, so a window's rows are
    regrouped: rows sharing an opening (the rehearsal questions' system prompt and template)
    run it once and go on from its cached keys and values, and rows of similar length run
    together, with far less padding than the training batches need. The lock is held per
    forward only (answers may come between); a long background is never held whole.
    """
    total = max(1, sum(int(batch["attention_mask"].sum()) for batch in batches))
    done = 0

    def ran(tokens: int) -> None:
        nonlocal done
        done += tokens
        if progress:
            progress(min(1.0, done / total))

    if first == 0 or not _plain_attention(model, first):
        for batch in batches:
            with lock:
                prefix = frozen_prefix(model, batch, first)
            ran(int(batch["attention_mask"].sum()))
            yield prefix
        return
    for window in _windows(batches, WINDOW_TOKENS):
        yield from _regrouped(model, lock, window, first, ran)


def _windows(batches: Sequence[dict[str, Tensor]], tokens: int) -> Iterator[list[dict[str, Tensor]]]:
    """Consecutive batches holding about ``tokens`` real tokens together."""
    window: list[dict[str, Tensor]] = []
    held = 0
    for batch in batches:
        window.append(batch)
        held += int(batch["attention_mask"].sum())
        if held >= tokens:
            yield window
            window, held = [], 0
    if window:
        yield window


@dataclass
class _Row:
    """One row of one batch, by its real tokens (``pack`` groups rows as it groups pieces)."""

    batch: int
    row: int
    ids: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def _regrouped(model: Any, lock: threading.Lock, batches: Sequence[dict[str, Tensor]], first: int,
               ran: Callable[[int], None]) -> list[Prefix]:
    """The prefixes of ``batches``, their rows' forwards regrouped (see ``frozen_prefixes``);
    ``ran(tokens)`` after each forward. Rows are right-padded (``collate``): a row's tokens are
    its first ``attention_mask.sum()``."""
    rows = [_Row(b, r, batch["input_ids"][r, :n].tolist())
            for b, batch in enumerate(batches) for r, n in enumerate(batch["attention_mask"].sum(1).tolist())]
    shared = opening([row.ids for row in rows])
    opened: list[_Row] = []
    whole: list[_Row] = []
    for row in rows:
        (opened if shared and row.ids[:len(shared)] == shared and len(row) > len(shared) else whole).append(row)
    device = batches[0]["input_ids"].device
    states: dict[tuple[int, int], Tensor] = {}
    if opened:
        cache = DynamicCache()
        with lock:
            head, _ = _run_to(model, first, input_ids=torch.tensor([shared], device=device), use_cache=True,
                              **with_cache(model.get_decoder().forward, cache))
        for chunk in pack(sorted(opened, key=len), FORWARD_TOKENS):
            with lock:
                tails = _run_rows(model, first, [row.ids[len(shared):] for row in chunk], device,
                                  copy.deepcopy(cache))
            states.update({(row.batch, row.row): torch.cat([head[0], tail]) for row, tail in zip(chunk, tails)})
            ran(sum(len(row) for row in chunk))
    for chunk in pack(sorted(whole, key=len), FORWARD_TOKENS):
        with lock:
            states.update({(row.batch, row.row): state
                           for row, state in zip(chunk, _run_rows(model, first, [row.ids for row in chunk], device))})
        ran(sum(len(row) for row in chunk))
    return [_assembled(model, lock, b, batch, states) for b, batch in enumerate(batches)]


def _run_rows(model: Any, first: int, rows: list[list[int]], device: Any, cache: Cache | None = None) -> list[Tensor]:
    """What layer ``first`` receives for each row ([len, H] each), after ``cache``'s opening
    when given; the rows right-padded into one forward."""
    width = max(len(ids) for ids in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    if cache is None:
        hidden, _ = _run_to(model, first, input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    else:
        cache.batch_repeat_interleave(len(rows))
        opened = torch.ones((len(rows), cache.get_seq_length()), dtype=torch.long)
        hidden, _ = _run_to(model, first, input_ids=ids.to(device), attention_mask=torch.cat([opened, mask], 1).to(device),
                            use_cache=True, **with_cache(model.get_decoder().forward, cache))
    return [hidden[i, :len(row)] for i, row in enumerate(rows)]


def _assembled(model: Any, lock: threading.Lock, b: int, batch: dict[str, Tensor],
               states: dict[tuple[int, int], Tensor]) -> Prefix:
    """Batch ``b``'s prefix from its rows' states (zeros at the padding, which nothing reads)."""
    with lock:  # the batch's own mask and rotary tables; the pre-hook stops before any layer runs
        _, kwargs = _run_to(model, 0, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            use_cache=False)
    rows = [states[b, r] for r in range(batch["input_ids"].shape[0])]
    hidden = rows[0].new_zeros((*batch["input_ids"].shape, rows[0].shape[-1]))
    for r, state in enumerate(rows):
        hidden[r, :state.shape[0]] = state
    return _batch_prefix(batch, hidden, kwargs)


@contextmanager
def _observing(duals: list[DualMLP], counts: FiringCounts, fraction: float, mask: Tensor) -> Iterator[None]:
    """Inside, every forward of ``duals`` adds its firing to ``counts`` (tokens where ``mask``)."""
    for j, dual in enumerate(duals):
        dual.observer = lambda h, j=j: counts.add(j, h, fraction, mask)
    try:
        yield
    finally:
        for dual in duals:
            dual.observer = None


def firing_counts(model: Any, lock: threading.Lock, duals: list[DualMLP], prefixes: Iterable[Prefix],
                  layers: tuple[int, int], fraction: float, progress: Callable[[float], None] | None = None,
                  inside: Callable[[], AbstractContextManager[Any]] = nullcontext,
                  total: int | None = None) -> FiringCounts:
    """How often each neuron of ``duals`` (in decoder layers ``layers[0]`` to ``layers[1]``, the
    prefixes entering at the first) fires over the counted tokens of ``prefixes`` (``total`` of
    them, for progress, when they come from a generator).

    The observers, and ``inside`` (e.g. the original model), are in place only while the lock
    is held: an answer generated between two batches neither counts nor sees them.
    """
    counts = FiringCounts(len(duals), duals[0].neurons)
    blocks = model.get_decoder().layers[layers[0]:layers[1] + 1]
    total = total if total is not None else len(prefixes)  # type: ignore[arg-type]
    for n, prefix in enumerate(prefixes):
        rows = prefix.counted.any(1)  # recalled pairs and replay say nothing here: not run at all
        if rows.any():
            kwargs = _select_rows(prefix.layer_kwargs, rows)
            with lock, inside(), _observing(duals, counts, fraction, prefix.counted[rows]), torch.no_grad():
                hidden = prefix.hidden[rows]
                for block in blocks:  # the MLPs see every token; no logits are needed
                    hidden = block(hidden, **kwargs)
        if progress:
            progress((n + 1) / max(1, total))
    return counts


def _select_rows(kwargs: dict[str, Any], rows: Tensor) -> dict[str, Any]:
    """A layer's arguments for the batch's ``rows`` only: per-row tensors (the mask, and the
    rotary embeddings where they are per row) are cut down, shared ones kept."""
    def cut(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() > 1 and value.shape[0] == rows.shape[0] > 1:
            return value[rows]
        if isinstance(value, tuple):
            return tuple(cut(v) for v in value)
        return value
    return {k: cut(v) for k, v in kwargs.items()}


def _top_hidden(model: Any, prefix: Prefix, first: int) -> Tensor:
    """The final normed hidden states, running only layers ``first`` and up."""
    decoder = model.get_decoder()
    hidden = prefix.hidden
    for layer in decoder.layers[first:]:
        hidden = layer(hidden, **prefix.layer_kwargs)
    return decoder.norm(hidden)


def _labelled_logits(model: Any, prefix: Prefix, first: int) -> tuple[Tensor, Tensor]:
    """Logits [N, V] at the positions that predict a labelled token, and those labels [N]."""
    labels = prefix.labels[:, 1:]
    wanted = labels != IGNORE
    hidden = _top_hidden(model, prefix, first)[:, :-1][wanted]
    return model.get_output_embeddings()(hidden).float(), labels[wanted]


def labelled_loss(model: Any, prefix: Prefix, first: int) -> Tensor:
    """Mean next-token loss over the labelled tokens, from layer ``first`` up.

    The same value as the model's own loss on the batch's ids, mask and labels, without re-running the frozen layers below the
    learning ones, and computing logits only where there are labels (not over question tokens
    and padding: the vocabulary-sized output layer is a fifth of a small model's compute).
    """
    logits, labels = _labelled_logits(model, prefix, first)
    return torch.nn.functional.cross_entropy(logits, labels)


def _teacher(model: Any, prefix: Prefix, first: int, original: Callable[[], AbstractContextManager[Any]]) -> Tensor:
    with torch.no_grad(), original():
        logits, _ = _labelled_logits(model, prefix, first)
    return logits.log_softmax(-1)


def teach(model: Any, prefix: Prefix, first: int, original: Callable[[], AbstractContextManager[Any]]) -> Prefix:
    """Keep the original model's log-probabilities on ``prefix`` (they never change: computed
    once, not at every step that replays the batch)."""
    prefix.teacher = _teacher(model, prefix, first, original)
    return prefix


def distill_loss(model: Any, prefix: Prefix, first: int,
                 original: Callable[[], AbstractContextManager[Any]]) -> Tensor:
    """KL(original || current) of the next-token distributions over ``prefix``'s tokens.

    Replaying background text with its own next-token loss teaches the model that text; this
    instead holds the model's predictions on it where the untouched model had them, which is
    exactly what perplexity drift measures.
    """
    teacher = prefix.teacher if prefix.teacher is not None else _teacher(model, prefix, first, original)
    student, _ = _labelled_logits(model, prefix, first)
    return torch.nn.functional.kl_div(student.log_softmax(-1), teacher, log_target=True, reduction="batchmean")


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
          prefixes: Sequence[Prefix], passes: int, lr: float, max_grad_norm: float,
          report: Callable[[int, int, float], None], first: int = 0,
          replay: Sequence[Prefix] = (),
          original: Callable[[], AbstractContextManager[Any]] | None = None,
          replay_weight: float = 1.0) -> TrainReport:
    """``passes`` Adam steps per mini-batch, in order; ``report(step, steps, loss)`` after each.

    ``first`` is the lowest layer holding trained parameters (``prefixes`` enter there). With
    ``replay`` prefixes and ``original`` (a context in which the model answers as it did before
    any learning), each step adds ``replay_weight`` times the distillation loss of the next
    replay batch, cycling through them. The reported loss is the material's own.
    """
    if replay and original is None:
        raise ValueError("distillation replay needs the original model's context")
    budget, vocabulary = TEACHER_BUDGET, model.get_output_embeddings().weight.shape[0]
    for prefix in replay:  # teachers kept while they fit the budget; the rest recomputed per step
        size = int((prefix.labels[:, 1:] != IGNORE).sum()) * vocabulary
        if prefix.teacher is None and size <= budget:
            with lock:
                teach(model, prefix, first, original)  # type: ignore[arg-type]
            budget -= size
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = passes * len(prefixes)
    losses: list[float] = []
    step = 0
    for _ in range(passes):
        pass_losses = []
        for n, prefix in enumerate(prefixes):
            with lock:
                loss, _ = adam_step(model, params, optimizer, prefix, first, max_grad_norm,
                                    replay[n % len(replay)] if replay else None, original, replay_weight)
            step += 1
            pass_losses.append(loss)
            report(step, steps, loss)
        losses.append(sum(pass_losses) / len(pass_losses))
    return TrainReport(step, losses)


def adam_step(model: Any, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
              prefix: Prefix, first: int, max_grad_norm: float, distilled: Prefix | None = None,
              original: Callable[[], AbstractContextManager[Any]] | None = None,
              weight: float = 1.0) -> tuple[float, float]:
    """One step on ``prefix``'s own loss plus ``weight`` x the distillation loss on
    ``distilled``; the caller holds the model's lock. Returns both losses (0.0: no distillation)."""
    if distilled is not None and original is None:
        raise ValueError("distillation needs the original model's context")
    with torch.enable_grad():
        loss = labelled_loss(model, prefix, first)
        kl = distill_loss(model, distilled, first, original) if distilled is not None else None  # type: ignore[arg-type]
        (loss if kl is None else loss + weight * kl).backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), 0.0 if kl is None else float(kl.detach())
