"""Sleep: every question/answer pair learned so far, rehearsed together, while general use is held.

Learning a document rehearses only a few earlier pairs beside it, so the rows that hold the first
documents keep being rewritten by later ones. Sleep has time for the whole recall pool: several
passes over it, each in a new random order, with the rows of every neuron gating could choose
open (or only those documents changed: the engine's second try when the probe rolls the first
back), and beside every step a distillation batch (background prose and questions) that holds
the original model's predictions where general use runs.

The recall batches do not change between passes, so what the frozen layers below the first
learning one make of them is kept (up to ``PREFIX_BUDGET`` bytes) instead of recomputed.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from engines.ttt.trainer import Prefix, adam_step, frozen_prefix

PREFIX_BUDGET = 2**28  # bytes of frozen-layer output kept across passes (256 MB)


@dataclass
class SleepRun:
    """What a sleep did: the material's and the distillation's loss at each step taken."""

    losses: list[tuple[float, float]]
    planned: int
    batches: int  # per pass
    interrupted: bool = False  # ``stop`` said so before the plan or the time ran out

    def details(self) -> dict[str, Any]:
        """Steps, whole passes done, and the mean loss of the first and the last whole pass."""
        done = len(self.losses) // self.batches if self.batches else 0
        own = [loss for loss, _ in self.losses]
        return {"steps": len(self.losses), "planned": self.planned, "batches": self.batches,
                "epochs_done": done, "interrupted": self.interrupted,
                "loss_first_epoch": _mean(own[:self.batches]) if done >= 1 else None,
                "loss_last_epoch": _mean(own[(done - 1) * self.batches:done * self.batches]) if done >= 2 else None,
                "held_mean": _mean([held for _, held in self.losses])}


def plan(batches: int, epochs: int, seed: int, steps: int | None = None) -> list[int]:
    """Batch indices for ``epochs`` passes, each in a new random order, cut at ``steps``."""
    rng = random.Random(seed)
    order = [i for _ in range(epochs) for i in rng.sample(range(batches), batches)]
    return order[:steps] if steps else order


def probe_keeps(before: float | None, after: float | None, original: float | None, bound: float) -> bool:
    """Whether a sleep may be kept: the probe's perplexity after it is finite and at most ``bound``
    above the higher of before the sleep and the original model's (of those that are finite).
    Replay in learning can push the probe below the original's; a sleep that brings it back is not
    forgetting. No probe: kept."""
    if before is None or after is None or original is None:
        return True
    if not math.isfinite(after):
        return False
    limits = [value for value in (before, original) if math.isfinite(value)]
    return not limits or after <= max(limits) * (1.0 + bound)


def rehearse(model: Any, lock: threading.Lock, params: list[torch.nn.Parameter],
             batches: list[dict[str, Tensor]], order: list[int], first: int,
             held: Callable[[], dict[str, Tensor] | None],
             original: Callable[[], AbstractContextManager[Any]], lr: float, max_grad_norm: float,
             weight: float, seconds: float, progress: Callable[[float, str], None],
             stop: Callable[[], bool] = lambda: False) -> SleepRun:
    """One Adam step per entry of ``order`` (``batches[i]``, beside the batch ``held()`` gives),
    until ``seconds`` have passed or ``stop()`` says so; the lock is held per step only, so
    answers come between."""
    started = time.perf_counter()
    optimizer = torch.optim.Adam(params, lr=lr)
    kept: dict[int, Prefix] = {}
    room = PREFIX_BUDGET
    run = SleepRun(losses=[], planned=len(order), batches=len(batches))
    for n, i in enumerate(order):
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
        if stop():
            run.interrupted = True
            break
        distilled = held()
        with lock:
            prefix = kept.get(i) or frozen_prefix(model, batches[i], first)
            other = frozen_prefix(model, distilled, first) if distilled is not None else None
            run.losses.append(adam_step(model, params, optimizer, prefix, first, max_grad_norm, other,
                                        original, weight))
        if i not in kept and _bytes(prefix) <= room:
            kept[i], room = prefix, room - _bytes(prefix)
        loss, kl = run.losses[-1]
        progress(max((n + 1) / len(order), elapsed / seconds),
                 f"sleep step {n + 1}/{len(order)} loss {loss:.3f} held {kl:.4f}")
    return run


def _bytes(prefix: Prefix) -> int:
    return 2 * prefix.hidden.numel() * prefix.hidden.element_size()  # with the rotary tables and mask


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
