"""The document sets ``engram bench learn`` measures on, behind one shape.

- ``natural`` (the default): generated fictional documents written like the ones people keep
  (``app.bench.natural``), sharing no template or word list with the learning side;
- ``handwritten``: twelve documents and their questions written once by a person
  (``app.bench.handwritten_set``), never used to choose a default: the held-out check that the
  learner is not tuned to the generator;
- ``templated``: the first, generator-shaped set (``app.bench.fiction``: one fact a sentence,
  answer last), kept as a regression check.

Every question has four options (choice accuracy) and one or more accepted short answers (the
free-text headline: the generated answer contains one, or is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

SetName = Literal["natural", "handwritten", "templated"]
SET_NAMES: tuple[SetName, ...] = ("natural", "handwritten", "templated")


class BenchDocument(BaseModel):
    file_name: str
    text: str


class BenchQuestion(BaseModel):
    doc_file: str
    question: str
    answer: str
    accepted: list[str] = Field(description="The answer and its aliases: any of them is right.")
    options: list[str]


class BenchSet(BaseModel):
    name: SetName
    size: str
    seed: int | None
    documents: list[BenchDocument]
    questions: list[BenchQuestion]

    def write(self, folder: Path) -> list[Path]:
        from app.bench.fiction import write_documents

        return write_documents(self.documents, folder)


def load_set(name: SetName, size: str | int = "small", seed: int | None = 0) -> BenchSet:
    """The named set (``size`` and ``seed`` are ignored by the hand-written one)."""
    if name == "templated":
        from app.bench.fiction import generate as templated

        found: Any = templated(size, seed or 0)  # type: ignore[arg-type]
    elif name == "natural":
        from app.bench.natural import generate as natural

        found = natural(size, seed or 0)  # type: ignore[arg-type]
    elif name == "handwritten":
        from app.bench.handwritten_set import load

        found, size, seed = load(), "all", None
    else:
        raise ValueError(f"unknown set {name!r}; choose {', '.join(SET_NAMES)}")
    files = {d.id: d.file_name for d in found.documents}
    return BenchSet(name=name, size=str(size), seed=seed,
                    documents=[BenchDocument(file_name=d.file_name, text=d.text) for d in found.documents],
                    questions=[BenchQuestion(doc_file=files[q.doc_id], question=q.question, answer=q.answer,
                                             accepted=[q.answer, *getattr(q, "aliases", [])], options=q.options)
                               for q in found.questions])
