"""Stops an answer that has started repeating itself and trims the repeat (text only, no model).

Small models fall into loops ("La femme au France, La femme au France, ..." until the token limit)
and no sampling setting removes them all, so every plain-text generation is watched as it streams
(``engines.generation.TextStream`` applies a ``LoopGuard``). Two kinds of repetition end an answer:

- **a clause said again**: a clause (text between ``. , ; : ! ?`` or line breaks) of at least
  ``CLAUSE_MIN_WORDS`` words that already appeared, word for word (case and punctuation ignored);
- **a run**: the same unit of words repeated back to back, ``copies_needed`` times in a row (four
  for a short phrase, two for a unit of eight words or more, eight for one word, more for
  numbers and inside code and tables).

The guard shows text only once it cannot be the start of a repetition: it holds back the clause
being written and any words that currently repeat the words before them, and releases them as soon
as that is settled. So when it stops, the person sees the answer up to the first copy of the
repeated part, never the loop. ``find_loop`` runs the same rules over a finished text; it is how
answers generated without the guard are checked for loops.

What it leaves alone, by construction: list items and sentences that share words but are not the
same clause, a repeated name, "very very good", short repeated cells of a table, repeated lines of
code (fenced code and table rows only count long runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

CLAUSE_MIN_WORDS = 6
MAX_UNIT_WORDS = 32  # the longest unit a run is looked for in
MAX_HELD_CLAUSE_WORDS = 48  # a clause without punctuation is not held back forever

MAX_WORD_CHARS = 16
# Words, longer ones in pieces of MAX_WORD_CHARS: a loop inside one "word" ("РАТЬРАТЬРАТЬ...",
# no spaces for hundreds of tokens) is then a run of identical pieces.
_WORD = re.compile(r"\w{1,%d}" % MAX_WORD_CHARS, re.UNICODE)
# A clause ends at a line break or at . , ; : ! ? (closing quotes/brackets allowed) before a space.
_CLAUSE_END = re.compile(r"\n|[.,;:!?][\"'”’)\]*_]*\s")
_FENCE = "```"
_TRAILING = " \t\r\n,;:-–—"


@dataclass(frozen=True)
class Loop:
    """A repetition found in a text: the text is kept up to ``start``, the rest repeats."""

    kind: Literal["clause", "run"]
    start: int
    unit: str
    copies: int
    found_at: int  # how much of the text had been written when the repetition was certain


@dataclass(frozen=True)
class _Word:
    norm: str
    start: int
    end: int
    structured: bool  # inside fenced code or a table row
    number: bool


def copies_needed(unit_words: int, number: bool, structured: bool, in_one_word: bool = False) -> int:
    """Back-to-back copies of a unit that make a loop.

    Two copies of a long unit never happen in real prose; a short phrase may come three times
    ("O Brasil, o Brasil, o Brasil!", which the model followed with the right answer), not four;
    one word needs many ("very very good" is fine, eight in a row is not); numbers, code and
    tables repeat legitimately more. A unit
    repeating inside one long word ("РАТЬРАТЬРАТЬ...", cut into pieces of ``MAX_WORD_CHARS``) is
    a loop at the third piece.
    """
    if in_one_word:
        return 3
    if unit_words >= 8:
        return 3 if structured else 2
    if unit_words == 1:
        return 16 if structured or number else 8
    return 6 if structured or number else 4


def _primitive(unit: list[str]) -> bool:
    """Whether ``unit`` is not itself a shorter unit repeated."""
    k = len(unit)
    return not any(k % d == 0 and unit == unit[:d] * (k // d) for d in range(1, k))


def clean_end(text: str) -> str:
    """``text`` without the separators a cut leaves at its end (", and " keeps its "and")."""
    return text.rstrip(_TRAILING)


class LoopGuard:
    """Feed it the generated text piece by piece; it returns what may be shown so far.

    ``feed`` returns text that is safe to show; once ``stopped`` the generation should end and
    ``loop`` says what repeated. ``finish`` (at the end of a generation that was not stopped)
    returns whatever was still held back, after a last check.
    """

    def __init__(self) -> None:
        self.text = ""
        self.loop: Loop | None = None
        self._released = 0
        self._scanned = 0  # text before this offset is split into words already
        self._words: list[_Word] = []
        self._clause_start = 0  # index of the first word of the clause being written
        self._clauses: list[tuple[tuple[str, ...], int]] = []  # (words, first word) in order
        self._long_clauses: set[tuple[str, ...]] = set()
        # The closed clauses at the end that repeat, in order, clauses said before: where the
        # echo starts (a clause index) and the earlier clauses its last one matches.
        self._echo_from: int | None = None
        self._echo_of: list[int] = []
        self._runs = [0] * (MAX_UNIT_WORDS + 1)  # per unit length: words that repeat the unit
        self._in_code = False

    @property
    def stopped(self) -> bool:
        return self.loop is not None

    def feed(self, piece: str) -> str:
        """Take the next generated piece; return the text that can be shown now."""
        if self.stopped or not piece:
            return ""
        self.text += piece
        self._scan(final=False)
        return self._release()

    def finish(self) -> str:
        """The generation ended: check what was held back and return what is left to show."""
        if not self.stopped:
            self._scan(final=True)
        return self._release(final=True)

    # --- scanning ---------------------------------------------------------------------------
    def _scan(self, final: bool) -> None:
        for match in _WORD.finditer(self.text, self._scanned):
            if not final and match.end() == len(self.text):
                break  # the word may go on in the next piece
            self._separator(self.text[self._scanned:match.start()])
            if self.stopped:
                return
            self._add_word(match)
            if self.stopped:
                return
        tail = self.text[self._scanned:]
        if final or _CLAUSE_END.search(tail):
            self._close_clause()

    def _separator(self, between: str) -> None:
        """The text between two words: code fences open or close, clauses end."""
        if self._words and _CLAUSE_END.search(between):
            self._close_clause()
        if between.count(_FENCE) % 2:
            self._in_code = not self._in_code

    def _in_table_row(self, start: int) -> bool:
        line_start = self.text.rfind("\n", 0, start) + 1
        return self.text[line_start:start].lstrip().startswith("|")

    def _add_word(self, match: re.Match[str]) -> None:
        norm = match.group().lower()
        word = _Word(norm, match.start(), match.end(),
                     self._in_code or self._in_table_row(match.start()), norm.isdigit())
        self._words.append(word)
        self._scanned = match.end()
        n = len(self._words) - 1
        for k in range(1, MAX_UNIT_WORDS + 1):
            repeats = n >= k and self._words[n - k].norm == norm
            self._runs[k] = self._runs[k] + 1 if repeats else 0
            if repeats:
                self._check_run(k)
                if self.stopped:
                    return

    def _check_run(self, k: int) -> None:
        run = self._runs[k]
        copies = (run + k) // k
        if copies < 2:
            return
        first = len(self._words) - run - k  # index of the first word of the first copy
        unit = self._words[first:first + k]
        if not _primitive([w.norm for w in unit]):
            return  # "very very" repeated is a run of "very": judged at its own length
        region = self._words[first:]
        structured = any(w.structured for w in region)
        in_one_word = all(b.start == a.end for a, b in zip(region, region[1:]))
        if copies >= copies_needed(k, all(w.number for w in unit), structured, in_one_word):
            cut = self._run_cut(first + k, min(k, run))
            self.loop = Loop("run", self._words[cut].start,
                             self.text[unit[0].start:unit[-1].end], copies, self._words[-1].end)

    def _run_cut(self, second: int, span: int) -> int:
        """Where to cut a run whose second copy starts at word ``second``.

        Any rotation of the unit is a copy too, so the cut may move up to a unit's length forward
        to the first clause boundary: "large, and it is designed to be very large, and it is ..."
        is kept up to "...very large", not "...very large, and it".
        """
        for i in range(second, second + span):
            if _CLAUSE_END.search(self.text[self._words[i - 1].end:self._words[i].start]):
                return i
        return second

    def _close_clause(self) -> None:
        clause = self._words[self._clause_start:]
        if not clause:
            return
        key = tuple(w.norm for w in clause)
        now = len(self._clauses)
        self._clauses.append((key, self._clause_start))
        self._clause_start = len(self._words)
        self._follow_echo(key, now)
        if len(clause) < CLAUSE_MIN_WORDS or any(w.structured for w in clause):
            return
        if key not in self._long_clauses:
            self._long_clauses.add(key)
            return
        # Cut where the repetition began, which may be a few short clauses before this one
        # ("Der Königin der Deutschland, der die ... Reich" said twice).
        assert self._echo_from is not None
        first = self._words[self._clauses[self._echo_from][1]]
        self.loop = Loop("clause", first.start, self.text[first.start:clause[-1].end], 2,
                         clause[-1].end)

    def _follow_echo(self, key: tuple[str, ...], now: int) -> None:
        """Extend the echo when clause ``now`` continues it, else start one or end it."""
        after = [e + 1 for e in self._echo_of if self._clauses[e + 1][0] == key and e + 1 < now]
        if self._echo_from is not None and after:
            self._echo_of = after
            return
        self._echo_of = [i for i in range(now) if self._clauses[i][0] == key]
        self._echo_from = now if self._echo_of else None

    # --- releasing --------------------------------------------------------------------------
    def _hold_from(self) -> int:
        """The offset from which the text may still turn out to be a repetition.

        Held back: the clause being written while its words so far begin a clause said before
        (unless it grew past ``MAX_HELD_CLAUSE_WORDS``; a clause that begins like none before
        cannot be said again, so it streams word by word), the clauses at the end that repeat
        clauses said before (as far back as that), every word that repeats the words before it,
        and the separator before a held word or after the last word (a cut strips it).
        """
        n = len(self._words)
        held = n
        if n - self._clause_start <= MAX_HELD_CLAUSE_WORDS and self._may_repeat_a_clause():
            held = min(held, self._clause_start)
        if self._echo_from is not None:
            echo = self._clauses[self._echo_from][1]
            if n - echo <= MAX_HELD_CLAUSE_WORDS:
                held = min(held, echo)
        for run in self._runs[1:]:
            if run:
                held = min(held, n - run)
        return self._words[held - 1].end if held > 0 else 0

    def _may_repeat_a_clause(self) -> bool:
        """Whether the clause being written begins like a clause said before."""
        begun = tuple(w.norm for w in self._words[self._clause_start:])
        return any(key[:len(begun)] == begun for key, _ in self._clauses)

    def _release(self, final: bool = False) -> str:
        if self.loop is not None:
            end = max(self._released, len(clean_end(self.text[:self.loop.start])))
        elif final:
            end = len(self.text)
        else:
            end = max(self._released, self._hold_from())
        out, self._released = self.text[self._released:end], end
        return out


def find_loop(text: str) -> Loop | None:
    """The first repetition in a finished ``text`` by the guard's rules; None when there is none."""
    guard = LoopGuard()
    guard.feed(text)
    guard.finish()
    return guard.loop


def has_loop(text: str) -> bool:
    """Whether ``text`` repeats itself (a clause said again, or a run of the same words)."""
    return find_loop(text) is not None


def trim_loop(text: str) -> str:
    """``text`` as the guard would have shown it: cut before its first repetition."""
    loop = find_loop(text)
    return text if loop is None else clean_end(text[:loop.start])
