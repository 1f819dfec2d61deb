"""The hidden-state tier's maths (after JitRL): stored states -> a reward over the vocabulary -> logits.

A document chunk is kept as the model's last hidden states ``h_t`` (after the final norm, what the
LM head reads) with its token ids. Read as a trajectory, the state ``h_t`` took the action
``a_t = x_{t+1}``: the passage's next token. At answer time:

1. ``select``: the stored states closest (cosine) to the question's own last state are kept, each
   weighted by a softmax over those similarities (``temperature``);
2. ``reward_vector``: each kept state's action earns its weight times its surprisal through the
   LM head, ``-log softmax(W h_t)[a_t]``: what the passage says that the model would not have said
   by itself (a made-up name scores high, "the" and "was" near zero). Rewards of one token add up;
   the vector is scaled to a maximum of 1;
3. ``top_rewards`` keeps the ``tokens`` best-rewarded tokens, times ``strength``: the additive
   logit modulation every generation step gets (``modulate``; the runtimes apply it as a logit
   bias, llama.cpp through its logits processor).

Pure functions over tensors: no modules, no I/O.
"""

from __future__ import annotations

import torch
from torch import Tensor


def select(states: Tensor, query: Tensor, top: int, temperature: float) -> tuple[Tensor, Tensor]:
    """(indices [k], weights [k] summing to 1) of the ``top`` states [N, H] closest to ``query``
    [H] by cosine (``top`` <= 0: all of them)."""
    sims = torch.nn.functional.cosine_similarity(states.float(), query.float()[None, :], dim=-1)  # [N]
    k = sims.numel() if top <= 0 else min(top, sims.numel())
    best, idx = sims.topk(k)
    return idx, torch.softmax(best / temperature, dim=0)


def surprisal(states: Tensor, actions: Tensor, lm_head: Tensor) -> Tensor:
    """[k]: -log p(a_t | h_t) through the LM head [V, H], for states [k, H] and actions [k]."""
    logp = torch.log_softmax(states.float() @ lm_head.float().T, dim=-1)  # [k, V]
    return -logp.gather(1, actions.long()[:, None])[:, 0]


def reward_vector(states: Tensor, actions: Tensor, weights: Tensor, lm_head: Tensor) -> Tensor:
    """[V]: each action's summed weight x surprisal, scaled so the largest is 1 (zeros if none)."""
    reward = torch.zeros(lm_head.shape[0], dtype=torch.float32)
    if actions.numel() == 0:
        return reward
    reward.index_add_(0, actions.long(), weights.float() * surprisal(states, actions, lm_head))
    peak = reward.max()
    return reward / peak if peak > 0 else reward


def top_rewards(reward: Tensor, tokens: int, strength: float) -> dict[int, float]:
    """The ``tokens`` best-rewarded token ids with ``strength`` x reward (positive ones only)."""
    values, ids = reward.topk(min(tokens, reward.numel()))
    return {int(i): float(strength * v) for i, v in zip(ids, values) if v > 0}


def modulate(logits: Tensor, bias: dict[int, float]) -> Tensor:
    """``logits`` [..., V] with the reward added to its tokens (what a generation step sees)."""
    out = logits.clone()
    if bias:
        ids = torch.tensor(list(bias), dtype=torch.long)
        out[..., ids] += torch.tensor(list(bias.values()), dtype=out.dtype)
    return out
