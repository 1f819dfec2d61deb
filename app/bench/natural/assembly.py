"""Putting a set together: how many documents a size stands for, the genres taking turns, each
document redrawn until it is sound, and the questions checked once more before they are kept.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from app.bench.natural.changelog import _changelog
from app.bench.natural.diary import _diary
from app.bench.natural.drafts import _Draft, _Fact
from app.bench.natural.emails import _email
from app.bench.natural.encyclopedia import _encyclopedia
from app.bench.natural.manual import _manual
from app.bench.natural.minutes import _minutes
from app.bench.natural.models import (
    NaturalDoc,
    NaturalQuestion,
    NaturalSet,
    problems,
    word_count,
)
from app.bench.natural.names import _Names
from app.bench.natural.news import _news
from app.bench.natural.questions import (
    QUESTIONS_PER_DOC,
    _ask,
    _Chosen,
    _options,
    _select,
    _shape,
    _skill,
)
from app.bench.natural.recipe import _recipe
from app.bench.natural.values import _Ctx

Size = Literal["tiny", "small", "default"]
SIZES: dict[str, int] = {"tiny": 8, "small": 30, "default": 120}
GENRES: tuple[str, ...] = ("encyclopedia", "news", "minutes", "email", "manual", "recipe",
                           "changelog", "diary")
MIN_WORDS, MAX_WORDS = 120, 400
_ATTEMPTS = 40


_WRITERS: dict[str, Callable[[_Ctx], _Draft]] = {
    "encyclopedia": _encyclopedia, "news": _news, "minutes": _minutes, "email": _email,
    "manual": _manual, "recipe": _recipe, "changelog": _changelog, "diary": _diary,
}


def documents_in(size: Size | int) -> int:
    """How many documents ``size`` stands for; ValueError for an unknown name or too few."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"{size!r} names no natural set size; choose {', '.join(SIZES)} or a document count")
        return SIZES[size]
    if isinstance(size, bool) or not isinstance(size, int) or size < len(GENRES):
        raise ValueError(f"a natural set needs a whole number of at least {len(GENRES)} documents "
                         f"(one per genre), not {size!r}")
    return size


def _write_doc(genre: str, number: int, ctx: _Ctx) -> tuple[NaturalDoc, list[_Chosen], list[_Fact]]:
    for _ in range(_ATTEMPTS):
        draft = _WRITERS[genre](ctx)
        text = draft.text
        if not MIN_WORDS <= word_count(text) <= MAX_WORDS:
            continue
        usable = [_Chosen(f, q, _skill(f)) for f in draft.facts
                  if (q := _ask(f, text, draft.entities, ctx.rng)) is not None]
        if len({u.fact.answer for u in usable}) >= QUESTIONS_PER_DOC[0]:
            doc = NaturalDoc(id=f"{genre}{number:04d}", genre=genre, title=draft.title, text=text,
                             entities=draft.entities)
            return doc, _select(usable, ctx.rng), draft.facts
    raise RuntimeError(f"could not write a sound {genre} document in {_ATTEMPTS} attempts")


def generate(size: Size | int = "small", seed: int = 0) -> NaturalSet:
    """A set of ``size`` documents, the genres taking turns, with four to six questions each."""
    n = documents_in(size)
    rng = random.Random(seed)
    ctx = _Ctx(rng, _Names(rng))
    written = [_write_doc(GENRES[i % len(GENRES)], i // len(GENRES), ctx) for i in range(n)]
    pool: dict[tuple[str, str], list[str]] = {}
    for _, _, facts in written:
        for f in facts:
            values = pool.setdefault((f.slot, _shape(f.answer)), [])
            if f.answer not in values:
                values.append(f.answer)
    documents, questions = [], []
    for doc, chosen, _ in written:
        documents.append(doc)
        for j, c in enumerate(chosen, 1):
            q = NaturalQuestion(id=f"{doc.id}-q{j}", doc_id=doc.id, question=c.question, answer=c.fact.answer,
                                aliases=list(c.fact.value.aliases), kind=c.fact.kind, evidence=c.fact.evidence,
                                options=_options(c, pool, rng), skill=c.skill)
            found = problems(q, doc.text)
            if found:
                raise RuntimeError(f"{q.id}: {'; '.join(found)}")
            questions.append(q)
    return NaturalSet(seed=seed, documents=documents, questions=questions)
