"""General English the base model already handles: the "forgot" side of learning into weights.

- ``background_text``: ``data/background_english.txt``, everyday prose on topics of its own
  written for Engram (Apache-2.0), followed by the Python language reference that ships with
  every CPython (``pydoc_data``, PSF license). Engines calibrate neuron statistics and replay from
  it. The prose comes first because calibration and replay start at the beginning: measured
  against technical text alone, the neurons of plain narrative English look document-specific,
  and the gate hands exactly those to training.
- ``heldout_text``: ``data/general_english.txt``, everyday prose written for Engram (Apache-2.0)
  and the Gettysburg Address (public domain). Nothing trains on it: it only measures
  perplexity drift.
- ``general_questions``: ``data/general_questions.jsonl``, multiple-choice general-knowledge
  questions written for Engram (the answer and three same-kind options each).
- ``heldout_questions``: ``data/general_questions_heldout.jsonl``, more of them, written later
  and never looked at when a default was chosen (the router's bounds included): a third of them
  are worded like the fictional set's questions (birth years, home towns, professions, pets,
  rivers, makers, colours), about real people, places and products. They check that a default
  does not merely fit the first set; none is answered by the background prose engines replay.

Replay text and measured text are kept apart on purpose: replaying the text that is measured
would hide forgetting instead of preventing it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from pydantic import BaseModel, Field, model_validator


class GeneralQuestion(BaseModel):
    question: str
    answer: str
    options: list[str] = Field(min_length=2)

    @model_validator(mode="after")
    def _answer_offered(self) -> GeneralQuestion:
        if self.answer not in self.options:
            raise ValueError(f"the answer to {self.question!r} is not among its options")
        return self


def _data(name: str) -> str:
    return resources.files("app").joinpath("data", name).read_text(encoding="utf-8")


@cache
def background_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join([_data("background_english.txt"), *(topics[k] for k in sorted(topics))])


@cache
def heldout_text() -> str:
    return _data("general_english.txt")


@cache
def general_questions() -> tuple[GeneralQuestion, ...]:
    return _questions("general_questions.jsonl")


@cache
def heldout_questions() -> tuple[GeneralQuestion, ...]:
    return _questions("general_questions_heldout.jsonl")


def _questions(name: str) -> tuple[GeneralQuestion, ...]:
    return tuple(GeneralQuestion.model_validate(json.loads(line))
                 for line in _data(name).splitlines() if line.strip())
