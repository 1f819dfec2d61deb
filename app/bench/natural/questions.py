"""Turning a document's facts into questions: a wording that passes every rule, four to six per
document covering the skills it offers, and three distractors of the same kind and shape.
"""

from __future__ import annotations

import calendar
import random
import re
from dataclasses import dataclass

from app.bench.natural.drafts import _Fact
from app.bench.natural.models import MAX_ANSWER_WORDS, _whole, copied_run, mentions

QUESTIONS_PER_DOC = (4, 6)


@dataclass
class _Chosen:
    fact: _Fact
    question: str
    skill: str


def _skill(fact: _Fact) -> str:
    if fact.skill:
        return fact.skill
    tail = fact.evidence.rstrip(" .!?;:)”\"'*")
    return "sentence-end" if tail.endswith(fact.answer) else "mid-sentence"


def _ask(fact: _Fact, text: str, entities: list[str], rng: random.Random) -> str | None:
    """A wording of the fact's question that passes every rule, if one does."""
    if fact.evidence not in text or not _whole(fact.answer, fact.evidence):
        return None
    accepted = [fact.answer, *fact.value.aliases]
    asks = list(fact.asks)
    rng.shuffle(asks)
    for ask in asks:
        if (not any(mentions(ask, a) for a in accepted) and copied_run(ask, text) is None
                and any(e in ask for e in entities) and all(len(a.split()) <= MAX_ANSWER_WORDS for a in accepted)):
            return ask
    return None


def _select(usable: list[_Chosen], rng: random.Random) -> list[_Chosen]:
    """Four to six questions, one of each skill the document offers before the rest at random."""
    rng.shuffle(usable)
    chosen: list[_Chosen] = []
    answers: set[str] = set()
    for skill in ("reference", "table", "table", "list", "mid-sentence"):
        match = next((u for u in usable if u.skill == skill and u.fact.answer not in answers), None)
        if match is not None:
            chosen.append(match)
            answers.add(match.fact.answer)
    want = rng.randint(*QUESTIONS_PER_DOC)
    for u in usable:
        if len(chosen) >= want:
            break
        if u not in chosen and u.fact.answer not in answers:
            chosen.append(u)
            answers.add(u.fact.answer)
    return chosen


def _shape(answer: str) -> str:
    """What a distractor must look like to pass for this answer: numbers and month names
    abstracted, so "14 March 2019" pools with "3 June 2020" but not with "2020-06-03"."""
    if not any(ch.isdigit() for ch in answer):
        return ""
    months = "|".join(calendar.month_name[1:] + calendar.month_abbr[1:])
    return re.sub(r"\d+", "0", re.sub(rf"\b(?:{months})\b", "M", answer))


def _options(chosen: _Chosen, pool: dict[tuple[str, str], list[str]], rng: random.Random) -> list[str]:
    fact = chosen.fact
    taken = {fact.answer.lower(), *(a.lower() for a in fact.value.aliases)}
    picked: list[str] = []

    def offer(value: str) -> None:
        if len(picked) < 3 and value.lower() not in taken and not mentions(chosen.question, value):
            taken.add(value.lower())
            picked.append(value)

    for value in fact.near:
        offer(value)
    others = [] if fact.kind in ("date", "year") else list(pool.get((fact.slot, _shape(fact.answer)), []))
    rng.shuffle(others)
    for value in others:
        offer(value)
    for _ in range(200):
        if len(picked) == 3:
            break
        offer(fact.value.decoy())
    if len(picked) < 3:
        raise RuntimeError(f"could not invent distractors for {fact.answer!r}")
    options = [fact.answer, *picked]
    rng.shuffle(options)
    return options
