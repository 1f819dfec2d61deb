"""How every bench scores a free-text answer (app/bench/scoring.py): case, punctuation, articles
and digit separators ignored; exact means the first line is the answer or a short sentence ending
in it; contains matches whole words only."""

from __future__ import annotations

from app.bench.scoring import contains, exact_match, normalize


def test_exact_match_reads_the_first_line_loosely() -> None:
    assert exact_match("Stikecaend.\nIt is a town.", "the Stikecaend")
    # One rule for every bench (it was two): a short sentence ending in the answer is exact.
    assert exact_match("He was born in 1946.", "1946")


def test_exact_match_accepts_a_short_sentence_ending_in_the_answer() -> None:
    assert exact_match("1989", "1989") and exact_match("He was born in 1989.", "1989")
    assert not exact_match("1989 or maybe 1990, it is hard to say from these sources", "1989")
    assert not exact_match("The answer is 1988.", "1989")
    assert not exact_match("In 11989.", "1989")  # whole words only
    assert not exact_match("", "1989") and not exact_match("1989", "")


def test_contains_matches_whole_words() -> None:
    assert contains("He was born in 1946.", "1946")
    assert not contains("He was born in 1946.", "194")
    assert contains("It was loudurk  zestaestox, I think", "Loudurk Zestaestox")
    assert contains("The Earth goes round the Sun.", "the Earth")
    assert contains("It travels around Earth.", "the Earth")  # the article is optional
    assert not contains("Parisian cafés", "Paris")


def test_numbers_match_with_or_without_separators() -> None:
    assert normalize("48,559 people") == "48559 people"
    assert contains("About 12,345 kg.", "12345 kg")
    assert contains("It costs 3.50 crowns.", "3.50 crowns")  # a decimal point is not a separator
