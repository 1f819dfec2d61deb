"""The labelled answers the critic is measured on, made from a natural set's questions.

For each question whose evidence is a sentence or a list item (table rows are left out: answers
are prose), three faithful answer sentences and up to four fabricated ones:
- faithful: the evidence as written (``taken``); the evidence reported (``reported``: "As the
  document puts it, ..."); a short answer naming the question (``short``);
- fabricated: the answer changed to one of the question's wrong options (``swapped``,
  ``swapped-reported``, ``swapped-short``: another name, date or number of the same kind; the wrong
  option sometimes occurs elsewhere in the same document, which is recorded as ``in_document``),
  and another number of the evidence changed by one digit (``nudged``).

This module shares nothing with the critic (``app/chat/critic.py``): no import, no pattern, no
word list; it edits strings with ``str`` methods only (``tests/test_critic.py`` checks).
"""

from __future__ import annotations

import random

from pydantic import BaseModel, Field

from app.bench.natural.models import NaturalQuestion, NaturalSet

FAITHFUL = ("taken", "reported", "short")
FABRICATED = ("swapped", "swapped-reported", "swapped-short", "nudged")


class LabelledAnswer(BaseModel):
    doc_id: str
    question: str
    sentence: str
    fabricated: bool
    how: str = Field(description="How it was made (one of FAITHFUL or FABRICATED).")
    in_document: bool = Field(False, description="A fabricated value that occurs elsewhere in the document.")


class LabelledSet(BaseModel):
    name: str
    documents: dict[str, str] = Field(description="Document id -> its text (the passages).")
    answers: list[LabelledAnswer]


def _clean(evidence: str) -> str:
    text = evidence.replace("**", "").strip()
    while text[:1] in "-*+ ":
        text = text[1:]
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


def _named_mid_sentence(word: str, document: str) -> bool:
    """Whether ``document`` writes ``word`` capitalised after a lower-case word (so it is a name)."""
    at = document.find(" " + word)
    while at > 0:
        if document[at - 1].islower() or document[at - 1] == ",":
            return True
        at = document.find(" " + word, at + 1)
    return False


def _reported(sentence: str, document: str, entities: list[str]) -> str:
    first = sentence.split(" ", 1)[0].strip(",;:")
    name = (first == "I" or first.startswith("I'") or any(e.split(" ", 1)[0] == first for e in entities)
            or _named_mid_sentence(first, document))
    lowered = first[:1].lower() + first[1:]
    return "As the document puts it, " + (sentence if name else lowered + sentence[len(first):])


def _short(q: NaturalQuestion, answer: str) -> str:
    return f'To the question "{q.question.rstrip("?")}", the answer is {answer}.'


def _nudged(sentence: str, answer: str, rng: random.Random) -> str | None:
    """``sentence`` with one digit of a number other than the answer changed, or None."""
    start = sentence.find(answer)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(sentence):
        if sentence[i] in "0123456789" and not (start <= i < start + len(answer)):
            j = i
            while j < len(sentence) and (sentence[j] in "0123456789" or sentence[j] in ",." and
                                         j + 1 < len(sentence) and sentence[j + 1] in "0123456789"):
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    if not spans:
        return None
    begin, stop = rng.choice(spans)
    digits = [k for k in range(begin, stop) if sentence[k] in "0123456789"]
    at = digits[-1] if len(digits) > 1 else digits[0]
    new = str((int(sentence[at]) + rng.randint(1, 8)) % 10)
    if at == digits[0] and new == "0":
        new = "9"
    return sentence[:at] + new + sentence[at + 1:]


def build(natural: NaturalSet, seed: int = 0) -> LabelledSet:
    """The labelled answers for every usable question of ``natural``."""
    rng = random.Random(seed)
    documents = {d.id: d.text for d in natural.documents}
    entities = {d.id: d.entities for d in natural.documents}
    out: list[LabelledAnswer] = []
    for q in natural.questions:
        if q.evidence.lstrip().startswith("|") or q.answer not in q.evidence:
            continue
        text = documents[q.doc_id]
        sentence = _clean(q.evidence)
        if q.answer not in sentence:
            continue
        wrong = [o for o in q.options if o != q.answer and o.lower() not in {a.lower() for a in q.aliases}]
        rng.shuffle(wrong)

        def add(answer: str, fabricated: bool, how: str, value: str = "",
                q: NaturalQuestion = q, text: str = text) -> None:
            out.append(LabelledAnswer(doc_id=q.doc_id, question=q.question, sentence=answer,
                                      fabricated=fabricated, how=how,
                                      in_document=bool(value) and value in text))

        add(sentence, False, "taken")
        add(_reported(sentence, text, entities[q.doc_id]), False, "reported")
        add(_short(q, q.answer), False, "short")
        for how, other in zip(("swapped", "swapped-reported", "swapped-short"), wrong, strict=False):
            changed = sentence.replace(q.answer, other, 1)
            if how == "swapped-reported":
                changed = _reported(changed, text, entities[q.doc_id])
            elif how == "swapped-short":
                changed = _short(q, other)
            add(changed, True, how, other)
        nudged = _nudged(sentence, q.answer, rng)
        if nudged is not None and nudged != sentence:
            add(nudged, True, "nudged")
    return LabelledSet(name=natural.name, documents=documents, answers=out)
