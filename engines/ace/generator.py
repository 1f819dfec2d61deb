"""The Generator role: answer with the relevant documents and the playbook bullets it selects.

At chat time the chat service is the Generator: the engine's ``contribute`` hands it the selected
bullets and their ids, which are kept in the stored answer's meta, so reflection on feedback knows
which bullets the answer used. Replays and offline training answer the same way through the
app's chat path (``EngineContext.answer``: same retrieval, same prompt, no storing), greedily, so
an answer changes only when the bullets selected for its question do: answers are cached by
(question, selected bullets), and replaying a delta regenerates only the answers it changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from engines.ace.config import AceConfig
from engines.ace.playbook import Bullet, Playbook
from engines.ace.selection import select
from engines.base import EngineContext
from engines.generation import Runtime

MAX_CACHED_ANSWERS = 5000


class GeneratorOutput(BaseModel):
    answer: str
    bullet_ids: list[int] = Field(description="The bullets the answer was given (the ones it used).")
    sources: list[str] = Field(default_factory=list)
    seconds: float = 0.0


class Generator:
    def __init__(self, context: EngineContext, config: AceConfig,
                 vectors: Callable[[list[str]], object]) -> None:
        self.context = context
        self.config = config
        self.vectors = vectors
        self._answers: dict[tuple[str, tuple[str, ...], int], GeneratorOutput] = {}

    def forget_answers(self) -> None:
        """Drop cached answers (the documents or the chat model may have changed since)."""
        self._answers.clear()

    def _count_tokens(self) -> Callable[[str], int]:
        runtime: Runtime = self.context.generator()
        return runtime.count_tokens

    def select(self, playbook: Playbook, question: str) -> list[Bullet]:
        """The bullets to put in the prompt for ``question`` (none for an empty playbook)."""
        if not playbook.bullets or self.config.prompt_bullets == 0:
            return []
        vectors = self.vectors([question, *(b.content for b in playbook.bullets)])
        return select(playbook.bullets, vectors[1:], vectors[0], max_bullets=self.config.prompt_bullets,
                      token_budget=self.config.prompt_tokens, count_tokens=self._count_tokens(),
                      min_similarity=self.config.min_similarity)

    def answer(self, playbook: Playbook, question: str, max_tokens: int) -> GeneratorOutput:
        """The chat path's answer to ``question`` with this playbook's selected bullets."""
        if self.context.answer is None:
            raise RuntimeError("the playbook engine needs the app's chat path to replay answers")
        started = time.perf_counter()
        bullets = self.select(playbook, question)
        key = (question, tuple(b.content for b in bullets), max_tokens)
        if key not in self._answers:
            if len(self._answers) >= MAX_CACHED_ANSWERS:
                self._answers.clear()
            draft = self.context.answer(question, list(key[1]), max_tokens)
            self._answers[key] = GeneratorOutput(
                answer=draft.text, bullet_ids=[], sources=[p.text for p in draft.passages],
                seconds=round(time.perf_counter() - started, 3))
        return self._answers[key].model_copy(update={"bullet_ids": [b.id for b in bullets]})
