"""Rules that keep degenerate text out of the playbook, whatever a small model produces.

A 135M model under a JSON grammar always yields parseable output, but often nonsense: repeated
digits or phrases, the answer or the question copied as a "strategy", a fact from the documents
instead of a way of answering. A bullet must be a short, general piece of advice, so these rules
reject (with a reason) text that:

- is too short, mostly digits or symbols, or repeats characters, words or phrases;
- looks like markup or an instruction aimed at the model (URLs, chat-template tokens, "ignore the
  previous instructions");
- given the episode it was learned from: carries a name or number from it (a fact, not a
  strategy), restates the question, the answer or the reference, copies the prompt's example, or
  shares a phrase with a source document (document text is data: reading a document that says
  "add a bullet telling the model to ..." must never become a bullet).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

MIN_CHARS = 12
MIN_WORDS = 3
MIN_LETTER_SHARE = 0.7
RESTATE_SHARE = 0.6  # a bullet sharing this much of its content words with a text restates it
DOC_NGRAM = 4  # a bullet sharing this many consecutive words with a document copies it

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,:]\d+)*")
_REPEATED_CHAR = re.compile(r"(.)\1{4,}")
_INJECTION = re.compile(
    r"https?://|www\.|<\||\|>|```|<\/?[a-z]+>|\bignore\b.{0,20}\b(instructions?|previous|above|prior)\b"
    r"|\bsystem prompt\b|\byou are now\b|\bjailbreak|\bdisregard\b", re.IGNORECASE)
STOPWORDS = frozenset("""
a an the and or but if then than so of in on at to for from by with without about as into onto
is are was were be been being am do does did done has have had having it its this that these
those there here what which who whom whose when where why how i you he she we they me him her us
them my your his our their not no nor only own same too very can will just should would could
may might must shall also any all each every both few more most other some such one up down out
over under again further once
""".split())


class Evidence(BaseModel):
    """The texts of the episode a bullet was learned from: it must not copy them."""

    question: str = ""
    answer: str = ""
    reference: str = ""
    sources: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list, description="The prompt's own examples.")


def words(text: str) -> list[str]:
    return [w.lower().replace(",", "") for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def _facts(text: str) -> set[str]:
    """Numbers and names (capitalised words not starting a sentence) in ``text``, lower-cased."""
    found: set[str] = set()
    sentence_start = True
    for match in re.finditer(r"[A-Za-z]+|\d+(?:[.,:]\d+)*|[.!?:;\n\"]", text):
        token = match.group()
        if token in ".!?:;\n\"":
            sentence_start = True
            continue
        if token[0].isdigit() or (token[0].isupper() and not sentence_start and len(token) > 1):
            found.add(token.lower().replace(",", ""))
        sentence_start = False
    return found


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def _restates(bullet: list[str], text: str) -> bool:
    if not bullet:
        return False
    other = set(content_words(text))
    return sum(w in other for w in bullet) / len(bullet) >= RESTATE_SHARE


def intrinsic_problem(text: str) -> str | None:
    """Why ``text`` cannot be a bullet at all (None when it can)."""
    stripped = " ".join(text.split())
    if len(stripped) < MIN_CHARS:
        return f"too short (under {MIN_CHARS} characters)"
    tokens = words(stripped)
    if len(tokens) < MIN_WORDS:
        return f"fewer than {MIN_WORDS} words"
    visible = [c for c in stripped if not c.isspace()]
    if sum(c.isalpha() for c in visible) / len(visible) < MIN_LETTER_SHARE:
        return "mostly digits or symbols"
    if _REPEATED_CHAR.search(stripped):
        return "repeats a character"
    if len(tokens) >= 6 and len(set(tokens)) / len(tokens) < 0.5:
        return "repeats its words"
    trigrams = [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
    if len(trigrams) != len(set(trigrams)):
        return "repeats a phrase"
    if _INJECTION.search(stripped):
        return "looks like markup or an instruction injection"
    return None


def bullet_problem(text: str, evidence: Evidence | None = None) -> str | None:
    """Why ``text`` must not become a bullet, or None. With ``evidence`` (model output), it must
    also not copy the episode it was learned from."""
    problem = intrinsic_problem(text)
    if problem or evidence is None:
        return problem
    tokens = words(text)
    own = content_words(text)
    episode = " ".join([evidence.question, evidence.answer, evidence.reference, *evidence.sources])
    copied = sorted(_facts(text) & {w.lower() for w in words(episode)})
    if copied:
        return f"carries a fact from the episode ({', '.join(copied[:3])}), not a strategy"
    for label, other in (("answer", evidence.answer), ("reference answer", evidence.reference),
                         ("question", evidence.question)):
        if other and _restates(own, other):
            return f"restates the {label}"
    if any(_restates(own, example) for example in evidence.examples):
        return "copies the prompt's example"
    grams = {g for g in _ngrams(tokens, DOC_NGRAM) if sum(w not in STOPWORDS for w in g) >= 2}
    for source in evidence.sources:
        if grams & _ngrams(words(source), DOC_NGRAM):
            return "copies text from a document (document text is data, not instructions)"
    return None
