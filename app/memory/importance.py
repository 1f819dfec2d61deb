"""Which sentences of a conversation are facts the person gave, and how much each matters.

The score is a few plain rules, so that every consolidated fact can say why it was kept:

- a correction typed on an answer (feedback): 1.0;
- a turn that corrects itself in words ("actually ...", "no, it is ...", "correction: ..."): 0.9;
- an answer the person confirmed (thumbs up), from no document: 0.6 (an assistant's words are
  never a fact otherwise: the thumbs up is the person vouching for it, so the critic counts it in
  full, unlike a recalled answer nobody confirmed);
- a statement: 0.3, plus 0.3 when it holds a number, plus 0.2 when it holds a name;
- a question, a request ("tell me ...", "can you ..."), small talk, or fewer than three words: 0,
  not a fact.

Sleep keeps the facts at or above ``memory.min_importance`` (default 0.5): a statement with a
number or a name, never bare chit-chat ("I am tired today": 0.3).
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from app.chat.controller import is_small_talk
from app.chat.critic import names_in, numbers_in
from app.chat.service import sentences_of
from store.conversations import MessageRow
from store.memory_facts import FactCandidate, FactKind

CORRECTION = 1.0
SELF_CORRECTION = 0.9
CONFIRMED = 0.6
STATEMENT = 0.3
NUMBER_BONUS = 0.3
NAME_BONUS = 0.2
MIN_WORDS = 3

QUESTION_WORDS = frozenset("""what which who whom whose when where why how is are was were do does did
can could would will should shall may might am have has had isn't aren't don't doesn't didn't""".split())
REQUEST_WORDS = frozenset("""tell show explain summarise summarize list give write find help please
describe translate compare remind continue draft make create let search look""".split())
_CORRECTS_ITSELF = re.compile(
    r"^(actually|correction|to correct|sorry,? i meant|i meant|no,|not quite|that's wrong|that is wrong|"
    r"wrong,|update:|it changed|it has changed)\b", re.IGNORECASE)
_WORD = re.compile(r"[\w'’]+")
_NOTE = re.compile(r"^(please\s+)?(note|remember|keep in mind|for the record|fyi)(\s+that)?\s*[:,-]?\s*",
                   re.IGNORECASE)
"""A lead-in that asks Engram to keep what follows ("Please note: ..."), not a request."""


class Scored(BaseModel):
    kind: FactKind
    importance: float
    reason: str


def score_sentence(sentence: str) -> Scored | None:
    """A sentence the person wrote, scored; None when it states nothing (a question, a request,
    small talk, a fragment)."""
    sentence = _NOTE.sub("", sentence.strip()) or sentence
    words = _WORD.findall(sentence.lower())
    if len(words) < MIN_WORDS or sentence.rstrip().endswith("?") or is_small_talk(sentence):
        return None
    if words[0] in QUESTION_WORDS or words[0] in REQUEST_WORDS:
        return None
    if _CORRECTS_ITSELF.match(sentence.strip()):
        return Scored(kind="self_correction", importance=SELF_CORRECTION, reason="the person corrected it in words")
    score, why = STATEMENT, ["a statement"]
    if numbers_in(sentence):
        score, why = score + NUMBER_BONUS, [*why, "with a number"]
    if names_in(sentence, ""):
        score, why = score + NAME_BONUS, [*why, "with a name"]
    return Scored(kind="statement", importance=round(score, 2), reason=" ".join(why))


def corrected_text(question: str, correction: str) -> str:
    """A feedback correction as a passage that reads alone: the question it answers, then it."""
    question = " ".join(question.split())
    return f"{question} Corrected answer: {correction.strip()}" if question else correction.strip()


def candidates(conversation_id: int, messages: list[MessageRow]) -> list[FactCandidate]:
    """Every fact in a conversation's turns, scored, in the order they were said."""
    found: list[FactCandidate] = []
    question = ""
    for message in messages:
        if message.role == "user":
            question = message.content
            for n, sentence in enumerate(sentences_of(message.content)):
                scored = score_sentence(sentence)
                if scored is not None:
                    found.append(FactCandidate(conversation_id=conversation_id, message_id=message.id,
                                               sentence=n, text=sentence, **scored.model_dump()))
            continue
        if message.written_by_client:
            continue
        if message.correction:
            found.append(FactCandidate(
                conversation_id=conversation_id, message_id=message.id, sentence=0, kind="correction",
                importance=CORRECTION, reason="the person corrected this answer",
                text=corrected_text(question, message.correction), subject=question))
        elif message.feedback == "up" and message.content.strip() and not any(c.cited for c in message.citations):
            found.append(FactCandidate(
                conversation_id=conversation_id, message_id=message.id, sentence=0, kind="confirmed",
                importance=CONFIRMED, reason="the person confirmed this answer (thumbs up)",
                text=f"{' '.join(question.split())} {message.content.strip()}".strip(), subject=question))
    return found


def facts_in(texts: list[str], min_importance: float) -> int:
    """How many of ``texts`` (turns the person typed) state a fact worth consolidating: sleep
    pressure from chat. A correction's text is scored as a statement, so this is a lower bound."""
    return sum(1 for text in texts if any(
        (scored := score_sentence(s)) is not None and scored.importance >= min_importance for s in sentences_of(text)))
