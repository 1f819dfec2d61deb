"""Elastic weight consolidation (Kirkpatrick et al. 2017): a quadratic pull towards an anchor.

The diagonal of the Fisher information, estimated as the mean squared gradient of the loss on
data the weights must keep serving (general text for the language model; earlier tasks on the
digits bench), says how much each weight matters there. The penalty

    lambda / 2 * sum_i F_i (theta_i - anchor_i)^2

is zero at the anchor and grows as important weights move. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn


def fisher_diagonal(params: Sequence[nn.Parameter], batches: Iterable[object],
                    loss: Callable[[object], Tensor]) -> list[Tensor]:
    """Mean over ``batches`` of the squared gradient of ``loss(batch)`` for each parameter."""
    totals = [torch.zeros_like(p) for p in params]
    n = 0
    for batch in batches:
        grads = torch.autograd.grad(loss(batch), list(params), allow_unused=True)
        for total, g in zip(totals, grads):
            if g is not None:
                total += g.detach() ** 2
        n += 1
    if n == 0:
        raise ValueError("the Fisher needs at least one batch")
    return [t / n for t in totals]


class EWC:
    """The anchor and Fisher of one or more earlier states; ``penalty`` of the current one."""

    def __init__(self, params: Sequence[nn.Parameter], fisher: Sequence[Tensor], strength: float) -> None:
        if len(params) != len(fisher):
            raise ValueError(f"{len(fisher)} Fisher tensors for {len(params)} parameters")
        self.anchor = [p.detach().clone() for p in params]
        self.fisher = [f.detach().clone() for f in fisher]
        self.strength = strength

    def absorb(self, params: Sequence[nn.Parameter], fisher: Sequence[Tensor]) -> None:
        """Online EWC: the new anchor is the current state, Fishers add up."""
        self.anchor = [p.detach().clone() for p in params]
        self.fisher = [a + f.detach() for a, f in zip(self.fisher, fisher)]

    def penalty(self, params: Sequence[nn.Parameter]) -> Tensor:
        total = torch.zeros(())
        for p, a, f in zip(params, self.anchor, self.fisher):
            total = total + (f * (p - a) ** 2).sum()
        return 0.5 * self.strength * total
