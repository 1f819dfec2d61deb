"""A document being written: its blocks of text, the facts a question may ask about, and the
small text helpers (possessives, articles, paragraphs, lists) every genre writer uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.bench.natural.values import _Ctx, _Val


@dataclass
class _Fact:
    slot: str
    kind: str
    value: _Val
    evidence: str
    asks: list[str]
    skill: str = ""  # "reference", "table" or "list"; mid-sentence/sentence-end are found later
    near: tuple[str, ...] = ()  # same-kind values from the same document: the hardest distractors

    @property
    def answer(self) -> str:
        return self.value.text


@dataclass
class _Draft:
    title: str
    blocks: list[str] = field(default_factory=list)
    facts: list[_Fact] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return f"# {self.title}\n\n" + "\n\n".join(self.blocks) + "\n"

    def fact(self, slot: str, kind: str, value: _Val, evidence: str, *asks: str, skill: str = "",
             near: Sequence[str] = ()) -> None:
        self.facts.append(_Fact(slot, kind, value, evidence, list(asks), skill, tuple(near)))


def _s(name: str | _Val) -> str:
    """The possessive of a name ("Mira's", "Kivik Textiles'")."""
    text = str(name)
    return f"{text}'" if text.endswith("s") else f"{text}'s"


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article ("a rope maker", "an organ builder")."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def _para(*sentences: str) -> str:
    return " ".join(s for s in sentences if s)


def _numbered(items: Sequence[str]) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _mentioning(items: Sequence[str], value: str | _Val) -> str:
    """The first item that writes ``value``: the evidence once a list has been shuffled."""
    return next(item for item in items if str(value) in item)


def _either(c: _Ctx, first: Callable[[_Ctx], _Draft], second: Callable[[_Ctx], _Draft]) -> _Draft:
    """One of a genre's two kinds of document, on a fair coin drawn before either writes."""
    return first(c) if c.rng.random() < 0.5 else second(c)
