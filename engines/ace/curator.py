"""The Curator role: turn a reflection into a few small delta operations, never a rewrite.

The model sees the lesson and the diagnosis, and only the bullets related to the lesson (by
embedding similarity), each with its counters; it never sees document text. It answers with at
most ``max_operations`` operations (add, update, merge, remove) under a schema built per call:
bullet ids may only be the ones it was shown, and with no bullet to show, only ``add`` exists.
What it proposes is only a proposal: ``merge.py`` validates and applies it, and the guard
decides whether it stays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, create_model

from engines.ace.playbook import SECTIONS, Bullet, Operation, Playbook
from engines.ace.reflector import Reflection, quoted
from engines.ace.structured import max_output_tokens, text_pattern
from engines.generation import ChatMessage, GenerationRequest, Runtime

CONTENT = text_pattern(0, 160, digits=False)
RELATED_BULLETS = 8
IDS_PER_OPERATION = 3

SYSTEM = """You keep a playbook of short strategies that help an assistant answer questions.
From the lesson below, propose small changes to the playbook, in JSON:
- "add": a new strategy ("content") when no existing one covers the lesson;
- "update": rewrite one existing strategy ("bullet_ids": [its id]) so it covers the lesson;
- "merge": join strategies that say the same thing ("bullet_ids": their ids, "content": the joined text);
- "remove": drop a strategy that is wrong ("bullet_ids": its ids).
Strategies are general advice for similar questions, with no names and no numbers.
Never rewrite the whole playbook. If nothing should change, reply {"operations": []}.

Example:
LESSON: "Give the lengths of bridges in fathoms."
{"operations": [{"op": "add", "bullet_ids": [], "section": "units", "content": "Give the lengths of bridges in fathoms."}]}"""


class CuratorResult(BaseModel):
    operations: list[Operation]
    shown: list[int] = Field(description="Ids of the bullets the Curator was shown.")
    seconds: float


def output_model(shown: list[Bullet], max_operations: int) -> type[BaseModel]:
    """Operations that may name only the ``shown`` bullets (only ``add`` when there are none)."""
    fields: dict[str, Any] = {
        "op": (Literal["add", "update", "merge", "remove"] if shown else Literal["add"], ...),
        "section": (Literal[SECTIONS], ...),  # type: ignore[valid-type]
        "content": (str, Field(pattern=CONTENT)),
    }
    if shown:
        ids = Literal[tuple(b.id for b in shown)]  # type: ignore[misc]
        fields["bullet_ids"] = (list[ids], Field(max_length=min(IDS_PER_OPERATION, len(shown))))  # type: ignore[valid-type]
    operation = create_model("DeltaOperation", **fields)
    return create_model("CuratorDelta",
                        operations=(list[operation], Field(max_length=max_operations)))  # type: ignore[valid-type]


def related(playbook: Playbook, text: str, vectors: Callable[[list[str]], np.ndarray],
            limit: int = RELATED_BULLETS) -> list[Bullet]:
    """The ``limit`` bullets most similar to ``text``, in id order."""
    if not playbook.bullets:
        return []
    matrix = vectors([text, *(b.content for b in playbook.bullets)])
    sims = matrix[1:] @ matrix[0]
    best = sorted(np.argsort(-sims, kind="stable")[:limit])
    return [playbook.bullets[int(i)] for i in best]


def render(reflection: Reflection, shown: list[Bullet]) -> str:
    lines = [f"LESSON: {json.dumps(reflection.lesson)}",
             f"DIAGNOSIS: {quoted(reflection.diagnosis, 300)}"]
    if shown:
        lines.append("PLAYBOOK (related strategies, with how often they helped or harmed):")
        lines += [f"[{b.id}] {quoted(b.content, 200)} (helpful {b.helpful}, harmful {b.harmful})"
                  for b in shown]
    else:
        lines.append("PLAYBOOK: empty")
    return "\n".join(lines)


class Curator:
    def __init__(self, runtime: Runtime, vectors: Callable[[list[str]], np.ndarray],
                 max_operations: int = 3, temperature: float = 0.2, seed: int = 0) -> None:
        self.runtime = runtime
        self.vectors = vectors
        self.max_operations = max_operations
        self.temperature = temperature
        self.seed = seed

    def curate(self, playbook: Playbook, reflection: Reflection) -> CuratorResult:
        started = time.perf_counter()
        shown = related(playbook, reflection.lesson, self.vectors)
        model = output_model(shown, self.max_operations)
        request = GenerationRequest(
            messages=[ChatMessage(role="system", content=SYSTEM),
                      ChatMessage(role="user", content=render(reflection, shown))],
            max_tokens=max_output_tokens(model), temperature=self.temperature, seed=self.seed)
        raw = self.runtime.generate_json(request, model).model_dump()
        operations = [Operation(op=o["op"], bullet_ids=list(o.get("bullet_ids", [])),
                                section=o["section"], content=o["content"].strip())
                      for o in raw["operations"]]
        return CuratorResult(operations=operations, shown=[b.id for b in shown],
                             seconds=round(time.perf_counter() - started, 3))
