"""How every bench scores a free-text answer: one normalization, one exact match, one contains.

A person reads the generated answer, so that is what is scored. Case, punctuation and the
articles "a", "an", "the" are ignored; digit groups are joined ("12,345" is "12345") so a number
written with separators still counts.
"""

from __future__ import annotations

import re

_DIGIT_SEPARATOR = re.compile(r"(?<=\d)[,.'\u2009\u202f](?=\d{3}\b)")
_PUNCTUATION = re.compile(r"[^\w\s]")
_ARTICLES = frozenset({"a", "an", "the"})
EXACT_EXTRA_WORDS = 8  # "He was born in 1946." answers "1946"; a paragraph ending in it does not


def normalize(text: str) -> str:
    """Lower case, digit groups joined, punctuation to spaces, articles dropped, single spaces."""
    joined = _DIGIT_SEPARATOR.sub("", text.lower())
    return " ".join(w for w in _PUNCTUATION.sub(" ", joined).split() if w not in _ARTICLES)


def exact_match(generated: str, expected: str) -> bool:
    """The answer's first line is the expected answer, alone or as one short sentence ending in it."""
    lines = generated.strip().splitlines()
    got, want = normalize(lines[0] if lines else ""), normalize(expected)
    if not want:
        return False
    return got == want or (f" {got}".endswith(f" {want}")
                           and len(got.split()) <= len(want.split()) + EXACT_EXTRA_WORDS)


def contains(generated: str, expected: str) -> bool:
    """The expected answer appears in the generated one as whole words."""
    want = normalize(expected)
    return bool(want) and f" {want} " in f" {normalize(generated)} "
