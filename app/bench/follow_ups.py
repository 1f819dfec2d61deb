"""Follow-up questions for ``engram bench hmst``: questions that need the conversation.

Two questions of a set about the same document that name the same subject ("How big is
Mirvale's population?", "What date is the Tevdru Regatta in Mirvale?") become a first question
and a follow-up that leaves the subject to the conversation ("And what date is the Tevdru Regatta
in it?"). The follow-up is asked in the first question's conversation and scored like any other
question (its accepted answers are the second question's).
"""

from __future__ import annotations

import re

from pydantic import BaseModel

_NAME_RUN = re.compile(r"(?:[A-Z][\w-]+)(?: [A-Z][\w-]+)*")
_AFTER_IT = frozenset("before after now first in on at for to with from by of been be is was has have had "
                      "do does did".split())


class FollowUp(BaseModel):
    first: str
    question: str
    original: str
    subject: str


def subjects(question: str) -> list[str]:
    """Runs of capitalised words in ``question`` after its first word, longest first."""
    body = question.split(" ", 1)[1] if " " in question else ""
    return sorted({m.removesuffix("'s") for m in _NAME_RUN.findall(body)}, key=len, reverse=True)


def pronoun_form(question: str, subject: str) -> str | None:
    """``question`` with ``subject`` replaced by "it" ("its" for a possessive), as "And ...?";
    None when the subject is not there once."""
    pattern = re.compile(rf"\b(?:the )?{re.escape(subject)}('s)?\b", re.IGNORECASE)
    found = list(pattern.finditer(question))
    if len(found) != 1:
        return None
    after = [w.strip("?.,!") for w in question[found[0].end():].split(" ", 2)[1:2]]
    if not found[0].group(1) and after and after[0][:1].islower() and after[0] not in _AFTER_IT:
        return None  # the name used as a modifier ("the Selpri Bridge closure"): no plain pronoun
    replaced = pattern.sub(lambda m: "its" if m.group(1) else "it", question)
    first, rest = replaced.split(" ", 1)
    if first in ("it", "its"):
        return None  # "It ..." at the start reads as a new question, not a follow-up
    return f"And {first[:1].lower()}{first[1:]} {rest}"


def follow_ups(pairs: list[tuple[str, str]], limit: int) -> list[FollowUp]:
    """Up to ``limit`` follow-ups from consecutive questions ``(document, question)`` about one
    document that share a subject; each question is used at most once as a follow-up."""
    out: list[FollowUp] = []
    for (doc_a, first), (doc_b, second) in zip(pairs, pairs[1:], strict=False):
        if doc_a != doc_b or len(out) >= limit:
            continue
        shared = [s for s in subjects(second) if s in subjects(first)]
        rewritten = pronoun_form(second, shared[0]) if shared else None
        if rewritten:
            out.append(FollowUp(first=first, question=rewritten, original=second, subject=shared[0]))
    return out
