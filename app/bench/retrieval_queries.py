"""The retrieval bench's corpus and queries, chosen without the retrieval code.

The corpus is Python's own documentation topics (``pydoc_data.topics``, PSF license, in every
CPython): each topic one document. The topics overlap (``compound`` holds ``if``, ``while``,
``try``...; ``specialnames`` holds ``customization``...; ``if`` and ``else`` are one text), so a
query is right when it finds its target *or* a topic that holds the same text: the accepted
topics are worked out from the texts themselves, never from a ranking.

Four kinds of query, each built here by rules that know nothing of BM25 or embeddings (importing
the retrieval code to choose queries would let it choose queries it is good at):

- ``identifier``: a name that appears in exactly one topic (``sys.exc_info``, ``__getattr__``);
- ``code``: near-duplicate notes that differ only in a code ("Sentinel code zq0123x ...");
- ``keyword``: the three most distinctive words (TF-IDF against the other topics) of a paragraph;
- ``paraphrase``: questions written by hand without the topics' own terms. Two sets: the
  held-out ``data/retrieval/paraphrases.jsonl`` (64 questions, never tuned on) and the dev set
  ``data/retrieval/paraphrases_dev.jsonl`` (questions mostly on other topics: the match statement,
  class creation, code and method objects...), the only one retrieval settings are chosen on.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

QueryKind = Literal["identifier", "code", "keyword", "paraphrase"]
KINDS: tuple[QueryKind, ...] = ("identifier", "code", "keyword", "paraphrase")
ParaphraseSet = Literal["held-out", "dev"]
_DATA = Path(__file__).resolve().parent / "data" / "retrieval"
PARAPHRASES = _DATA / "paraphrases.jsonl"
PARAPHRASE_SETS: dict[str, Path] = {"held-out": PARAPHRASES, "dev": _DATA / "paraphrases_dev.jsonl"}
NOTE = "Sentinel code {code} marks this note."
KEYWORDS_PER_QUERY = 3
HOLDS_SHARE = 0.8
"""A topic holds another when this share of the other's paragraph text appears in it verbatim."""

_NAME = re.compile(r"(?<![\w.])[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_WORD = re.compile(r"\b[a-z]{4,}\b")
_STOPWORDS = frozenset("""
about above after again also although among another because been before being below between
both cannot could does doing down during each either else even every following from further
given have having here however into itself just like made make many might more most much must
need never only other otherwise over same several should since some such than that their them
themselves then there therefore these they this those though through thus under until upon used
uses using very well were what when where whether which while will with within without would
your example note
""".split())


class Query(BaseModel):
    """One query of the bench: what is typed, and which documents answer it."""

    kind: QueryKind
    text: str
    target: str = Field(description="The document the query was written for (topic key or note name).")
    accepted: list[str] = Field(description="Documents that answer it: the target and any topic "
                                "holding the same text.")


class Paraphrase(BaseModel):
    """One hand-written line of paraphrases.jsonl."""

    question: str
    topic: str
    also: list[str] = Field(default_factory=list, description="Other topics that answer it just "
                            "as well (beyond those holding the target's text, found automatically).")


def load_topics(limit: int | None = None) -> dict[str, str]:
    """Topic key -> text, in key order; ``limit`` keeps the first topics (a small test slice)."""
    from pydoc_data.topics import topics

    keys = sorted(topics)[:limit] if limit else sorted(topics)
    return {key: topics[key] for key in keys}


def paragraphs(text: str, min_chars: int = 40) -> list[str]:
    """Blank-line separated blocks of at least ``min_chars`` characters, stripped."""
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= min_chars]


def holders(topics: dict[str, str], key: str) -> list[str]:
    """``key`` and the topics that hold most of its text verbatim (supersets and copies)."""
    parts = paragraphs(topics[key]) or [topics[key].strip()]
    total = sum(len(p) for p in parts)
    found = [key]
    for other, text in topics.items():
        if other != key and sum(len(p) for p in parts if p in text) >= HOLDS_SHARE * total:
            found.append(other)
    return found


def _round_robin(groups: dict[str, list[Query]], n: int, rng: random.Random) -> list[Query]:
    """Up to ``n`` queries spread across targets: one from each (in shuffled order), then again."""
    pools = [rng.sample(qs, len(qs)) for qs in groups.values() if qs]
    rng.shuffle(pools)
    picked: list[Query] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def _looks_like_name(token: str) -> bool:
    """A dunder, snake_case, dotted, CamelCase or letters-with-digits name; not a plain word."""
    if len(token) < 4:
        return False
    if "." in token:
        return all(len(p) >= 2 for p in token.split("."))
    return ("_" in token.strip("_") or token.startswith("__")
            or bool(re.search(r"[a-z][A-Z]", token))
            or (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)))


def identifier_queries(topics: dict[str, str], n: int, seed: int) -> list[Query]:
    """Names found (as any substring) in exactly one topic; that topic is the only answer."""
    groups: dict[str, list[Query]] = {}
    for key, text in topics.items():
        names = sorted({t for t in _NAME.findall(text) if _looks_like_name(t)})
        unique = [t for t in names if sum(t in other for other in topics.values()) == 1]
        groups[key] = [Query(kind="identifier", text=t, target=key, accepted=[key]) for t in unique]
    return _round_robin(groups, n, random.Random(seed))


def _idf(topics: dict[str, str]) -> dict[str, float]:
    df = Counter(w for text in topics.values() for w in set(_WORD.findall(text.lower())))
    return {w: math.log(len(topics) / d) for w, d in df.items()}


def distinctive_words(paragraph: str, idf: dict[str, float], k: int = KEYWORDS_PER_QUERY) -> list[str]:
    """The ``k`` words of the paragraph with the highest TF-IDF (ties by the word), in that order."""
    tf = Counter(w for w in _WORD.findall(paragraph.lower()) if w not in _STOPWORDS)
    scored = sorted(((-c * idf.get(w, 0.0), w) for w, c in tf.items() if idf.get(w, 0.0) > 0))
    return [w for _, w in scored[:k]]


def keyword_queries(topics: dict[str, str], n: int, seed: int) -> list[Query]:
    """Three distinctive words of a prose paragraph (not grammar or code); the answers are the
    topics that hold that paragraph."""
    idf = _idf(topics)
    groups: dict[str, list[Query]] = {}
    for key, text in topics.items():
        groups[key] = []
        for para in paragraphs(text, min_chars=200):
            if para[0].isspace() or "::=" in para:
                continue
            words = distinctive_words(para, idf)
            if len(words) == KEYWORDS_PER_QUERY:
                accepted = [k for k, t in topics.items() if para in t]
                groups[key].append(Query(kind="keyword", text=" ".join(words), target=key,
                                         accepted=accepted))
    return _round_robin(groups, n, random.Random(seed))


def read_paraphrases(path: Path = PARAPHRASES) -> list[Paraphrase]:
    """The hand-written paraphrases, one JSON object per line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Paraphrase.model_validate_json(line) for line in lines if line.strip()]


def paraphrase_queries(topics: dict[str, str], n: int, seed: int,
                       written: Iterable[Paraphrase] | None = None) -> list[Query]:
    """The hand-written questions whose topic is in the corpus (a seeded sample of ``n``)."""
    queries = [Query(kind="paraphrase", text=p.question, target=p.topic,
                     accepted=list(dict.fromkeys([*holders(topics, p.topic),
                                                  *(a for a in p.also if a in topics)])))
               for p in (read_paraphrases() if written is None else written) if p.topic in topics]
    return random.Random(seed).sample(queries, min(n, len(queries)))


def sentinel_notes(n: int, seed: int) -> dict[str, str]:
    """``n`` one-line notes that differ only in a code: note name -> text."""
    codes = [f"zq{i:04d}x" for i in random.Random(seed).sample(range(10_000), n)]
    return {f"note-{i:04d}": NOTE.format(code=code) for i, code in enumerate(codes)}


def code_queries(notes: dict[str, str], n: int, seed: int) -> list[Query]:
    """"Sentinel code <code>" for a seeded sample of the notes; each note answers only its own."""
    names = random.Random(seed).sample(sorted(notes), min(n, len(notes)))
    return [Query(kind="code", text=f"Sentinel code {notes[name].split()[2]}", target=name,
                  accepted=[name]) for name in names]


def all_queries(topics: dict[str, str], notes: dict[str, str], n: int, seed: int,
                paraphrases: ParaphraseSet = "held-out") -> dict[str, list[Query]]:
    """Up to ``n`` queries of each kind, by kind; ``paraphrases`` names the hand-written set."""
    return {"identifier": identifier_queries(topics, n, seed),
            "code": code_queries(notes, n, seed),
            "keyword": keyword_queries(topics, n, seed),
            "paraphrase": paraphrase_queries(topics, n, seed, read_paraphrases(PARAPHRASE_SETS[paraphrases]))}


def write_corpus(folder: Path, topics: dict[str, str], notes: dict[str, str]) -> None:
    """Each topic and note as its own text file, named by its key (the bench maps hits back)."""
    for sub, docs in (("topics", topics), ("notes", notes)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name, text in docs.items():
            (folder / sub / f"{name}.txt").write_text(text, encoding="utf-8")

