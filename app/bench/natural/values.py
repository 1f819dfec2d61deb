"""Invented values as a document writes them: numbers with units, dates, years and clock times,
each with the other spellings that answer it and a way to invent a decoy of the same kind.

``_Ctx`` bundles the seeded random source with the name maker; every genre writer draws from it.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

from app.bench.natural.names import _Names, _Person

T = TypeVar("T")


@dataclass(frozen=True)
class _Val:
    """A value as the document writes it, how else it may be answered, and how to invent
    another of its kind (for distractors)."""

    text: str
    decoy: Callable[[], str]
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text

    def __format__(self, spec: str) -> str:
        return format(self.text, spec)


_LONG_UNITS = {"kg": "kilograms", "g": "grams", "km": "kilometres", "m": "metres",
               "cm": "centimetres", "mm": "millimetres", "ml": "millilitres", "°C": "degrees",
               "MB": "megabytes", "GB": "gigabytes", "W": "watts", "dB": "decibels",
               "mAh": "milliamp hours", "Nm": "newton metres", "%": "percent", "m³": "cubic metres",
               "minutes": "min", "seconds": "sec", "hours": "hrs"}
_COMPACT_UNITS = frozenset(("kg", "g", "km", "m", "cm", "mm", "ml", "°C", "MB", "GB", "W", "dB", "mAh", "Nm"))
_DATE_STYLES = ("dmy", "iso", "mdy")


def _number(value: float, decimals: int, group: bool) -> str:
    if decimals:
        return f"{value:.{decimals}f}"
    return f"{int(value):,}" if group else str(int(value))


def _date_text(day: date, style: str) -> str:
    month = calendar.month_name[day.month]
    if style == "iso":
        return day.isoformat()
    if style == "md":
        return f"{month} {day.day}"
    if style == "mdy":
        return f"{month} {day.day}, {day.year}"
    return f"{day.day} {month} {day.year}"


def _date_aliases(day: date, style: str) -> tuple[str, ...]:
    if style == "md":
        return (f"{day.day} {calendar.month_name[day.month]}",)
    return tuple(_date_text(day, s) for s in _DATE_STYLES if s != style)


@dataclass
class _Ctx:
    """The seeded random source and the name maker every writer draws from."""

    rng: random.Random
    names: _Names

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def num(self, lo: float, hi: float, unit: str = "", *, step: float = 1, decimals: int = 0,
            group: bool = False, space: bool = True) -> _Val:
        """A number drawn from [lo, hi] in ``step``s, written with ``unit`` ("12 kg")."""
        def draw() -> str:
            value = lo + step * self.rng.randint(0, int((hi - lo) / step))
            digits = _number(value, decimals, group)
            return f"{digits}{' ' if space else ''}{unit}".strip()

        text = draw()
        digits = text[:-len(unit)].strip() if unit else text
        aliases = [digits] if unit else []
        if "," in digits:
            aliases.append(digits.replace(",", ""))
        if "," in digits and unit:
            aliases.append(f"{digits.replace(',', '')} {unit}")
        if unit in _LONG_UNITS:
            aliases.append(f"{digits} {_LONG_UNITS[unit]}")
        if unit in _COMPACT_UNITS and space:
            aliases.append(f"{digits}{unit}")
        if unit.startswith("million "):
            aliases.append(f"{digits} million")
        return _Val(text, draw, tuple(a for a in dict.fromkeys(aliases) if a != text))

    def day(self, first_year: int, last_year: int) -> date:
        start = date(first_year, 1, 1)
        return start + timedelta(days=self.rng.randint(0, (date(last_year, 12, 31) - start).days))

    def date(self, day: date, style: str) -> _Val:
        """A date; its decoys fall within a few months of it, so the year alone gives nothing away."""
        def near() -> str:
            return _date_text(day + timedelta(days=self.rng.choice((-1, 1)) * self.rng.randint(3, 120)), style)

        return _Val(_date_text(day, style), near, _date_aliases(day, style))

    def year(self, lo: int, hi: int) -> _Val:
        """A year in [lo, hi]; its decoys lie within a dozen years of it, so they stay plausible."""
        value = self.rng.randint(lo, hi)
        def near() -> str:
            sign = -1 if value > 2012 else self.rng.choice((-1, 1))  # no year from the future
            return str(value + sign * self.rng.randint(1, 12))

        return _Val(str(value), near)

    def clock(self, first_hour: int, last_hour: int) -> _Val:
        def draw() -> str:
            return f"{self.rng.randint(first_hour, last_hour):02d}:{self.rng.choice(range(0, 60, 5)):02d}"

        text = draw()
        return _Val(text, draw, (text.lstrip("0"),) if text.startswith("0") else ())

    def who(self, person: _Person) -> _Val:
        return _Val(person.name, self.names.full_name, (person.last,))

    def named(self, text: str, decoy: Callable[[], str], *aliases: str) -> _Val:
        return _Val(text, decoy, aliases)

    def invent(self, make: Callable[[], str], *aliases: str) -> _Val:
        """A value drawn by ``make``; its decoys come from ``make`` too, so they are of its kind."""
        return _Val(make(), make, aliases)
