"""Consolidation: what the fast experts hold, distilled into the slow adapter, under EWC.

Sleep replays stored episodes in shuffled order; for each, the teacher is the model with the
episode's own expert routed, the student the model with only the consolidated adapter. The loss
is the KL divergence of the student's predictions from the teacher's (Hinton et al. 2015),
plus, where given, the task loss on the episode's label and the EWC penalty that holds what the
consolidated weights already serve. Generic over what a batch and a forward are, so the digits
bench and the language model share it. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.ewc import EWC


@dataclass
class DistillReport:
    steps: int
    first_loss: float
    last_loss: float
    stopped: bool  # asked to stop before the last step


def kl_to_teacher(student: Tensor, teacher: Tensor, mask: Tensor | None = None,
                  temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) over the last dimension, averaged over (masked) positions."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                  log_target=True, reduction="none").sum(-1) * t * t
    if mask is None:
        return kl.mean()
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


def adam_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """An Adam optimizer's moments and step counts as flat tensors (``adam.<param>.<name>``), so a
    cut-short sleep can save them beside its adapter (safetensors: no pickle) and resume as it was."""
    out: dict[str, Tensor] = {}
    for index, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"adam.{index}.{name}"] = torch.as_tensor(value).detach().clone()
    return out


def load_adam_tensors(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> bool:
    """Put moments saved by ``adam_tensors`` back into ``opt`` (built over the same parameters);
    False, and ``opt`` left fresh, when they do not fit its parameters."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    params = [p for group in opt.param_groups for p in group["params"]]
    if not state or set(state) != set(range(len(params))) or any(
            s["exp_avg"].shape != p.shape for i, s in state.items() for p in [params[i]] if "exp_avg" in s):
        return False
    current = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    return True


def distill(params: Sequence[nn.Parameter], batches: Sequence[object],
            loss: Callable[[object], Tensor], lr: float, ewc: EWC | None = None,
            stop: Callable[[], bool] | None = None, max_grad_norm: float = 1.0,
            opt: torch.optim.Optimizer | None = None) -> DistillReport:
    """One Adam step per batch on ``params`` minimising ``loss(batch)`` (+ the EWC penalty);
    ``stop`` is asked before each step, so sleep can give way between steps. ``opt``: an Adam
    over ``params`` to go on with (a resumed sleep's, its moments restored)."""
    opt = opt if opt is not None else torch.optim.Adam(params, lr=lr)
    first = last = float("nan")
    steps = 0
    for batch in batches:
        if stop is not None and stop():
            return DistillReport(steps, first, last, True)
        opt.zero_grad()
        value = loss(batch)
        if ewc is not None:
            value = value + ewc.penalty(params)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        last = float(value.detach())
        first = last if steps == 0 else first
        steps += 1
    return DistillReport(steps, first, last, False)
