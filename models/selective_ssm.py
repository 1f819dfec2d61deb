"""A tiny selective state-space encoder (Mamba-style): a stretch of turn embeddings -> one vector.

The recurrence is diagonal and input-dependent, as in Mamba's selective scan. For each turn
embedding x_t (dim D) and each channel d with N state slots:

    delta_t = softplus(W_up(W_down x_t) + b)            [D]     how much turn t is taken in
    a_t     = exp(-delta_t * exp(A_log))                [D, N]  per-slot decay (multi-timescale)
    B_t     = W_B x_t                                   [N]     which slots turn t writes
    h_t     = a_t * h_{t-1} + (delta_t * x_t)[:, None] * B_t[None, :]

The final state h_T [D, N] is read out with a learned C [N] (Mamba's D skip is the turns' mean),
projected (W_out, zero at start) and L2-normalised: at initialisation the state is close to
the mean of the turn embeddings, and training moves it towards what is later asked about the
stretch. ``info_nce`` is the contrastive loss that training uses (with an alignment term).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SelectiveStateEncoder(nn.Module):
    """Stretches of turn embeddings [B, T, D] (with a mask [B, T]) -> states [B, D], unit length."""

    def __init__(self, dim: int = 384, slots: int = 4, rank: int = 16) -> None:
        super().__init__()
        self.dim, self.slots, self.rank = dim, slots, rank
        self.delta_down = nn.Linear(dim, rank, bias=False)
        self.delta_up = nn.Linear(rank, dim)
        nn.init.constant_(self.delta_up.bias, -1.0)  # softplus(-1) ~ 0.31: every turn taken in at first
        self.to_b = nn.Linear(dim, slots, bias=False)
        # slot s decays at rate ~ 10**(s - slots) per unit delta: slow slots keep early turns
        rates = torch.logspace(-3, 0, slots).repeat(dim, 1)
        self.a_log = nn.Parameter(rates.log())
        self.readout = nn.Parameter(torch.full((slots,), 1.0 / slots))
        self.skip = nn.Parameter(torch.ones(dim))
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, turns: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps, dim = turns.shape
        mask = torch.ones(batch, steps, dtype=turns.dtype) if mask is None else mask.to(turns.dtype)
        delta = F.softplus(self.delta_up(self.delta_down(turns)))           # [B, T, D]
        writes = self.to_b(turns)                                           # [B, T, N]
        rate = torch.exp(self.a_log)                                        # [D, N]
        state = turns.new_zeros(batch, dim, self.slots)                     # [B, D, N]
        for t in range(steps):
            keep = mask[:, t, None, None]
            decay = torch.exp(-delta[:, t, :, None] * rate)                 # [B, D, N]
            written = (delta[:, t] * turns[:, t])[:, :, None] * writes[:, t, None, :]
            state = keep * (decay * state + written) + (1 - keep) * state
        read = state @ self.readout                                         # [B, D]
        mean = (turns * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return F.normalize(read + self.skip * mean + self.out(read), dim=-1)


def info_nce(states: torch.Tensor, queries: torch.Tensor, owner: torch.Tensor,
             temperature: float = 0.05, align: float = 1.0) -> torch.Tensor:
    """Contrastive loss: each query [Q, D] should be closest to its own stretch's state
    (``owner`` [Q] indexes ``states`` [S, D]); the other stretches are the negatives. ``align``
    weighs 1 - cos(query, own state): ranking alone lets states drift away from every question
    (a handful of stretches are told apart by pointing anywhere), and recall compares their
    cosines with the raw turns' and with a fixed cut."""
    similarity = F.normalize(queries.to(states.dtype), dim=-1) @ states.T    # [Q, S]
    own = similarity.gather(1, owner[:, None]).squeeze(1)
    return F.cross_entropy(similarity / temperature, owner) + align * (1 - own).mean()
