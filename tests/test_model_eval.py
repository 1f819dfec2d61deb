"""The bench's scoring rules: ties count as wrong, answers compare without case, punctuation and
articles, and 'contains' matches whole words only."""

from __future__ import annotations

from app.model_eval import contains, exact_match, rank_accuracy


def test_rank_accuracy_needs_a_strict_winner() -> None:
    scores = [[-1.0, -3.0, -2.0], [-2.0, -2.0, -5.0], [-4.0, -1.0, -3.0]]
    assert rank_accuracy(scores, [0, 0, 0]) == [True, False, False]


def test_exact_match_reads_the_first_line_loosely() -> None:
    assert exact_match("the Stikecaend", "Stikecaend.\nIt is a town.")
    assert not exact_match("1946", "He was born in 1946.")


def test_contains_matches_whole_words() -> None:
    assert contains("1946", "He was born in 1946.")
    assert not contains("194", "He was born in 1946.")
    assert contains("Loudurk Zestaestox", "It was loudurk  zestaestox, I think")
