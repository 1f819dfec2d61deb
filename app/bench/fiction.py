"""Fictional documents with question/answer pairs: facts no model can know before reading them.

Learning is judged on invented people, places and products (names built from syllables, numbers
and dates drawn at random), so a correct answer can only come from the documents. Every sentence names
its subject in full, so each fact can be learned and asked about on its own. Everything is
deterministic by seed. Each question has three distractors of the same kind drawn from the same
set (other people's birth years, other towns), so a model guessing among the four options by
likelihood scores 0.25 before it learns anything.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

Size = Literal["tiny", "small", "default", "large"]
DOCS_PER_SIZE: dict[str, int] = {"tiny": 8, "small": 30, "default": 120, "large": 400}
_MIN_DOCUMENTS = 3  # one person, one town, one product

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r", "s",
           "st", "t", "th", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ie", "ou"]
_CODAS = ["", "", "l", "n", "r", "s", "th", "nd", "rk", "x"]
_PROFESSIONS = ["glassblower", "cartographer", "beekeeper", "clockmaker", "ferry pilot", "botanist",
                "locksmith", "violinist", "surveyor", "archivist", "brewer", "astronomer"]
_COLOURS = ["amber", "teal", "crimson", "ivory", "violet", "olive", "saffron", "slate"]
_PRODUCT_KINDS = ["lantern", "kettle", "drone", "loom", "compass", "bicycle", "telescope", "radio"]
_ANIMALS = ["heron", "otter", "lynx", "badger", "falcon", "tortoise", "ferret", "stag"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MAKER_KINDS = ("Works", "Foundry", "Instruments")  # documents' makers may also be a "Company"


class Fact(BaseModel):
    """One checkable statement: its sentence in the document and the question it answers."""

    slot: str = Field(description="The kind of answer (birth_year, town, ...): distractors share it.")
    sentence: str
    question: str
    answer: str
    paraphrase: str = Field(description="The same fact worded differently (for rehearsal).")


class FictionDoc(BaseModel):
    id: str
    title: str
    entity: str
    facts: list[Fact]

    @property
    def text(self) -> str:
        return f"{self.title}\n\n" + " ".join(f.sentence for f in self.facts) + "\n"

    @property
    def file_name(self) -> str:
        return f"{self.id}.txt"


class WritableDocument(Protocol):
    @property
    def file_name(self) -> str: ...

    @property
    def text(self) -> str: ...


def write_documents(documents: Sequence[WritableDocument], folder: Path) -> list[Path]:
    """Write each document into ``folder`` under its file name; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for doc in documents:
        path = folder / doc.file_name
        path.write_text(doc.text, encoding="utf-8")
        paths.append(path)
    return paths


class Question(BaseModel):
    doc_id: str
    slot: str
    question: str
    answer: str
    options: list[str] = Field(description="The answer and three distractors, shuffled.")
    sentence: str
    paraphrase: str


class FictionSet(BaseModel):
    seed: int
    documents: list[FictionDoc]
    questions: list[Question]

    def write(self, folder: Path) -> list[Path]:
        """Write each document as a .txt file; returns the files."""
        return write_documents(self.documents, folder)

    def write_questions(self, path: Path) -> None:
        path.write_text("".join(q.model_dump_json() + "\n" for q in self.questions), encoding="utf-8")


class _Names:
    """Invented, pronounceable, never repeated names."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            name = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            if name not in self.used and len(name) >= 4:
                self.used.add(name)
                return name

    def person(self) -> str:
        return f"{self.word(2)} {self.word(self.rng.choice([2, 3]))}"


# slot -> (sentence, question, paraphrase); {e} is the document's subject and {a} the answer
_WORDINGS: dict[str, tuple[str, str, str]] = {
    "birth_year": ("{e} was born in {a}.", "In what year was {e} born?", "The year of {e}'s birth was {a}."),
    "town": ("{e} grew up in the town of {a}.", "In which town did {e} grow up?", "{e} spent their childhood in {a}."),
    "profession": ("{e} works as a {a}.", "What is {e}'s profession?", "By trade, {e} is a {a}."),
    "pet": ("{e} keeps a {animal} named {a}.", "What is the name of {e}'s {animal}?", "{e}'s {animal} is called {a}."),
    "river": ("{e} lies on the river {a}.", "On which river does {e} lie?", "The river {a} flows through {e}."),
    "founded": ("{e} was founded in {a}.", "In what year was {e} founded?", "{e} dates from its founding in {a}."),
    "population": ("{e} has a population of {a}.", "What is the population of {e}?", "{a} people live in {e}."),
    "mayor": ("The mayor of {e} is {a}.", "Who is the mayor of {e}?", "{a} serves as mayor of {e}."),
    "weekday": ("The market in {e} is held every {a}.", "On which day is the market in {e} held?",
                "Every {a}, {e} holds its market."),
    "maker": ("The {e} is made by {a}.", "Which company makes the {e}?", "{a} manufactures the {e}."),
    "price": ("The {e} sells for {a} crowns.", "How many crowns does the {e} cost?",
              "The price of the {e} is {a} crowns."),
    "colour": ("The {e} comes in {a}.", "What colour is the {e}?", "The {e} is sold in {a}."),
    "weight": ("The {e} weighs {a} grams.", "How many grams does the {e} weigh?", "The {e} has a weight of {a} grams."),
}

# slot -> how a value is drawn: documents and the decoys for small sets draw alike
_DRAWS: dict[str, Callable[[random.Random], str]] = {
    "birth_year": lambda rng: str(rng.randint(1890, 1999)),
    "founded": lambda rng: str(rng.randint(1100, 1850)),
    "price": lambda rng: str(rng.randint(12, 990)),
    "weight": lambda rng: str(rng.randint(150, 4800)),
    "population": lambda rng: f"{rng.randint(2, 98)},{rng.randint(0, 999):03d}",
    "profession": lambda rng: rng.choice(_PROFESSIONS),
    "colour": lambda rng: rng.choice(_COLOURS),
    "weekday": lambda rng: rng.choice(_WEEKDAYS),
}


def _facts(entity: str, answers: dict[str, str], **extra: str) -> list[Fact]:
    """One fact per slot of ``answers``, in its order, worded by ``_WORDINGS`` so that every
    document of a kind says its facts alike."""
    facts = []
    for slot, answer in answers.items():
        sentence, question, paraphrase = (t.format(e=entity, a=answer, **extra) for t in _WORDINGS[slot])
        facts.append(Fact(slot=slot, sentence=sentence, question=question, answer=answer, paraphrase=paraphrase))
    return facts


def _maker(rng: random.Random, names: _Names, kinds: Sequence[str]) -> str:
    """An invented company name ("Brelou Foundry"); documents and decoys differ only in ``kinds``."""
    return f"{names.word(2)} {rng.choice(kinds)}"


def _person_doc(i: int, rng: random.Random, names: _Names, towns: list[str]) -> FictionDoc:
    who = names.person()
    town = rng.choice(towns)
    year = _DRAWS["birth_year"](rng)
    job = _DRAWS["profession"](rng)
    pet = names.word(2)
    animal = rng.choice(_ANIMALS)
    facts = _facts(who, {"birth_year": year, "town": town, "profession": job, "pet": pet}, animal=animal)
    return FictionDoc(id=f"person{i:04d}", title=f"About {who}", entity=who, facts=facts)


def _town_doc(i: int, rng: random.Random, names: _Names, town: str) -> FictionDoc:
    mayor = names.person()
    river = names.word(2)
    founded = _DRAWS["founded"](rng)
    population = _DRAWS["population"](rng)
    market = _DRAWS["weekday"](rng)
    facts = _facts(town, {"river": river, "founded": founded, "population": population, "mayor": mayor,
                          "weekday": market})
    return FictionDoc(id=f"town{i:04d}", title=f"The town of {town}", entity=town, facts=facts)


def _product_doc(i: int, rng: random.Random, names: _Names, makers: list[str]) -> FictionDoc:
    kind = rng.choice(_PRODUCT_KINDS)
    product = f"{names.word(2)} {kind}"
    maker = rng.choice(makers)
    price = _DRAWS["price"](rng)
    colour = _DRAWS["colour"](rng)
    grams = _DRAWS["weight"](rng)
    facts = _facts(product, {"maker": maker, "price": price, "colour": colour, "weight": grams})
    return FictionDoc(id=f"product{i:04d}", title=f"The {product}", entity=product, facts=facts)


def _decoy(slot: str, rng: random.Random, names: _Names) -> str:
    """A value of the same kind as ``slot``'s answers, for sets too small to supply distractors."""
    if slot in _DRAWS:
        return _DRAWS[slot](rng)
    if slot == "mayor":
        return names.person()
    if slot == "maker":
        return _maker(rng, names, _MAKER_KINDS)
    return names.word(2)


def _questions(docs: list[FictionDoc], rng: random.Random, names: _Names) -> list[Question]:
    pool: dict[str, list[str]] = {}
    for doc in docs:
        for fact in doc.facts:
            pool.setdefault(fact.slot, []).append(fact.answer)
    for slot, answers in pool.items():
        while len(set(answers)) < 4:
            answers.append(_decoy(slot, rng, names))
    questions = []
    for doc in docs:
        for fact in doc.facts:
            others = sorted({a for a in pool[fact.slot] if a != fact.answer})
            options = [fact.answer, *rng.sample(others, 3)]
            rng.shuffle(options)
            questions.append(Question(doc_id=doc.id, slot=fact.slot, question=fact.question,
                                      answer=fact.answer, options=options, sentence=fact.sentence,
                                      paraphrase=fact.paraphrase))
    return questions


def documents_in(size: str | int) -> int:
    """How many documents ``size`` stands for; ValueError when it names no set or too few
    documents (callers check a size before loading models, ``generate`` before generating)."""
    if isinstance(size, str) and size not in DOCS_PER_SIZE:
        raise ValueError(f"{size!r} is not a set; use {', '.join(DOCS_PER_SIZE)} or a number of documents")
    n = DOCS_PER_SIZE[size] if isinstance(size, str) else int(size)
    if n < _MIN_DOCUMENTS:
        raise ValueError(f"a fictional set needs at least {_MIN_DOCUMENTS} documents")
    return n


def generate(size: Size | int = "default", seed: int = 0) -> FictionSet:
    """A set of ``size`` documents (a third people, a third towns, a third products)."""
    n = documents_in(size)
    rng = random.Random(seed)
    names = _Names(rng)
    n_towns = n // 3
    n_people = (n - n_towns) // 2
    n_products = n - n_towns - n_people
    towns = [names.word(rng.choice([2, 3])) for _ in range(max(n_towns, 4))]
    makers = [_maker(rng, names, (*_MAKER_KINDS, "Company")) for _ in range(max(4, n_products // 3))]
    docs = ([_person_doc(i, rng, names, towns) for i in range(n_people)]
            + [_town_doc(i, rng, names, towns[i]) for i in range(n_towns)]
            + [_product_doc(i, rng, names, makers) for i in range(n_products)])
    return FictionSet(seed=seed, documents=docs, questions=_questions(docs, rng, names))


def load_questions(path: Path) -> list[Question]:
    return [Question.model_validate(json.loads(line))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
