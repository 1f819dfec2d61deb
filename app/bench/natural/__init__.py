"""Fictional documents written like the ones people keep, with questions people would ask.

The templated set in ``app/bench/fiction.py`` states one fact per sentence, names the subject in full
and ends each sentence on its answer: the very shape the learner's rule-based question extractor
looks for, so that bench flatters the learner. These documents are encyclopedia entries, news
items, meeting minutes, email threads, product manuals, recipes, changelogs and diary entries:
several facts to a sentence, pronouns and other references, answers in the middle of sentences,
lists and tables, units and dates in several formats. Every name and number is invented, so an
answer can only come from reading the document.

Questions never copy their document (no run of four words in common) and never contain their
answer. Each names something unique to its document, so it stays answerable when a model has
learned the whole set. Each comes with three distractors of the same kind, from the same set
where it offers enough, else invented.

This package shares nothing with the learning side: it imports only the standard library,
pydantic and itself, and keeps its own words, templates and patterns (tests/test_natural_set.py
enforces it), so the benchmark cannot quietly take the shape of the learner's rules.

Modules: ``models`` (the set, its documents and questions, and the rules they obey), ``names``
and ``values`` (invented names, numbers, dates and their decoys), ``drafts`` (a document being
written), one module per genre, ``questions`` (wordings and distractors) and ``assembly``
(``generate``).
"""

from __future__ import annotations

from app.bench.natural.assembly import (
    GENRES,
    MAX_WORDS,
    MIN_WORDS,
    SIZES,
    Size,
    documents_in,
    generate,
)
from app.bench.natural.models import (
    COPIED_RUN,
    MAX_ANSWER_WORDS,
    SKILLS,
    NaturalDoc,
    NaturalQuestion,
    NaturalSet,
    copied_run,
    mentions,
    problems,
    word_count,
    words,
)
from app.bench.natural.questions import QUESTIONS_PER_DOC

__all__ = [
    "COPIED_RUN", "GENRES", "MAX_ANSWER_WORDS", "MAX_WORDS", "MIN_WORDS", "QUESTIONS_PER_DOC", "SIZES", "SKILLS",
    "NaturalDoc", "NaturalQuestion", "NaturalSet", "Size", "copied_run", "documents_in", "generate", "mentions",
    "problems", "word_count", "words",
]
