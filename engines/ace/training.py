"""Offline mode: epochs of Generate-Reflect-Curate over question/answer pairs.

Each pair is answered through the chat path with the current playbook (Generate), judged against
its reference answer, and handed to a Reflect-Curate step (``cycle.py``). The delta of a step is
checked by replaying that pair and the next few pairs of the epoch, with and without it: the
training set itself is the guard's episodes, so a held-out set stays unseen. The order of pairs
is shuffled per epoch, deterministically by seed.
"""

from __future__ import annotations

import random
import statistics
import time

from pydantic import BaseModel, Field

from engines.ace.cycle import Cycle, Episode
from engines.ace.guard import ReplayCase, answer_score
from engines.ace.reflector import Outcome
from engines.base import Progress, no_progress

QA_CHARS = 2000


class QAPair(BaseModel):
    question: str = Field(min_length=1, max_length=QA_CHARS)
    answer: str = Field(min_length=1, max_length=QA_CHARS)


class TrainStep(BaseModel):
    epoch: int
    question: str
    answer: str
    score: float
    correct: bool
    accepted: int
    rejected: int
    seconds: float = Field(description="Generate + Reflect + Curate + guard replays.")
    summary: str


class TrainReport(BaseModel):
    pairs: int
    epochs: int
    steps: list[TrainStep]
    version_before: int
    version_after: int
    bullets: int
    seconds: float

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.steps)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.steps)

    def cycle_seconds(self) -> float:
        """Median time of a full cycle (steps that reflected and curated a wrong answer)."""
        full = [s.seconds for s in self.steps if not s.correct]
        return statistics.median(full) if full else 0.0


def _cases(pairs: list[QAPair], order: list[int], position: int, count: int) -> list[ReplayCase]:
    """The pair at ``position`` and the next ``count - 1`` pairs of the epoch (wrapping)."""
    picks = [order[(position + k) % len(order)] for k in range(min(count, len(order)))]
    return [ReplayCase(question=pairs[i].question, reference=pairs[i].answer) for i in picks]


def train(cycle: Cycle, pairs: list[QAPair], epochs: int = 1, seed: int = 0,
          progress: Progress = no_progress) -> TrainReport:
    if not pairs:
        raise ValueError("no question/answer pairs to train on")
    started = time.perf_counter()
    before = cycle.store.load(cycle.name).version
    steps: list[TrainStep] = []
    total = epochs * len(pairs)
    for epoch in range(epochs):
        order = list(range(len(pairs)))
        random.Random(seed + epoch).shuffle(order)
        for position, index in enumerate(order):
            pair = pairs[index]
            progress(len(steps) / total, f"epoch {epoch + 1}/{epochs}, pair {position + 1}/{len(pairs)}")
            steps.append(_step(cycle, pair, epoch, _cases(pairs, order, position, cycle.config.guard_cases)))
    progress(1.0, "done")
    playbook = cycle.store.load(cycle.name)
    return TrainReport(pairs=len(pairs), epochs=epochs, steps=steps, version_before=before,
                       version_after=playbook.version, bullets=len(playbook.bullets),
                       seconds=round(time.perf_counter() - started, 3))


def _step(cycle: Cycle, pair: QAPair, epoch: int, cases: list[ReplayCase]) -> TrainStep:
    started = time.perf_counter()
    playbook = cycle.store.load(cycle.name)
    generated = cycle.generator.answer(playbook, pair.question, cycle.config.guard_max_tokens)
    score = answer_score(generated.answer, pair.answer)
    episode = Episode(question=pair.question, answer=generated.answer,
                      outcome=Outcome(reference=pair.answer, correct=score >= 1.0),
                      used_ids=generated.bullet_ids, sources=generated.sources)
    report = cycle.run(episode, cases, "offline")
    return TrainStep(epoch=epoch, question=pair.question, answer=generated.answer, score=score,
                     correct=score >= 1.0, accepted=sum(d.accepted for d in report.deltas),
                     rejected=sum(not d.accepted for d in report.deltas),
                     seconds=round(time.perf_counter() - started, 3), summary=report.summary())
