"""Rehearsal material: a document's facts restated as questions with answers, and paraphrased.

A model trained on "Ada Quill was born in 1931." learns to continue that sentence, not to answer
"When was Ada Quill born?": it stores the sentence, not the answer to a question about it.
Training also on the same facts in question/answer form and in other word orders is the known
remedy. Everything here comes from the document's own text:

- ``extract`` (rule-based): each sentence's last informative span (a number with its unit, a
  trailing proper name, or the final noun phrase) becomes the answer, and the sentence with
  that span replaced by a wh-phrase becomes the question ("Ada Quill was born in what year?").
  The paraphrases put the answer first ("1931 is what Ada Quill was born in.") and restate the
  sentence as a key and value ("Ada Quill was born in: 1931.").

The other sources live beside it: ``engines.ttt.facts`` (every fact of real prose) and
``engines.ttt.written`` (what a chat model writes, checked against the text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUMBER_TAIL = re.compile(r"^(?P<head>.*?\b)(?P<num>\d[\d,.:]*\d|\d)(?:\s+(?P<unit>[a-z]+))?$")
_YEAR = re.compile(r"^(1[0-9]|20)\d\d$")
_ARTICLES = {"a", "an", "the"}
_DETERMINERS = _ARTICLES | {"this", "that", "these", "those", "its", "their", "his", "her", "our",
                            "my", "your", "some", "each", "every"}
_LINKS = {"in", "on", "at", "as", "of", "by", "for", "with", "every", "named", "called", "to",
          "from", "into", "near", "under", "is", "was", "are", "were", "be", "sells", "costs"}
MIN_HEAD_WORDS = 3
MAX_SENTENCE_WORDS = 40
MAX_ANSWER_WORDS = 4


@dataclass(frozen=True)
class QA:
    question: str
    answer: str


@dataclass(frozen=True)
class Cloze:
    """A sentence split into the part before its answer span, the span, and the wh-phrase."""

    head: str
    answer: str
    wh: str

    @property
    def question(self) -> str:
        text = f"{self.head} {self.wh}".strip()
        return text[0].upper() + text[1:] + "?"


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` short enough to rehearse (titles and fragments are skipped)."""
    found = []
    for block in re.split(r"\n\s*\n|\n", text):
        for sentence in SENTENCE_END.split(" ".join(block.split())):
            words = sentence.split()
            if sentence[-1:] in ".!?" and 4 <= len(words) <= MAX_SENTENCE_WORDS:
                found.append(sentence)
    return found


def cloze(sentence: str) -> Cloze | None:
    """The sentence's last informative span as the answer to a wh-question over the rest."""
    body = sentence.rstrip(".!? ").strip()
    words = body.split()
    if len(words) < MIN_HEAD_WORDS + 1:
        return None
    found = _number_span(body) or _name_span(words) or _phrase_span(words)
    if found is None:
        return None
    head, answer, wh = found
    if len(head.split()) < MIN_HEAD_WORDS or answer.lower() in head.lower():
        return None
    return Cloze(head=head, answer=answer, wh=wh)


def _number_span(body: str) -> tuple[str, str, str] | None:
    m = _NUMBER_TAIL.match(body)
    if not m:
        return None
    head, num, unit = m["head"].rstrip(), m["num"], m["unit"]
    if unit:
        return head, num, f"how many {unit}"
    if _YEAR.match(num) and head.split()[-1:] in (["in"], ["since"], ["from"], ["until"]):
        return head, num, "what year"
    return head, num, "what number"


def _name_span(words: list[str]) -> tuple[str, str, str] | None:
    """A trailing run of capitalised words that does not start the sentence."""
    n = 0
    while n < min(MAX_ANSWER_WORDS, len(words) - 1) and words[-1 - n][:1].isupper():
        n += 1
    if n == 0:
        return None
    return " ".join(words[:-n]), " ".join(words[-n:]), "what"


def _phrase_span(words: list[str]) -> tuple[str, str, str] | None:
    """The words after the last linking word (an article before them goes too)."""
    for i in range(len(words) - 2, 0, -1):
        if words[i].lower() in _LINKS | _ARTICLES:
            tail = words[i + 1:]
            if not 1 <= len(tail) <= MAX_ANSWER_WORDS:
                return None
            cut = i if words[i].lower() in _ARTICLES else i + 1
            return " ".join(words[:cut]), " ".join(tail), "what"
    return None


def paraphrases(c: Cloze) -> list[str]:
    """Two restatements: the answer first, and the sentence as a key and its value."""
    first, _, rest = c.head.partition(" ")
    head = f"{first.lower()} {rest}" if first.lower() in _DETERMINERS else c.head
    answer = c.answer[0].upper() + c.answer[1:]
    return [f"{answer} is what {head}.", f"{c.head}: {c.answer}."]


def extract(text: str) -> tuple[list[QA], list[str]]:
    """Question/answer pairs and paraphrases of every sentence the rules can split."""
    pairs, restated = [], []
    for sentence in sentences(text):
        c = cloze(sentence)
        if c is not None:
            pairs.append(QA(question=c.question, answer=c.answer))
            restated.extend(paraphrases(c))
    return pairs, restated
