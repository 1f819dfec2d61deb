"""What happens to an answer the critic flagged: it is delivered as it is, without the flagged
sentences (``drop``), or answered once more from the supported content (``regenerate``).

A regeneration is one second greedy generation whose prompt holds the passages the answer was
given, the question and only the sentences the critic found supported ("restate these"); the
critic checks the new answer too, and whatever it still flags is dropped: an answer is never
regenerated twice. When nothing supported is left, the answer says so instead of guessing.
The draft, what was dropped and whether it was regenerated are kept (``meta["revision"]``) and
shown under the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from app.chat.critic import CriticReport, SentenceVerdict
from engines.generation import ChatMessage

RevisionMode = Literal["off", "drop", "regenerate"]
NOTHING_SUPPORTED = "No source I was given supports an answer to this."
REGENERATE_SYSTEM = ("You answer only from the passages you are given. Use only facts the passages "
                     "state, with their names and numbers exactly as written. Do not add anything.")


class Revision(BaseModel):
    """What the critic's flags changed in an answer (stored as ``meta["revision"]``)."""

    mode: RevisionMode
    draft: str = Field(description="The answer as first generated (what streamed).")
    draft_unsupported: int = Field(description="Sentences of the draft the critic flagged.")
    regenerated: bool = Field(False, description="A second generation replaced the draft (at most one).")
    regenerations: int = Field(0, description="Second generations made for this answer: 0 or 1.")
    note: str = ""
    dropped: list[SentenceVerdict] = Field(default_factory=list,
                                           description="Sentences left out of the delivered answer, with why.")
    seconds: float = 0.0

    def line(self) -> str:
        """The flag line under the answer: what was changed, in words."""
        n = len(self.dropped)
        removed = f"{n} unsupported sentence{'' if n == 1 else 's'} dropped"
        if self.regenerated:
            return (f"Regenerated from the supported content ({self.draft_unsupported} unsupported "
                    f"sentence{'' if self.draft_unsupported == 1 else 's'} in the draft)"
                    + (f"; {removed}" if n else ""))
        return f"Revised: {removed}"


def without(answer: str, dropped: list[SentenceVerdict], kept: list[SentenceVerdict]) -> str:
    """``answer`` with the ``dropped`` sentences taken out, its layout kept where each one occurs
    as written; otherwise the ``kept`` sentences joined. ``NOTHING_SUPPORTED`` when none is kept."""
    if not kept:
        return NOTHING_SUPPORTED
    text = answer
    for verdict in dropped:
        if verdict.sentence not in text:
            return " ".join(v.sentence for v in kept)
        text = text.replace(verdict.sentence, "", 1)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(lines).strip() or " ".join(v.sentence for v in kept)


def regenerate_messages(question: str, passages: list[str], supported: list[str]) -> list[ChatMessage]:
    """The second generation's prompt: the passages, the question and the checked sentences only."""
    shown = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
    checked = (" ".join(supported) if supported else "")
    ask = (f"These sentences are supported by the passages: {checked}\n\nRestate them as the answer "
           "to the question, adding nothing they do not say." if supported else
           "Answer the question in one sentence, with a fact the passages state.")
    user = f"Passages:\n{shown}\n\nQuestion: {question}\n\n{ask}"
    return [ChatMessage(role="system", content=REGENERATE_SYSTEM), ChatMessage(role="user", content=user)]


def revise(answer: str, report: CriticReport, question: str, passages: list[str], mode: RevisionMode,
           generate: Callable[[list[ChatMessage]], str], criticise: Callable[[str], CriticReport],
           ) -> tuple[str, CriticReport, Revision | None]:
    """(delivered answer, the critic's report on it, the revision or None when nothing changed).
    ``generate``: one greedy generation (called at most once); ``criticise``: the critic on a text."""
    flagged = report.flagged
    if mode == "off" or not flagged:
        return answer, report, None
    started = time.perf_counter()
    supported = [v for v in report.sentences if v.supported]
    revision = Revision(mode=mode, draft=answer, draft_unsupported=len(flagged))
    final, checked = answer, report
    if mode == "regenerate":
        redone = generate(regenerate_messages(question, passages, [v.sentence for v in supported])).strip()
        revision.regenerations = 1
        again = criticise(redone) if redone else None
        if again is not None and (any(v.supported for v in again.sentences) or not supported):
            final, checked, revision.regenerated = redone, again, True
        else:
            revision.note = "the regenerated answer had no supported sentence: the draft's supported ones were kept"
    kept = [v for v in checked.sentences if v.supported]
    revision.dropped = checked.flagged
    if revision.dropped:
        final = without(final, revision.dropped, kept)
        checked = checked.model_copy(update={"sentences": kept, "unsupported": 0})
    revision.seconds = round(time.perf_counter() - started, 3)
    return final, checked, revision
