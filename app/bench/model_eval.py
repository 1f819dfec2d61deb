"""Measuring a torch language model: option likelihoods, perplexity, greedy answers.

These are the learning bench's instruments. Each one takes the model's lock for one batch at a
time and works in inference mode, so they measure whatever weights are active (the original
model, or one with learned weights installed). Where an engine routes its learned weights by
what a question is about (``engines.base.routed``), each row is routed as chat would route it:
by its question (``queries``), or for perplexity by the scored text itself.

- ``option_logprobs``: the log-likelihood of each answer option after a prompt (multiple choice
  by likelihood: a 135M model ranks answers far better than it writes them);
- ``perplexity``: exp of the mean next-token loss over a text, in windows;
- ``greedy_answers``: what the model actually writes, for exact-match and contains scoring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from engines.base import Neocortex, routed
from engines.generation import ChatMessage, GenerationRequest
from models.kv_cache import returned_cache, with_cache

Tick = Callable[[float], None]


def render(cortex: Neocortex, messages: Sequence[ChatMessage]) -> str:
    """The chat prompt text, ending where the assistant's answer begins."""
    return cortex.tokenizer.apply_chat_template([m.model_dump() for m in messages],
                                                add_generation_prompt=True, tokenize=False)


def _ids(cortex: Neocortex, text: str) -> list[int]:
    return cortex.tokenizer(text, add_special_tokens=False)["input_ids"]


def _continuation(cortex: Neocortex, prompt: str, prompt_ids: list[int], option: str) -> list[int]:
    """The tokens of ``option`` as they follow ``prompt`` (merged at the boundary if needed)."""
    full = _ids(cortex, prompt + option)
    if full[:len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        return full[len(prompt_ids):]
    return _ids(cortex, option)


def _left_padded(rows: list[list[int]], pad: int, device: str) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "position_ids": positions.to(device)}


def option_logprobs(cortex: Neocortex, prompts: Sequence[str], options: Sequence[Sequence[str]],
                    batch_size: int = 16, tick: Tick | None = None,
                    queries: Sequence[str] | None = None) -> list[list[float]]:
    """Sum of log-probabilities of each option's tokens after its prompt: [prompt][option].

    Each prompt runs once; its cached keys and values are repeated for its options, which then
    cost only their own few tokens. ``queries``: the question each prompt asks (for routing).
    """
    pad = cortex.tokenizer.pad_token_id or 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores = [[0.0] * len(opts) for opts in options]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        asked = [queries[i] for i in chunk] if queries is not None else None
        for p, row in zip(chunk, _score_chunk(cortex, [prompts[i] for i in chunk],
                                               [options[i] for i in chunk], pad, asked)):
            scores[p] = row
        if tick:
            tick(min(1.0, (start + batch_size) / len(order)))
    return scores


def _score_chunk(cortex: Neocortex, prompts: list[str], options: list[Sequence[str]],
                 pad: int, queries: list[str] | None) -> list[list[float]]:
    n = max(len(o) for o in options)
    prompt_ids = [_ids(cortex, p) for p in prompts]
    tails = [[_continuation(cortex, p, ids, o) for o in opts] + [[pad]] * (n - len(opts))
             for p, ids, opts in zip(prompts, prompt_ids, options)]
    batch = _left_padded(prompt_ids, pad, cortex.device)
    width = max(len(t) for row in tails for t in row)
    flat = [t for row in tails for t in row]  # [B * n] option token lists
    opt_ids = torch.full((len(flat), width), pad, dtype=torch.long)
    opt_mask = torch.zeros((len(flat), width), dtype=torch.long)
    for i, tail in enumerate(flat):
        opt_ids[i, :len(tail)] = torch.tensor(tail)
        opt_mask[i, :len(tail)] = 1
    opt_ids, opt_mask = opt_ids.to(cortex.device), opt_mask.to(cortex.device)
    last_position = batch["position_ids"][:, -1:]  # [B, 1]
    with cortex.lock, torch.inference_mode(), routed(cortex, queries):
        out = cortex.model(**batch, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)  # [B, V]: each option's first token
        cache = returned_cache(out)
        cache.batch_repeat_interleave(n)
        mask = torch.cat([batch["attention_mask"].repeat_interleave(n, 0), opt_mask], 1)
        positions = last_position.repeat_interleave(n, 0) + 1 + torch.arange(width, device=opt_ids.device)
        rest = cortex.model(input_ids=opt_ids, attention_mask=mask, position_ids=positions,
                            use_cache=True, **with_cache(cortex.model.forward, cache)).logits.float()  # [B*n, W, V]
    rest = torch.log_softmax(rest[:, :-1], -1).gather(-1, opt_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    out_scores = []
    for b, opts in enumerate(options):
        row = []
        for o in range(len(opts)):
            i = b * n + o
            k = len(flat[i])
            row.append(float(first[b, flat[i][0]]) + float(rest[i, :k - 1].sum()))
        out_scores.append(row)
    return out_scores


def rank_accuracy(scores: Sequence[Sequence[float]], answers: Sequence[int]) -> list[bool]:
    """Whether the right option scored highest (ties count as wrong)."""
    out = []
    for row, answer in zip(scores, answers):
        best = max(row)
        out.append(row[answer] == best and row.count(best) == 1)
    return out


def perplexity(cortex: Neocortex, text: str, window: int = 512, batch_size: int = 4,
               route: bool = True) -> tuple[float, int]:
    """(perplexity, tokens scored) of ``text`` in non-overlapping windows (each routed by its own
    text, unless not ``route``)."""
    ids = _ids(cortex, text)
    windows = [ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) > 1]
    pad = cortex.tokenizer.pad_token_id or 0
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        rows = windows[start:start + batch_size]
        width = max(len(r) for r in rows)
        ids_t = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids_t)
        for i, r in enumerate(rows):
            ids_t[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        queries = [cortex.tokenizer.decode(r) for r in rows] if route else None
        with cortex.lock, torch.inference_mode(), routed(cortex, queries):
            logits = cortex.model(input_ids=ids_t.to(cortex.device),
                                  attention_mask=mask.to(cortex.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        target = ids_t[:, 1:].to(logp.device)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        valid = mask[:, 1:].bool().to(nll.device)
        total += float(nll[valid].sum())
        count += int(valid.sum())
    return math.exp(total / max(1, count)), count


def _penalized_ids(cortex: Neocortex) -> torch.Tensor:
    """The tokens the repetition penalty applies to: the runtime's cached mask (a ``TorchRuntime``
    decodes its vocabulary once), else computed here."""
    from app.runtimes.torch_runtime import penalized_mask

    cached = getattr(cortex, "penalized_ids", None)
    if callable(cached):
        return cached()
    return penalized_mask(cortex.tokenizer, int(cortex.model.config.vocab_size), cortex.device)


def greedy_answers(cortex: Neocortex, prompts: Sequence[str], max_new_tokens: int = 16,
                   batch_size: int = 16, tick: Tick | None = None,
                   queries: Sequence[str] | None = None,
                   decoding: GenerationRequest | None = None) -> list[str]:
    """Greedy completions of each prompt (left-padded batches; special tokens dropped);
    ``queries``: the question each prompt asks (for routing); ``decoding``: a request whose
    repetition penalty applies as the runtimes apply it (its messages are ignored)."""
    from transformers import LogitsProcessorList

    from app.runtimes.torch_runtime import decoding_processors

    pad = cortex.tokenizer.pad_token_id or 0
    spared = None if decoding is None else _penalized_ids(cortex)
    eos = cortex.tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    encoded = [_ids(cortex, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = _left_padded([encoded[i] for i in chunk], pad, cortex.device)
        batch.pop("position_ids")  # generate derives them from the mask
        asked = [queries[i] for i in chunk] if queries is not None else None
        width = batch["input_ids"].shape[1]
        processors = [] if decoding is None else decoding_processors(decoding, width, spared)
        with cortex.lock, torch.inference_mode(), routed(cortex, asked):
            generated = cortex.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                              pad_token_id=pad, eos_token_id=eos,
                                              logits_processor=LogitsProcessorList(processors))
        for row, i in enumerate(chunk):
            out[i] = cortex.tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
        if tick:
            tick(min(1.0, (start + batch_size) / len(order)))
    return out


