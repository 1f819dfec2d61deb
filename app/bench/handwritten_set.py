"""The hand-written held-out set: ordinary fictional documents and questions, written once by a
person rather than by a generator.

A generator, however varied, repeats its own habits, and a learner tuned against it can learn
those habits. This set was written by hand, is never used to choose a default or tune anything,
and is reported separately. The loader holds it to the same rules as the generated set and names
the file and question that break one, so a careless edit cannot slip in silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from app.bench.natural import NaturalDoc, NaturalQuestion, NaturalSet, problems

DATA = Path(__file__).resolve().parent / "data" / "handwritten"
QUESTIONS_FILE = "questions.jsonl"
_NAME_KINDS = frozenset(("person", "place", "company", "product", "organisation"))


class _Row(BaseModel):
    """One line of questions.jsonl as written by hand."""

    id: str
    doc: str
    question: str
    answer: str
    aliases: list[str] = []
    kind: str
    evidence: str
    options: list[str]


def _title(text: str, fallback: str) -> str:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.lstrip("#").strip() if first.startswith("#") else fallback


def _documents(folder: Path) -> dict[str, NaturalDoc]:
    """Every markdown file but the README, keyed by file name; its stem is id and genre."""
    docs = {}
    for path in sorted(folder.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        text = path.read_text(encoding="utf-8")
        docs[path.name] = NaturalDoc(id=path.stem, genre=path.stem, title=_title(text, path.stem), text=text)
    return docs


def _rows(path: Path) -> list[_Row]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_Row.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as err:
            raise ValueError(f"{path.name} line {number}: not a valid question: {err}") from err
    return rows


def load(folder: Path | None = None) -> NaturalSet:
    """The hand-written set in ``folder`` (the shipped one by default); ValueError naming the
    file and question id when a question breaks a rule."""
    folder = folder or DATA
    docs = _documents(folder)
    if not docs:
        raise ValueError(f"{folder}: no documents")
    questions: list[NaturalQuestion] = []
    seen: set[str] = set()
    for row in _rows(folder / QUESTIONS_FILE):
        doc = docs.get(row.doc)
        if doc is None:
            raise ValueError(f"{QUESTIONS_FILE}: question {row.id} refers to {row.doc}, missing from {folder}")
        if row.id in seen:
            raise ValueError(f"{QUESTIONS_FILE}: question id {row.id} ({row.doc}) is used twice")
        seen.add(row.id)
        q = NaturalQuestion(id=row.id, doc_id=doc.id, question=row.question, answer=row.answer,
                            aliases=row.aliases, kind=row.kind, evidence=row.evidence, options=row.options)
        found = problems(q, doc.text)
        if found:
            raise ValueError(f"{row.doc}, question {row.id}: {'; '.join(found)}")
        questions.append(q)
    asked = {q.doc_id for q in questions}
    unasked = sorted(name for name, d in docs.items() if d.id not in asked)
    if unasked:
        raise ValueError(f"{folder}: no questions about {', '.join(unasked)}")
    for q in questions:
        if q.kind in _NAME_KINDS:
            doc = docs[f"{q.doc_id}.md"]
            if q.answer not in doc.entities:
                doc.entities.append(q.answer)
    return NaturalSet(name="handwritten", seed=None, documents=list(docs.values()), questions=questions)
