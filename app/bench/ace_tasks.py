"""Questions whose right answer needs a unit convention stated nowhere: where a playbook helps.

The documents are catalogue and gazetteer entries built from ``app/bench/fiction.py``'s invented
products and towns, giving bare numbers ("Price: 412."). The right answers carry the house units
("412 crowns", "2300 grams", "37 leagues"), which neither the question nor the documents state,
and the currency and the distance unit are fictional, so no model can guess them: an answer is
right only when it has the number (from the document) and the unit (from a learned strategy).
Control questions (a town's founding year, its market day) need no convention: a model answers
them from the document alone, and a bad strategy would make it answer them worse, which is what
the playbook's guard must prevent. The held-out questions are about other products and towns than
the training ones, so only a general strategy carries over. Everything is deterministic by seed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from app.bench.fiction import FictionDoc, generate, write_documents

Kind = Literal["price", "weight", "distance", "founded", "market"]
KINDS: tuple[Kind, ...] = ("price", "founded", "weight", "market", "distance")
CONVENTION_KINDS = frozenset({"price", "weight", "distance"})
CONVENTIONS: dict[str, str] = {
    "price": "Give every price in crowns, written after the number.",
    "weight": "Give every weight in grams, written after the number.",
    "distance": "Give every distance in leagues, written after the number.",
}
UNITS: dict[str, str] = {"price": "crowns", "weight": "grams", "distance": "leagues", "founded": "",
                         "market": ""}
QUESTIONS: dict[str, tuple[str, ...]] = {
    "price": ("What does the {x} cost?", "What is the price of the {x}?", "How much is the {x}?"),
    "weight": ("How heavy is the {x}?", "What does the {x} weigh?", "What is the weight of the {x}?"),
    "distance": ("How far is {x} from the capital?", "What is the distance from {x} to the capital?"),
    "founded": ("In what year was {x} founded?", "When was {x} founded?"),
    "market": ("On which day is the market held in {x}?", "What is the market day of {x}?"),
}


class ConventionDoc(BaseModel):
    file_name: str
    text: str


class ConventionTask(BaseModel):
    kind: Kind
    subject: str
    question: str
    answer: str

    @property
    def needs_convention(self) -> bool:
        return self.kind in CONVENTION_KINDS


class ConventionSet(BaseModel):
    seed: int
    documents: list[ConventionDoc]
    train: list[ConventionTask]
    test: list[ConventionTask]

    def write(self, folder: Path) -> list[Path]:
        return write_documents(self.documents, folder)


def _fact(doc: FictionDoc, slot: str) -> str:
    return next(f.answer for f in doc.facts if f.slot == slot)


def _product_entry(doc: FictionDoc) -> tuple[ConventionDoc, dict[str, str]]:
    price, grams, maker = _fact(doc, "price"), _fact(doc, "weight"), _fact(doc, "maker")
    text = (f"Catalogue entry: the {doc.entity}.\nMaker: {maker}.\nPrice: {price}.\n"
            f"Weight: {grams}.\n")
    return ConventionDoc(file_name=f"catalogue-{doc.id}.txt", text=text), {"price": price, "weight": grams}


def _town_entry(doc: FictionDoc, rng: random.Random) -> tuple[ConventionDoc, dict[str, str]]:
    distance = str(rng.randint(3, 95))
    founded, market = _fact(doc, "founded"), _fact(doc, "weekday")
    text = (f"Gazetteer entry: {doc.entity}.\nFounded: {founded}.\nMarket day: {market}.\n"
            f"Distance from the capital: {distance}.\n")
    return (ConventionDoc(file_name=f"gazetteer-{doc.id}.txt", text=text),
            {"distance": distance, "founded": founded, "market": market})


def _tasks(subjects: list[tuple[str, dict[str, str]]], count: int, rng: random.Random) -> list[ConventionTask]:
    """``count`` tasks cycling through the kinds, each about a different subject where possible."""
    by_kind = {k: [(s, v[k]) for s, v in subjects if k in v] for k in KINDS}
    for pool in by_kind.values():
        rng.shuffle(pool)
    tasks = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        pool = by_kind[kind]
        subject, value = pool[(n // len(KINDS)) % len(pool)]
        question = rng.choice(QUESTIONS[kind]).format(x=subject)
        answer = f"{value} {UNITS[kind]}" if UNITS[kind] else value
        tasks.append(ConventionTask(kind=kind, subject=subject, question=question, answer=answer))
    return tasks


def generate_conventions(n_train: int = 12, n_test: int = 12, seed: int = 0) -> ConventionSet:
    """Documents and questions; training and held-out questions are about disjoint subjects."""
    fiction = generate(max(30, 2 * (n_train + n_test)), seed)
    rng = random.Random(seed)
    entries: list[tuple[ConventionDoc, str, dict[str, str]]] = []
    for doc in fiction.documents:
        if doc.id.startswith("product"):
            entry, values = _product_entry(doc)
        elif doc.id.startswith("town"):
            entry, values = _town_entry(doc, rng)
        else:
            continue
        entries.append((entry, doc.entity, values))
    order = list(range(len(entries)))
    rng.shuffle(order)
    half = len(order) // 2
    train_subjects = [(entries[i][1], entries[i][2]) for i in order[:half]]
    test_subjects = [(entries[i][1], entries[i][2]) for i in order[half:]]
    return ConventionSet(seed=seed, documents=[e[0] for e in entries],
                         train=_tasks(train_subjects, n_train, rng),
                         test=_tasks(test_subjects, n_test, rng))
