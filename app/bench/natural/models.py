"""What a natural set is made of, and the rules every question in it obeys.

The pydantic models are shared by the generator and by the hand-written set's loader
(``app/bench/handwritten_set.py``), and so is ``problems``: both sets are held to the same rules.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field

MAX_ANSWER_WORDS = 6
COPIED_RUN = 4  # a question may share no run of this many words with its document
# What answering takes. "reference": the evidence does not name what the question names ("she",
# "the company", "that year" or the context carries it); "table"/"list": the answer is in a table
# row or list item; otherwise where the answer sits in its sentence.
SKILLS = ("reference", "table", "list", "mid-sentence", "sentence-end")


class NaturalDoc(BaseModel):
    """One document, exactly as it is written to disk."""

    id: str
    genre: str
    title: str
    text: str
    entities: list[str] = Field(default_factory=list, description="The names it introduces.")

    @property
    def file_name(self) -> str:
        return f"{self.id}.md"


class NaturalQuestion(BaseModel):
    """A question about one document, with its evidence and four options."""

    id: str
    doc_id: str
    question: str
    answer: str = Field(description="The canonical short answer, spelled as written.")
    aliases: list[str] = Field(default_factory=list, description="Other acceptable short answers.")
    kind: str = Field(description="Answer category (person, date, quantity...); distractors are drawn within it.")
    evidence: str = Field(description="The verbatim sentence, list item or table row holding the answer.")
    options: list[str] = Field(description="Four shuffled choices, one of them right.")
    skill: str = Field(default="", description="What answering takes (one of SKILLS); generated sets only.")


class NaturalSet(BaseModel):
    """Documents and the questions about them; ``seed`` is None for a set written by hand."""

    name: str = "natural"
    seed: int | None = None
    documents: list[NaturalDoc]
    questions: list[NaturalQuestion]

    def write(self, folder: Path) -> list[Path]:
        """Write each document to ``folder``/its file name; returns the files."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for doc in self.documents:
            path = folder / doc.file_name
            path.write_text(doc.text, encoding="utf-8")
            paths.append(path)
        return paths

    def write_questions(self, path: Path) -> None:
        """Write the questions as JSON lines."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(q.model_dump_json() + "\n" for q in self.questions), encoding="utf-8")

    def document(self, doc_id: str) -> NaturalDoc:
        return next(d for d in self.documents if d.id == doc_id)


_NOT_WORD = re.compile(r"[^\w\s]")


def words(text: str) -> list[str]:
    """Lowercased words with every punctuation mark read as a space, so "2.3" is two words:
    the strictest reading of "ignoring punctuation"."""
    return _NOT_WORD.sub(" ", text.lower()).split()


def word_count(text: str) -> int:
    """Words as a reader counts them: whitespace-separated, markup such as "|" and "---" aside."""
    return sum(1 for w in text.split() if any(ch.isalnum() for ch in w))


def _grams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def copied_run(question: str, text: str, n: int = COPIED_RUN) -> str | None:
    """A run of ``n`` words the question shares with ``text``, if there is one."""
    shared = _grams(words(question), n) & _grams(words(text), n)
    return " ".join(min(shared)) if shared else None


def mentions(text: str, phrase: str) -> bool:
    """Whether ``phrase``'s words stand together, in order, among ``text``'s words."""
    needle, hay = words(phrase), words(text)
    return bool(needle) and any(hay[i:i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def _whole(span: str, text: str) -> bool:
    """Whether ``span`` occurs in ``text`` without cutting a word or number in two."""
    start = text.find(span)
    while start >= 0:
        before = text[start - 1] if start else " "
        end = start + len(span)
        after = text[end] if end < len(text) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = text.find(span, start + 1)
    return False


def problems(q: NaturalQuestion, text: str) -> list[str]:
    """Every rule ``q`` breaks against its document's ``text`` (empty when it is sound)."""
    found = []
    if not q.answer.strip():
        return ["the answer is empty"]
    if q.evidence not in text:
        found.append("evidence absent from its document")
    if q.answer not in q.evidence:
        found.append(f"answer {q.answer!r} missing from its evidence")
    elif not _whole(q.answer, q.evidence):
        found.append(f"the answer {q.answer!r} cuts a word of the evidence in two")
    for accepted in [q.answer, *q.aliases]:
        if len(accepted.split()) > MAX_ANSWER_WORDS:
            found.append(f"{accepted!r} is longer than {MAX_ANSWER_WORDS} words")
        if mentions(q.question, accepted):
            found.append(f"the question gives away {accepted!r}")
    if len(q.options) != 4 or len({o.strip().lower() for o in q.options}) != 4:
        found.append("the options are not four distinct entries")
    if q.options.count(q.answer) != 1:
        found.append(f"options hold the answer {q.options.count(q.answer)} times, not once")
    accepted_lower = {a.lower() for a in q.aliases}
    if any(o.lower() in accepted_lower for o in q.options if o != q.answer):
        found.append("a distractor is one of the accepted answers")
    run = copied_run(q.question, text)
    if run:
        found.append(f"question repeats {run!r} word for word from its document")
    if not q.question.rstrip().endswith("?"):
        found.append("the question does not end in a question mark")
    return found
