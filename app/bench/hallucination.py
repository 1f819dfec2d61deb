"""The bench's judge of a delivered answer: which of its sentences the source document does not
support, from the bench's ground truth, not from the critic that chose the answer.

The evidence is the whole document the question was written from (not the passages retrieval
gave the answer) and the conversation's questions. A sentence is unsupported when:
- it gives one of the question's wrong options and none of its accepted answers (the set's ground
  truth: another name, date or quantity of the same kind);
- it holds a number (digits, separators ignored) the document and the questions never write;
- it holds a capitalised word, not the sentence's first, that the document and the questions
  never write (a name the source does not give).

Like ``app/bench/critic_set.py``, this shares nothing with the critic (``app/chat/critic.py``): no
import, no pattern, no word list (``tests/test_critic.py`` checks). It is stricter than the
critic in one way (the wrong options) and looser in another (single words, not name phrases).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from app.bench.scoring import contains

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?")
_WORDS = re.compile(r"[A-Za-z][A-Za-z'-]*")


class Unsupported(BaseModel):
    sentence: str
    why: str


class Judged(BaseModel):
    unsupported: list[Unsupported] = Field(default_factory=list)

    @property
    def hallucinated(self) -> bool:
        return bool(self.unsupported)


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "").removesuffix(".0") for m in _DIGITS.findall(text)}


def _why(sentence: str, source: str, source_words: set[str], accepted: list[str], wrong: list[str]) -> str:
    given = [w for w in wrong if contains(sentence, w)]
    if given and not any(contains(sentence, a) for a in accepted):
        return f"gives the wrong option {given[0]!r}"
    missing = sorted(_numbers(sentence) - _numbers(source))
    if missing:
        return f"the number {missing[0]} is not in the document"
    words = _WORDS.findall(sentence.replace("*", ""))
    for word in words[1:]:
        if word[0].isupper() and len(word) > 1 and word.lower().removesuffix("'s") not in source_words:
            return f"{word!r} is not in the document"
    return ""


def judge(answer: str, document: str, questions: list[str], accepted: list[str],
          options: list[str]) -> Judged:
    """The sentences of ``answer`` that ``document`` (with the conversation's ``questions``)
    does not support; ``options`` less ``accepted`` are the question's wrong answers."""
    source = "\n".join([document, *questions])
    source_words = {w.lower().removesuffix("'s") for w in _WORDS.findall(source)}
    wrong = [o for o in options if not any(contains(o, a) and contains(a, o) for a in accepted)]
    out = Judged()
    for sentence in (s.strip() for s in _SPLIT.split(answer)):
        why = _why(sentence, source, source_words, accepted, wrong) if sentence else ""
        if why:
            out.unsupported.append(Unsupported(sentence=sentence, why=why))
    return out
