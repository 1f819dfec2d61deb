"""Accept-if-not-worse: a delta is kept only when replaying episodes with it scores no lower.

A small model produces parseable nonsense, and the rules cannot catch every bad strategy, so each
candidate playbook is tried: the same questions (recent episodes whose right answer is known, or
training pairs) are answered with the current playbook and with the candidate, greedily, and
scored against what is known to be right. The candidate is kept only when its mean score is at
least the current one's plus ``min_gain``; the figures are logged with the delta either way.

Scoring is deterministic: the share of the reference's key words (content words and numbers) that
the answer contains. An episode known only to be wrong (a thumbs-down without a correction) scores
0 while the answer stays the rejected one and 0.5 once it changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from engines.ace.rules import content_words, words

SAME_ANSWER = 0.9


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def key_words(text: str) -> set[str]:
    found = content_words(text) or words(text)
    return {_stem(w) for w in found}


def answer_score(answer: str, reference: str) -> float:
    """Share of the reference's key words found in the answer (1.0: all of them)."""
    wanted = key_words(reference)
    if not wanted:
        return 0.0
    said = {_stem(w) for w in words(answer)}
    return len(wanted & said) / len(wanted)


def missing_words(answer: str, reference: str) -> list[str]:
    """The reference's key words the answer lacks, in the reference's order."""
    said = {_stem(w) for w in words(answer)}
    out: list[str] = []
    for word in content_words(reference) or words(reference):
        if _stem(word) not in said and word not in out:
            out.append(word)
    return out


class ReplayCase(BaseModel):
    """A question and what is known about its right answer."""

    question: str
    reference: str | None = Field(None, description="The right answer (correction, reference).")
    rejected: str | None = Field(None, description="An answer the person rated down.")

    def score(self, answer: str) -> float:
        if self.reference:
            return answer_score(answer, self.reference)
        if self.rejected is None:
            return 0.0
        same = min(answer_score(answer, self.rejected), answer_score(self.rejected, answer))
        return 0.0 if same >= SAME_ANSWER else 0.5


class CaseFigures(BaseModel):
    question: str
    before: float
    after: float
    answer_after: str


class GuardReport(BaseModel):
    cases: list[CaseFigures]
    before: float
    after: float
    min_gain: float
    accepted: bool
    seconds: float

    def summary(self) -> str:
        verdict = "kept" if self.accepted else "rejected"
        return (f"replayed {len(self.cases)} case(s): mean score {self.before:.3f} without the "
                f"delta, {self.after:.3f} with it: {verdict}")


def check(cases: list[ReplayCase], answer_before: Callable[[str], str],
          answer_after: Callable[[str], str], min_gain: float = 0.0) -> GuardReport:
    """Replay ``cases`` with the current playbook and the candidate and compare the mean scores."""
    started = time.perf_counter()
    figures = []
    for case in cases:
        after = answer_after(case.question)
        figures.append(CaseFigures(question=case.question, before=case.score(answer_before(case.question)),
                                   after=case.score(after), answer_after=after[:300]))
    before = sum(f.before for f in figures) / len(figures) if figures else 0.0
    after = sum(f.after for f in figures) / len(figures) if figures else 0.0
    accepted = bool(figures) and after >= before + min_gain - 1e-9
    return GuardReport(cases=figures, before=round(before, 4), after=round(after, 4),
                       min_gain=min_gain, accepted=accepted,
                       seconds=round(time.perf_counter() - started, 3))
