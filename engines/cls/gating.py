"""The learned gates on the language model (``cls.router`` = softmax | kwta).

The key router (``models.expert_router.KeyRouter``) needs no training: a question goes to the
expert owning its closest key. A learned gate reads the same input, the question's sentence
embedding, and is trained in sleep on the replay buffer's (embedding of an episode's prompt, the
expert that learned it) pairs: the rehearsal questions as well as the passages, so it sees inputs
shaped like the questions people ask. ``softmax`` mixes every expert it knows; ``kwta`` keeps only
the ``k`` best (the others' weights are exactly zero: they are not run and get no gradient).

A gate knows the experts that existed when it was trained (``slots``): one recycled since is
masked out; one grown since is unknown to it (the engine routes those questions by keys until
the next sleep trains the gate again). Tensors only (safetensors): ``gate.weight`` [E, D],
``gate.bias`` [E], ``gate.slots`` [E].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from models.expert_router import KWTAGate, SoftmaxGate

GateKind = Literal["softmax", "kwta"]
PREFIX = "gate."


class LearnedGate:
    """A trained gate over expert ``slots`` (one column each, in this order)."""

    def __init__(self, kind: GateKind, k: int, slots: list[int], dim: int) -> None:
        self.kind, self.slots = kind, list(slots)
        self.module: SoftmaxGate = KWTAGate(dim, len(slots), k) if kind == "kwta" else SoftmaxGate(dim, len(slots))

    @classmethod
    def fit(cls, kind: GateKind, k: int, x: Tensor, owners: Tensor, seed: int = 0) -> tuple[LearnedGate, dict[str, float]]:
        """A gate trained to send each input (``x`` [N, D]) to the slot that learned it
        (``owners`` [N]); with its last loss and its accuracy on those pairs."""
        slots = sorted(set(owners.tolist()))
        with torch.random.fork_rng(devices=[]):  # seeded start (the same sleep, the same gate), no side effect
            torch.manual_seed(seed)
            gate = cls(kind, k, slots, int(x.shape[1]))
        column = torch.tensor([slots.index(int(o)) for o in owners.tolist()])
        loss = gate.module.fit(x.float(), column)
        with torch.no_grad():
            right = float((gate.module.logits(x.float()).argmax(dim=1) == column).float().mean())
        return gate, {"loss": round(loss, 4), "accuracy": round(right, 4)}

    def covers(self, alive: set[int]) -> list[int]:
        """The gate's slots that still exist."""
        return [s for s in self.slots if s in alive]

    def weights(self, x: Tensor, alive: set[int]) -> Tensor:
        """Routing weights [batch, len(self.slots)]: rows sum to 1 over the slots still alive."""
        allowed = torch.tensor([s in alive for s in self.slots])
        with torch.no_grad():
            return self.module.weights(x.float(), allowed)

    def state(self) -> dict[str, Tensor]:
        return {f"{PREFIX}weight": self.module.score.weight.detach().clone(),
                f"{PREFIX}bias": self.module.score.bias.detach().clone(),
                f"{PREFIX}slots": torch.tensor(self.slots, dtype=torch.long)}

    @classmethod
    def from_state(cls, kind: GateKind, k: int, state: dict[str, object]) -> LearnedGate | None:
        """The saved gate as ``kind`` (both kinds share their weights); None when none is saved."""
        weight, bias, slots = (state.get(f"{PREFIX}{n}") for n in ("weight", "bias", "slots"))
        if not (isinstance(weight, Tensor) and isinstance(bias, Tensor) and isinstance(slots, Tensor)):
            return None
        gate = cls(kind, k, [int(s) for s in slots.tolist()], int(weight.shape[1]))
        gate.module.score.load_state_dict({"weight": weight.float(), "bias": bias.float()})
        return gate
