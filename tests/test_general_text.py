"""The general text that measures forgetting is never what engines calibrate or replay on."""

from __future__ import annotations

import re

import pytest

from app.services.general_text import GeneralQuestion, background_text, general_questions, heldout_questions, heldout_text
from engines.ttt.material import BACKGROUND_PROSE_CHARS


def sentences(text: str) -> set[str]:
    return {s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6}


def test_background_and_heldout_share_no_sentence_and_no_topic() -> None:
    background, heldout = background_text(), heldout_text()
    assert not sentences(background) & sentences(heldout)
    titles = {line.strip() for line in heldout.splitlines() if line.strip() and len(line.split()) <= 5}
    assert titles and not titles & {line.strip() for line in background.splitlines()}


def test_background_opens_with_everyday_prose_as_long_as_the_engine_takes_it_to_be() -> None:
    prose = background_text()[:BACKGROUND_PROSE_CHARS]
    assert len(prose.split()) > 6000 and "def " not in prose and "::" not in prose


def test_no_general_question_is_answered_word_for_word_in_the_background() -> None:
    background = background_text().lower()
    asked = [q.question.lower().rstrip("?") for q in general_questions() + heldout_questions()]
    assert asked and not [q for q in asked if q in background]


def test_no_heldout_question_is_answered_by_a_background_sentence() -> None:
    """Replay trains on the background: a fact stated there would be shielded from forgetting."""
    background = [s.lower() for s in re.split(r"(?<=[.!?])\s+", background_text())]
    answered = []
    for q in heldout_questions():
        answer = re.sub(r"^(the|an|a|in a|in) ", "", q.answer.lower())
        words = [w for w in re.findall(r"[a-z']{4,}", q.question.lower()) if w not in {"what", "which", "does"}]
        if any(re.search(rf"\b{re.escape(answer)}\b", s) and sum(w in s for w in words) >= 2 for s in background):
            answered.append(q.question)
    assert not answered


def test_a_question_whose_answer_is_not_offered_is_refused() -> None:
    with pytest.raises(ValueError, match="not among its options"):
        GeneralQuestion(question="What colour is snow?", answer="white", options=["red", "blue"])


def test_heldout_questions_are_a_set_of_their_own() -> None:
    first, heldout = general_questions(), heldout_questions()
    assert len(heldout) >= 100 and not {q.question for q in first} & {q.question for q in heldout}
    assert len({q.question for q in heldout}) == len(heldout)
    for q in heldout:
        assert len(set(q.options)) == 4 and q.answer in q.options
    places = [q.options.index(q.answer) for q in heldout]
    assert all(places.count(k) >= len(heldout) // 5 for k in range(4))  # no favoured position
