"""A learned state that also comes as LoRA adapter files (d2l), answered on both runtimes.

Chat answers a question routed to learned documents on llama.cpp with the documents' GGUF
adapters when it can, and on the torch model otherwise. This asks the set's questions both ways,
one answer at a time as chat does (greedy, the same decoding), and reports what a person would
see: the written answers' scores on llama.cpp and the seconds per answer on each runtime.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel, Field

from app.bench.learn_measures import ANSWER_TOKENS, written_scores
from app.bench.learn_sets import BenchQuestion
from engines.base import Contribution, Neocortex
from engines.generation import ChatMessage, GenerationRequest, Runtime
from engines.loop_guard import has_loop, trim_loop

TIMED = 12  # questions answered on both runtimes for the seconds per answer


class OnChatRuntime(BaseModel):
    """The learned state's answers on the chat runtime, beside the torch model's speed."""

    runtime: str
    contains: float = Field(description="Written answers (chat runtime, with the adapters) containing an accepted answer.")
    exact_match: float
    loops: int
    with_adapters: int = Field(description="Questions that were given at least one adapter.")
    seconds_chat: float = Field(description="Mean seconds per answer on the chat runtime (first TIMED questions).")
    seconds_torch: float = Field(description="Mean seconds per answer on the torch model, same questions.")
    timed: int


def _request(messages: list[ChatMessage], contributions: Sequence[Contribution]) -> GenerationRequest:
    return GenerationRequest(messages=messages, temperature=0.0, max_tokens=ANSWER_TOKENS, loop_guard=False,
                             adapters=[a for c in contributions for a in c.adapters])


def _answer(runtime: Runtime, request: GenerationRequest) -> tuple[str, float]:
    started = time.perf_counter()
    text = runtime.generate(request).text
    return text, time.perf_counter() - started


def on_chat_runtime(chat: Runtime, cortex: Neocortex, questions: Sequence[BenchQuestion],
                    messages: Sequence[list[ChatMessage]],
                    contributions: Sequence[Sequence[Contribution]]) -> OnChatRuntime:
    """Each question answered on ``chat`` with its adapters; the first ``TIMED`` also on the
    torch model (its engines' router applies the same learned state there)."""
    requests = [_request(m, c) for m, c in zip(messages, contributions)]
    raw, chat_seconds = [], []
    for request in requests:
        text, seconds = _answer(chat, request)
        raw.append(text)
        chat_seconds.append(seconds)
    torch_seconds = [_answer(cortex, r.model_copy(update={"adapters": []}))[1] for r in requests[:TIMED]]
    found, exact = written_scores(questions, [trim_loop(a) for a in raw])
    timed = min(TIMED, len(questions))
    return OnChatRuntime(
        runtime=chat.name, contains=found, exact_match=exact, loops=sum(has_loop(a) for a in raw),
        with_adapters=sum(bool(r.adapters) for r in requests),
        seconds_chat=sum(chat_seconds[:timed]) / max(1, timed), seconds_torch=sum(torch_seconds) / max(1, timed),
        timed=timed)
