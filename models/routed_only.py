"""A mark for modules whose weights a plain forward does not run.

Some modules live on a model but compute only inside a routing context (``models.lora_experts``:
the experts run only for the rows a router gives them). Marking such a module lets whatever must
know what a plain forward computes with (``engines.hidden.fingerprint``) leave its weights out,
and those of every module inside it, without knowing the engine that put it there.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

MARK = "routed_only"
M = TypeVar("M", bound=nn.Module)


def mark_routed_only(module: M) -> M:
    """Say that ``module`` (and all it holds) takes no part in a forward outside routing."""
    setattr(module, MARK, True)
    return module


def is_routed_only(module: nn.Module) -> bool:
    return getattr(module, MARK, False) is True
