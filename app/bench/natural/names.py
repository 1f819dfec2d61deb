"""Invented names: pronounceable people, places and companies, never repeated within a set.

Every name is made up from syllables so that an answer can only come from reading the document.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_SYLLABLES = ("ka", "lo", "mir", "ven", "ta", "sel", "dru", "pel", "quen", "nis", "tor", "zen",
              "ul", "bra", "ki", "mo", "ras", "fen", "gal", "tev", "shi", "orn", "lum", "vik",
              "ha", "del", "jo", "rin", "sa", "be", "tam", "cor", "eth", "ova", "pri", "dun")
_FIRST_ENDINGS = ("a", "o", "en", "", "is", "e", "ine")
_LAST_ENDINGS = ("", "sen", "ard", "ova", "ik", "ley", "mann", "ez")
_PLACE_ENDINGS = ("holm", "by", "stad", "mere", "vale", "ford", "ness", "heim")
_SECTORS = ("Foods", "Logistics", "Textiles", "Systems", "Freight", "Electric", "Optics",
            "Ceramics", "Joinery", "Metalworks")
_PRONOUNS = (("she", "her", "her"), ("he", "him", "his"))


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    pronouns: tuple[str, str, str]

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def she(self) -> str:
        return self.pronouns[0]

    @property
    def She(self) -> str:
        return self.pronouns[0].capitalize()

    @property
    def her(self) -> str:
        """Object form ("her", "him")."""
        return self.pronouns[1]

    @property
    def hers(self) -> str:
        """Possessive determiner ("her", "his")."""
        return self.pronouns[2]

    @property
    def Hers(self) -> str:
        return self.pronouns[2].capitalize()


class _Names:
    """Pronounceable invented names, never repeated within a set."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _fresh(self, make: Callable[[int], str]) -> str:
        """A name from ``make(extra)`` not used before; ``extra`` syllables are added as the short
        names run out, so even a very large set terminates."""
        tries = 0
        while True:
            name = make(tries // 50)
            tries += 1
            if len(name) >= 4 and name.lower() not in self.used:
                self.used.add(name.lower())
                return name

    def _stem(self, parts: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(parts))

    def word(self, parts: int = 2) -> str:
        return self._fresh(lambda extra: self._stem(parts + extra).capitalize())

    def first(self) -> str:
        return self._fresh(lambda extra: (self._stem(2 + extra) + self.rng.choice(_FIRST_ENDINGS)).capitalize())

    def last(self) -> str:
        return self._fresh(lambda extra: (self._stem(self.rng.choice((1, 2)) + extra)
                                          + self.rng.choice(_LAST_ENDINGS)).capitalize())

    def person(self) -> _Person:
        return _Person(self.first(), self.last(), self.rng.choice(_PRONOUNS))

    def full_name(self) -> str:
        return f"{self.first()} {self.last()}"

    def place(self) -> str:
        return self._fresh(lambda extra: (self._stem(self.rng.choice((1, 1, 2)) + extra)
                                          + self.rng.choice(_PLACE_ENDINGS)).capitalize())

    def company(self, sector: str | None = None) -> str:
        return f"{self.word()} {sector or self.rng.choice(_SECTORS)}"

    def handle(self) -> str:
        return self._fresh(lambda extra: self._stem(2 + extra) + str(self.rng.randint(1, 99)))
