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
from collections.abc import Sequence
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


def _person_doc(i: int, rng: random.Random, names: _Names, towns: list[str]) -> FictionDoc:
    who = names.person()
    town = rng.choice(towns)
    year = str(rng.randint(1890, 1999))
    job = rng.choice(_PROFESSIONS)
    pet = names.word(2)
    animal = rng.choice(_ANIMALS)
    facts = [
        Fact(slot="birth_year", sentence=f"{who} was born in {year}.",
             question=f"In what year was {who} born?", answer=year,
             paraphrase=f"The year of {who}'s birth was {year}."),
        Fact(slot="town", sentence=f"{who} grew up in the town of {town}.",
             question=f"In which town did {who} grow up?", answer=town,
             paraphrase=f"{who} spent their childhood in {town}."),
        Fact(slot="profession", sentence=f"{who} works as a {job}.",
             question=f"What is {who}'s profession?", answer=job,
             paraphrase=f"By trade, {who} is a {job}."),
        Fact(slot="pet", sentence=f"{who} keeps a {animal} named {pet}.",
             question=f"What is the name of {who}'s {animal}?", answer=pet,
             paraphrase=f"{who}'s {animal} is called {pet}."),
    ]
    return FictionDoc(id=f"person{i:04d}", title=f"About {who}", entity=who, facts=facts)


def _town_doc(i: int, rng: random.Random, names: _Names, town: str) -> FictionDoc:
    mayor = names.person()
    river = names.word(2)
    founded = str(rng.randint(1100, 1850))
    population = f"{rng.randint(2, 98)},{rng.randint(0, 999):03d}"
    market = rng.choice(_WEEKDAYS)
    facts = [
        Fact(slot="river", sentence=f"{town} lies on the river {river}.",
             question=f"On which river does {town} lie?", answer=river,
             paraphrase=f"The river {river} flows through {town}."),
        Fact(slot="founded", sentence=f"{town} was founded in {founded}.",
             question=f"In what year was {town} founded?", answer=founded,
             paraphrase=f"{town} dates from its founding in {founded}."),
        Fact(slot="population", sentence=f"{town} has a population of {population}.",
             question=f"What is the population of {town}?", answer=population,
             paraphrase=f"{population} people live in {town}."),
        Fact(slot="mayor", sentence=f"The mayor of {town} is {mayor}.",
             question=f"Who is the mayor of {town}?", answer=mayor,
             paraphrase=f"{mayor} serves as mayor of {town}."),
        Fact(slot="weekday", sentence=f"The market in {town} is held every {market}.",
             question=f"On which day is the market in {town} held?", answer=market,
             paraphrase=f"Every {market}, {town} holds its market."),
    ]
    return FictionDoc(id=f"town{i:04d}", title=f"The town of {town}", entity=town, facts=facts)


def _product_doc(i: int, rng: random.Random, names: _Names, makers: list[str]) -> FictionDoc:
    kind = rng.choice(_PRODUCT_KINDS)
    product = f"{names.word(2)} {kind}"
    maker = rng.choice(makers)
    price = str(rng.randint(12, 990))
    colour = rng.choice(_COLOURS)
    grams = str(rng.randint(150, 4800))
    facts = [
        Fact(slot="maker", sentence=f"The {product} is made by {maker}.",
             question=f"Which company makes the {product}?", answer=maker,
             paraphrase=f"{maker} manufactures the {product}."),
        Fact(slot="price", sentence=f"The {product} sells for {price} crowns.",
             question=f"How many crowns does the {product} cost?", answer=price,
             paraphrase=f"The price of the {product} is {price} crowns."),
        Fact(slot="colour", sentence=f"The {product} comes in {colour}.",
             question=f"What colour is the {product}?", answer=colour,
             paraphrase=f"The {product} is sold in {colour}."),
        Fact(slot="weight", sentence=f"The {product} weighs {grams} grams.",
             question=f"How many grams does the {product} weigh?", answer=grams,
             paraphrase=f"The {product} has a weight of {grams} grams."),
    ]
    return FictionDoc(id=f"product{i:04d}", title=f"The {product}", entity=product, facts=facts)


def _decoy(slot: str, rng: random.Random, names: _Names) -> str:
    """A value of the same kind as ``slot``'s answers, for sets too small to supply distractors."""
    makers = {
        "birth_year": lambda: str(rng.randint(1890, 1999)),
        "founded": lambda: str(rng.randint(1100, 1850)),
        "price": lambda: str(rng.randint(12, 990)),
        "weight": lambda: str(rng.randint(150, 4800)),
        "population": lambda: f"{rng.randint(2, 98)},{rng.randint(0, 999):03d}",
        "profession": lambda: rng.choice(_PROFESSIONS),
        "colour": lambda: rng.choice(_COLOURS),
        "weekday": lambda: rng.choice(_WEEKDAYS),
        "mayor": names.person,
        "maker": lambda: f"{names.word(2)} {rng.choice(['Works', 'Foundry', 'Instruments'])}",
    }
    return makers.get(slot, lambda: names.word(2))()


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
    makers = [f"{names.word(2)} {rng.choice(['Works', 'Foundry', 'Instruments', 'Company'])}"
              for _ in range(max(4, n_products // 3))]
    docs = ([_person_doc(i, rng, names, towns) for i in range(n_people)]
            + [_town_doc(i, rng, names, towns[i]) for i in range(n_towns)]
            + [_product_doc(i, rng, names, makers) for i in range(n_products)])
    return FictionSet(seed=seed, documents=docs, questions=_questions(docs, rng, names))


def load_questions(path: Path) -> list[Question]:
    return [Question.model_validate(json.loads(line))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
