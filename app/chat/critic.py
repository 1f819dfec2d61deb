"""The critic: which sentences of an answer no passage it was given supports.

Two checks, per sentence of the answer (``sentences_of``):
- **rules** (no model, milliseconds): every number in the sentence ("1,200" = "1200" = "1.2
  thousand"; "82.0" = "82") and every capitalised name (a run of capitalised words, checked as a
  phrase, so two real names recombined into a new one are caught) must occur in some passage or in
  the question, with a unit the sources give it (a day with its month: "May 5" needs a May 5
  there, in words or in digits, "2021-05-05", not a 5 of another date); and where the sources
  give it, it must stand in a context like the sentence's: not only beside other words
  (``_anchor_reason``), not where the closest source sentence has another value
  (``_swap_reason``), not only under another
  version's changelog heading (``_owner_reason``), not as a name repeated in another name's place
  (``_repeat_reason``). E-mail addresses and handles must be written as a source writes them
  (``_identifier_reason``), and a source sentence copied with its colour changed is flagged
  (``_substitution_reason``: "turns blue" for "turns amber");
- **model**: the chat model judges, under a JSON-schema grammar (``Runtime.generate_json``, the
  path every structured output takes), whether the passages closest to the sentence say what it
  says. Only sentences the rules pass are sent to it.

``critique`` is pure logic over strings; the model sits behind ``Judge`` (``ModelJudge`` wraps a
runtime), so the rules are tested without one. Verdicts are pydantic models stored with the answer
(``meta["critic"]``).
"""

from __future__ import annotations

import difflib
import re
import time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from app.chat.service import content_words, list_item, sentences_of
from engines.ace.structured import max_output_tokens, text_pattern
from engines.generation import ChatMessage, GenerationRequest, Runtime, StructuredOutputError

CriticMode = Literal["off", "rules", "model"]
CRITIC_MODES: tuple[CriticMode, ...] = ("off", "rules", "model")
JUDGE_PASSAGES = 2  # passages the model sees per sentence: the ones sharing most words with it
JUDGE_PASSAGE_CHARS = 1200
MIN_JUDGED_WORDS = 4  # shorter sentences ("Yes.", "I hope this helps!") carry no claim to judge

_CITE = re.compile(r"\s*\[\d{1,2}\]")
_MARKUP = re.compile(r"\*\*|__|`|^\s*(?:[-*+]|\d+[.)])\s+|^#+\s*")
_CODE = re.compile(r"(?<![\w.:/-])(?:\d+(?::\d{2})+|\d+(?:[./-]\d+){2,})(?![\w:/-]|\.\d)")
_STAMP = re.compile(r"(?<![\w.:/-])(\d{4}-\d{2}-\d{2})T(?=\d)")
"""An ISO timestamp's "T" ("2021-05-24T10:00Z"): read as a space, so that its date is a date."""
_NUMBER = re.compile(r"(?<![\w.])((?:(?<![\w-])-)?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?:(?<![\w-])-)?\d+(?:\.\d+)?)"
                     r"(?:\s*(million|thousand|billion)\b)?")
_TOKEN = re.compile(r"[^\W\d_][\w'’-]*")
_SCALE = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())} | {
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "dozen": 12}
_MONTHS = ("january february march april may june july august september october november "
           "december").split()
_UNITS = {alias: unit for unit, aliases in {
    "km": "km kilometre kilometres kilometer kilometers", "m": "m metre metres meter meters",
    "cm": "cm centimetre centimetres", "mm": "mm millimetre millimetres",
    "kg": "kg kgs kilo kilos kilogram kilograms", "g": "g gram grams", "t": "t tonne tonnes ton tons",
    "l": "l ltr ltrs litre litres liter liters", "ml": "ml mls millilitre millilitres",
    "h": "h hr hrs hour hours", "min": "min mins minute minutes", "s": "sec secs second seconds",
    "day": "day days", "week": "week weeks wk wks", "month": "month months", "year": "year years yr yrs",
    "%": "% percent per-cent",
    "°c": "°c ° degree degrees", "m²": "m² sq", "m³": "m³", **{m: m for m in _MONTHS}}.items()
    for alias in aliases.split()}
_NEXT_WORD = re.compile(r"[ \t]*([^\W\d_]+[²³]?|%|°C?)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?<![\w@])@[\w.]*\w|(?<![\w@-])[a-z]{2,}\d+(?![\w@])")
"""E-mail addresses, @handles and lower-case words ending in digits ("kisa51"): written as given or invented."""
_JOINED = re.compile(r"([a-z])[\s_-]+(?=\d)")  # "utf-8" -> "utf8", "python 3" -> "python3"
_COPY_WORD = re.compile(r"[\w@][\w'’-]*")
SUBSTITUTION_SIDE = 3  # words the answer must copy on each side of a changed colour to be read as a copy
_COLOURS = {c: c for c in """red orange amber yellow green blue purple violet pink white black grey brown
silver gold cyan magenta turquoise""".split()} | {"gray": "grey"}
_LIST_MARK = re.compile(r"^\d+[.)]\s", re.MULTILINE)
_PREV_WORD = re.compile(r"([^\W\d_]+)\s*$")
ANCHOR_MIN_WORDS = 2  # fewer other words than this ("It fell to -5.5 °C") give no context to judge
SWAP_MIN_OVERLAP = 2  # words and numbers the closest source sentence must share with the answer's
SWAP_MARGIN = 2  # how many more than any source sentence holding the answer's value
ANCHOR_WINDOW = 1  # sentences either side of the one holding a name or number that count as its context
# Capitalised only because a sentence starts with them: never taken for names there.
_STARTERS = frozenset("""a an the this that these those it its it's he she they them their there
here his her hers our we you your i my me yes no not also and but or so then thus however
according after before during while when where which who whom whose what why how as since
although though because if in on at by for from of to with without about around over under
between both each every all some most many much more few several any one two three no none
today yesterday tomorrow overall sure certainly unfortunately yet still only just even
""".split())


# Words that say where a claim comes from, not what it claims, and common words: no context.
_COMMON = _STARTERS | frozenset("""answer answers question document documents source sources passage
passages text says said puts mentioned mentions states stated writes written note notes have were been
will would could should than them into over such just very like well""".split())


class SentenceVerdict(BaseModel):
    sentence: str
    supported: bool
    reason: str = Field("", description="Why it is not supported (empty when it is).")
    by: Literal["rules", "model"] = "rules"


class CriticReport(BaseModel):
    """The critic's verdicts on one answer (stored as ``meta["critic"]``)."""

    mode: CriticMode
    sentences: list[SentenceVerdict] = Field(default_factory=list)
    unsupported: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def flagged(self) -> list[SentenceVerdict]:
        return [v for v in self.sentences if not v.supported]


class Judgement(BaseModel):
    """What the model answers for one sentence."""

    supported: bool
    reason: str = Field(pattern=text_pattern(0, 80), description="Short: which fact no passage gives.")


class Judge(Protocol):
    def judge(self, sentence: str, passages: list[str], question: str) -> Judgement: ...


# --- rules -------------------------------------------------------------------------------------
def plain(sentence: str) -> str:
    """The sentence without citation marks and Markdown emphasis or list bullets."""
    return _MARKUP.sub("", _CITE.sub("", sentence)).strip()


def numbers_in(text: str) -> set[Decimal]:
    """The numbers ``text`` states, normalised: thousands separators dropped, "82.0" = "82",
    "1.2 million" also as 1200000; number words (one .. twenty, the tens) as their value."""
    found: set[Decimal] = set()
    for digits, scale in _NUMBER.findall(text):
        try:
            value = Decimal(digits.replace(",", ""))
        except InvalidOperation:  # pragma: no cover - the pattern only matches numbers
            continue
        found.add(value)
        if scale:
            found.add(value * _SCALE[scale.lower()])
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _NUMBER_WORDS:
            found.add(Decimal(_NUMBER_WORDS[word]))
    return found


_OPENS = re.compile(r"[:;\"'“‘(]")
"""Marks after which a sentence starts again inside one: a colon, a semicolon, a quote, a bracket."""
_PRONOUN_I = re.compile(r"I['’](?:m|ll|ve|d)")
""""I'm", "I'll", "I've", "I'd": capitalised, never a name ("I" alone is one letter, never one)."""


def names_in(sentence: str, evidence: str) -> list[str]:
    """Runs of capitalised words in ``sentence`` taken for names: not the sentence's first word
    when it is a function word or a verb form, and not a word the evidence writes in lower case
    (a capitalised common word such as "Mayor" or "Bridge")."""
    lower_words = set(re.findall(r"(?<![\w'])[a-z][\w'’-]*", evidence))
    runs: list[list[str]] = [[]]
    end = 0
    tokens = list(_TOKEN.finditer(sentence))
    for i, match in enumerate(tokens):
        raw = match.group(0)
        word = raw.rstrip("'’").removesuffix("'s").removesuffix("’s")
        capital = word[:1].isupper() and len(word) > 1 and not _PRONOUN_I.fullmatch(word)
        gap, end = sentence[end:match.start()], match.end()
        # The first word is capitalised anyway: a name only when a capitalised word follows it
        # ("Corlum Engineering") or the evidence writes it capitalised inside a sentence. After a
        # colon, quote or bracket a sentence starts again ('You said: "Your code is ..."'): there a
        # function word is no name either.
        common = word.lower() in lower_words or (i == 0 and (
            word.lower() in _STARTERS or not (_next_capitalised(tokens, sentence) or _named(word, evidence)))) or (
            word.lower() in _STARTERS and _OPENS.search(gap) is not None)
        if capital and not common:
            if runs[-1] and gap != " ":
                runs.append([])
            runs[-1].append(word)
            if word != raw:  # a possessive ends the name: "Delfen Group's Saford factory"
                runs.append([])
        elif runs[-1]:
            runs.append([])
    return [" ".join(r) for r in runs if r]


def _next_capitalised(tokens: list[re.Match[str]], sentence: str) -> bool:
    return (len(tokens) > 1 and tokens[1].group(0)[:1].isupper()
            and sentence[tokens[0].end():tokens[1].start()] == " ")


def _named(word: str, evidence: str) -> bool:
    return re.search(rf"[a-z,;(] {re.escape(word)}\b", evidence) is not None


def _occurs(phrase: str, evidence: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", evidence) is not None


def attached(text: str, counted: bool = False) -> list[tuple[str, Decimal, str]]:
    """Each number written in digits in ``text``: as written, its value, and the unit or month
    beside it ("27 tonnes" -> "t", "5 working days" -> "day", "November 8" -> "november"; ""
    when none). With ``counted``, a word on the number's line that it counts and that is no unit
    stands for itself ("2 tsp" -> "tsp"), so "2 months" is not read as the sources' "2 tsp"; a
    common word ("9 before") still gives "", and a step's place in a numbered list is skipped."""
    found = []
    steps = {m.start() for m in _LIST_MARK.finditer(text)} if counted else set()
    for match in _NUMBER.finditer(text):
        if match.start() in steps:
            continue  # "3. Press the key": a step's place in a list, no quantity
        digits, scale = match.groups()
        value = Decimal(digits.replace(",", ""))
        after = _words_after(text, match.end())
        unit = _unit_of(after)
        before = _PREV_WORD.search(text, 0, match.start())
        if not unit and before and before.group(1).lower() in _MONTHS:
            unit = before.group(1).lower()
        spaced = text[match.end():match.end() + 1] in (" ", "\t")  # "2 tsp", not "the 30s"
        if not unit and counted and spaced and after and after[0].islower() and after[0] not in _COMMON:
            unit = after[0]
        found.append((match.group(0), value * _SCALE[scale.lower()] if scale else value, unit))
    for match in re.finditer(r"\b([a-z]+)(?=\s+([^\W\d_]+))", text.lower()):  # "eight weeks"
        word, after = match.groups()
        if word in _NUMBER_WORDS and after in _UNITS:
            found.append((f"{word} {after}", Decimal(_NUMBER_WORDS[word]), _UNITS[after]))
    return found


def _words_after(text: str, at: int, n: int = 2) -> list[str]:
    """The next ``n`` words (or %, °C) after position ``at``, on its line, with nothing else between."""
    words: list[str] = []
    while len(words) < n and (m := _NEXT_WORD.match(text, at)):
        words.append(m.group(1))
        at = m.end()
    return words


def _unit_of(after: list[str]) -> str:
    """The unit the words after a number give: the first word's ("27 tonnes"), else the second's
    after a lower-case word ("5 working days", "20 per cent"), not a function word ("at 8 every
    day"); a month there is no unit of it."""
    if not after:
        return ""
    if after[0].lower() in _UNITS:
        return _UNITS[after[0].lower()]
    if [w.lower() for w in after] == ["per", "cent"]:
        return "%"
    counted = len(after) > 1 and after[0].islower() and after[0] not in _STARTERS  # not "15 this year"
    second = _UNITS.get(after[1].lower(), "") if counted else ""
    return "" if second in _MONTHS else second


def _number_reason(text: str, evidence: str, codes: list[str], pieces: set[str]) -> str:
    """``codes``: the times, dates and versions ``text`` writes (checked as written); ``pieces``:
    their parts ("30" of "16:30"), which date nothing on their own."""
    for code in codes:
        if code not in evidence:
            return f"{code} is in no source"
    known = numbers_in(evidence)
    units: dict[Decimal, set[str]] = {}
    for _, value, unit in attached(evidence, counted=True):
        units.setdefault(value, set()).add(unit)
    for written, value, unit in attached(text):
        if value not in known:
            return f"the number {written} is in no source"
        if written not in pieces and _undated(value, unit, text, evidence):
            return f"no source gives the date {unit.capitalize()} {value}"
        beside = units.get(value, set())
        if unit and beside and "" not in beside and unit not in beside:
            return f"the sources give {written} only as {', '.join(sorted(beside))}, not {unit}"
    return _quantity_reason(text, evidence) if _CODE.search(evidence) or _LIST_MARK.search(evidence) else ""


def _quantity_reason(text: str, evidence: str) -> str:
    """A number given with a unit ("4 hours") that the sources write only as a step's place in a
    list ("4."), a piece of a date or version, or a piece of a clock time ("10 minutes" where the
    only 10 is of "the 10:20"). The answer's own times and dates are no quantities of it."""
    quantities: set[tuple[Decimal, str]] | None = None
    for written, value, unit in attached(_CODE.sub("§", text)):
        if unit and unit not in _MONTHS:
            quantities = _quantities(evidence) if quantities is None else quantities
            if (value, "") not in quantities and (value, unit) not in quantities:
                return f"the sources write {written.split()[0]} only in a time, date or step number"
    return ""


def _quantities(evidence: str) -> set[tuple[Decimal, str]]:
    """The numbers the evidence writes as quantities, with "" for any unit. A time that reads as
    a clock's ("at 10:20", "the 10:20", "7:15 pm") gives none; another ("takes 1:45", "2:11:53")
    gives its pieces as hours, minutes and seconds, or as minutes and seconds."""
    found = {(value, "") for value in _loose_numbers(evidence)}
    found |= {(Decimal(1), _UNITS[w]) for w in _ONE_UNIT.findall(evidence.lower()) if w in _UNITS}  # "an hour"
    for match in _CODE.finditer(evidence):
        code = match.group(0)
        if ":" not in code or _clock(evidence, match.start(), match.end()):
            continue
        pieces = [Decimal(p) for p in code.split(":")]
        found |= set(zip(pieces, ("h", "min", "s"), strict=False)) | set(zip(pieces[-2:], ("min", "s"), strict=True))
    return found


_CLOCK_BEFORE = frozenset("at from until till by before after the since between".split())  # not "2:30 to 3:00"
_ONE_UNIT = re.compile(r"\ban? ([a-z]+)\b")
_CLOCK_AFTER = re.compile(r"\s*(?:[ap]\.?m\b|o'clock|uhr\b)", re.IGNORECASE)


def _clock(evidence: str, start: int, end: int) -> bool:
    """Whether the time at ``start:end`` reads as a time of day: a word such as "at" or "the"
    before it, or "am"/"pm" after it."""
    before = _PREV_WORD.search(evidence, max(0, start - 40), start)
    return (before is not None and before.group(1).lower() in _CLOCK_BEFORE) or bool(_CLOCK_AFTER.match(evidence, end))


@lru_cache(maxsize=8)  # every number of every sentence of an answer is checked against the same sources
def _loose_numbers(evidence: str) -> frozenset[Decimal]:
    """The numbers the evidence writes outside its times, dates, versions and list marks."""
    return frozenset(numbers_in(_CODE.sub(" ", _unlisted(evidence))))


def _unlisted(text: str) -> str:
    """``text`` without its numbered lists' marks ("4. Done." -> "Done."), found as ``sentences_of``
    finds them: a wrapped sentence's "March\n21. The ..." keeps its 21."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if item := list_item(line, lines[i - 1] if i else None):
            lines[i] = line[item.end():]
    return "\n".join(lines)


def _undated(day: Decimal, month: str, text: str, evidence: str) -> bool:
    """Whether ``text`` gives a day of a month ("May 5", the month capitalised: "may ship" is no
    month) that no source dates: where the sources name the month, they must write that day
    somewhere ("21 and 22 March" dates March 21), else as a date in digits ("2021-05-05",
    "05/05/2021"). A 5 that is only the month of "2021-05-24", a list's step "5.", or the count
    of "in 5 boxes" where the month is known from "2021-05-24" alone, dates nothing."""
    name = month.capitalize()
    if month not in _MONTHS or day > 31 or not re.search(rf"\b{name}\b", text):
        return False
    if _dated(month, evidence, day):
        return False
    written_out = re.search(rf"\b{name}\b", evidence) is not None
    return not (written_out and day in _loose_numbers(evidence))


def _dated(month: str, evidence: str, day: Decimal | None = None) -> bool:
    """Whether the evidence writes a date in digits in ``month`` (on ``day`` where given), year
    first or last, day and month either way round: "2021-05-24" and "24/05/2021" are 24 May,
    though the sources write neither "May" nor a 24 of its own."""
    month = month.lower()
    if month not in _MONTHS:
        return False
    wanted = _MONTHS.index(month) + 1
    for code in _CODE.findall(evidence):
        parts = re.split(r"[./-]", code)
        if len(parts) != 3 or ":" in code:
            continue
        pair = parts[1:] if len(parts[0]) == 4 else parts[:2] if len(parts[2]) == 4 else []
        numbers = [int(p) for p in pair]
        for m, d in (numbers, numbers[::-1]) if len(numbers) == 2 else ():
            if m == wanted and (day is None or Decimal(d) == day):
                return True
    return False


def rules_reason(sentence: str, passages: str, question: str = "") -> str:
    """Why the rules reject ``sentence`` against ``passages`` (joined by blank lines) and the
    question, or "" when every number and name in it occurs there, in the context the sentence
    gives it (see the module's docstring)."""
    text = _STAMP.sub(r"\1 ", plain(sentence))
    evidence = _STAMP.sub(r"\1 ", f"{passages}\n\n{question}")
    lowered = evidence.lower()
    codes = _CODE.findall(text)
    pieces = {p for c in codes for p in re.split(r"[.:/-]", c)}  # "05" of "2024-05-02" is no value of its own
    reason = _number_reason(text, evidence, codes, pieces) or _identifier_reason(text, lowered)
    if reason:
        return reason
    names = names_in(text, evidence)
    for name in names:
        if _occurs(name, lowered) or _dated(name, evidence):
            continue
        words = name.split()
        absent = [w for w in words if not _occurs(w, lowered)]
        if absent:
            return f"the name {absent[0]!r} is in no source"
        pairs = [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        if any(not _occurs(p, lowered) for p in pairs):
            return f"no source names {name!r}"
    terms = [w for w, _, _ in attached(text) if w not in pieces] + codes + names
    sentences = sentences_of(passages)
    return (_anchor_reason(text, terms, sentences, question) or _swap_reason(text, terms, sentences, question)
            or _owner_reason(text, terms, passages, question) or _repeat_reason(text, names, sentences)
            or _substitution_reason(text, sentences))


def _identifier_reason(text: str, lowered: str) -> str:
    """An e-mail address, handle or code the sources do not write. "utf8" is "UTF-8", "python3"
    "Python 3" and "@marta_s" a "(marta_s)" of the sources: letters and digits are compared with
    the separators between them taken out."""
    found = _IDENTIFIER.findall(text)
    joined = _JOINED.sub(r"\1", lowered) if found else ""
    for written in found:
        if not (_occurs(written, lowered) or _occurs(written.removeprefix("@"), joined)
                or _shortened(written, lowered)):
            return f"{written} is in no source"
    return ""


def _shortened(written: str, lowered: str) -> bool:
    """Whether ``written`` ("win11") shortens a word and number the sources write ("Windows 11"):
    its letters start the word, its digits are the number."""
    parts = re.fullmatch(r"([a-z]{2,})(\d+)", written)
    return bool(parts) and re.search(rf"(?<![\w@.]){parts[1]}[a-z]*[\s_-]*{parts[2]}(?!\d|\.\d)", lowered) is not None


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3 and w not in _COMMON}


def _anchor_reason(text: str, terms: list[str], sentences: list[str], question: str) -> str:
    """A name or number the sources give, but only in sentences (with their neighbours: "the
    company" there may name it) that share no other word with ``text``: the fact was moved to
    another context ("the regatta is on 19 May" where 19 May is the market's date)."""
    rest_of_question = _content(question)
    for term in terms:
        if _occurs(term, question.lower()):
            continue
        rest = _content(text) - _content(term) - rest_of_question
        holders = [_context(sentences, i) for i, s in enumerate(sentences) if _occurs(term, s.lower())]
        if len(rest) >= ANCHOR_MIN_WORDS and holders and not any(_content(h) & rest for h in holders):
            return f"the sources give {term} only in another context"
    return ""


def _context(sentences: list[str], i: int) -> str:
    """Sentence ``i`` with its neighbours; a heading's context is its whole section (a
    changelog's date heading is about the lines under it)."""
    level = _heading_level(sentences[i])
    end = i + ANCHOR_WINDOW + 1
    if level:
        while end < len(sentences) and not 0 < _heading_level(sentences[end]) <= level:
            end += 1
    return " ".join(sentences[max(0, i - ANCHOR_WINDOW):end])


def _heading_level(sentence: str) -> int:
    """How many "#" open a Markdown heading (0: no heading)."""
    return len(sentence) - len(sentence.lstrip("#"))


def _said(text: str) -> set[str]:
    """What a sentence says, to find the source sentence it comes from: its content words, and
    the numbers and codes it writes as written ("1.6.0", "2016")."""
    return _content(text) | {m.group(0) for m in _NUMBER.finditer(text)} | set(_CODE.findall(text))


def _kind(term: str) -> str:
    if _CODE.fullmatch(term):
        return "code"
    return "number" if _NUMBER.fullmatch(term) else "name"


def _swap_reason(text: str, terms: list[str], sentences: list[str], question: str) -> str:
    """A value swapped for another of the same document: the source sentence that says most of
    what ``text`` says beyond the question (``SWAP_MARGIN`` more than any sentence holding the value) gives another
    value of the same kind where ``text`` has this one ("released 2024-01-18" where the answer
    says 2024-04-12, another person in the chair)."""
    if not sentences:
        return ""
    lowered = text.lower()
    asked = _said(question)
    for term in terms:
        if _occurs(term.lower(), question.lower()):
            continue
        rest = _said(text) - _said(term) - {term} - asked
        overlap = [len(_said(s) & rest) for s in sentences]
        best = max(range(len(sentences)), key=overlap.__getitem__)
        holders = [overlap[i] for i, s in enumerate(sentences) if _occurs(term, s.lower())]
        if not holders or overlap[best] < SWAP_MIN_OVERLAP or max(holders) + SWAP_MARGIN > overlap[best]:
            continue
        there = sentences[best]
        kind = _kind(term)
        rivals = (_CODE.findall(there) if kind == "code" else [m.group(0) for m in _NUMBER.finditer(there)]
                  if kind == "number" else names_in(there, there))
        said = _said(text)
        rival = next((r for r in rivals if _kind(r) == kind and r not in said and not _occurs(r.lower(), lowered)), "")
        if rival:
            return f"the sources give {rival} there, not {term}"
    return ""


_VERSION = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){2,3}(?!\w|\.\d)")  # "4.7.0", not a date
_HEADING_LINE = re.compile(r"^#{1,6}\s.*$", re.MULTILINE)


def _owner_reason(text: str, terms: list[str], passages: str, question: str) -> str:
    """A value the sources write only in changelog headings of other versions than the one the
    question names: asked about 4.7.0, the answer gives the date of the heading "## Version
    4.8.0, released 2021-04-26". Only Markdown heading lines decide (a value also written
    anywhere else decides nothing), and only a question naming one version, answered by a
    sentence that names no other."""
    asked = set(_VERSION.findall(question))
    if len(asked) != 1 or set(_VERSION.findall(text)) - asked:
        return ""
    version = asked.pop()
    headings = _HEADING_LINE.findall(passages)
    if not any(version in _VERSION.findall(h) for h in headings):
        return ""
    for term in terms:
        if _occurs(term, question.lower()):
            continue
        pattern = re.compile(rf"(?<![\w.:/-]){re.escape(term)}(?![\w:/-]|\.\d)", re.IGNORECASE)
        if len(pattern.findall(passages)) != sum(len(pattern.findall(h)) for h in headings):
            continue
        owners = {_owner(h, m.start()) for h in headings for m in pattern.finditer(h)}
        if owners and "" not in owners and version not in owners:
            return f"the sources give {term} for {', '.join(sorted(owners))}, not {version}"
    return ""


def _owner(heading: str, at: int) -> str:
    """The version a heading names before position ``at`` ("" when none)."""
    before = _VERSION.findall(heading[:at])
    return before[-1] if before else ""


def _repeat_reason(text: str, names: list[str], sentences: list[str]) -> str:
    """A name written twice where the one source sentence naming it has another name in one of
    its places, between the same two words ("Ada Holm chaired and Ada Holm took the minutes" for
    "... and Ben Ito took the minutes"; "Present: Ada Holm (chair), Ben Ito, Ada Holm" for
    "Present: Cy Dunn (chair), Ben Ito, Ada Holm"). A sentence's start is no place of its own
    ("Ada Holm will ..." where the source starts "Ben Ito will ...": too common a place), and a
    name the sources write in more than one sentence may be repeated by an answer that joins them."""
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    for name in twice:
        holding = [s for s in sentences if _occurs(name.lower(), s.lower())]
        if len(holding) != 1:
            continue
        there = holding[0]
        moved = [p for p in _places(text, name) if p[0] and p not in _places(there, name)]
        for rival in names_in(there, there):
            if moved and not _occurs(rival.lower(), text.lower()) and set(moved) & set(_places(there, rival)):
                return f"the sources name {rival} there, not {name} again"
    return ""


def _places(text: str, name: str) -> list[tuple[str, str]]:
    """The words either side of each place ``text`` writes ``name`` ("" at an end), lower case
    and without a possessive: where in its sentence a name stands."""
    words = [w.group(0).lower().removesuffix("'s").removesuffix("’s") for w in _TOKEN.finditer(text)]
    parts = name.lower().split()
    return [(words[i - 1] if i else "", words[i + len(parts)] if i + len(parts) < len(words) else "")
            for i in range(len(words) - len(parts) + 1) if words[i:i + len(parts)] == parts]


def _substitution_reason(text: str, sentences: list[str]) -> str:
    """A source sentence copied with its colour changed: "the status light turns blue when
    charging is complete" for "... turns amber when ...". Only a colour for a colour, between
    copied words on both sides: any other word changed may be a synonym ("key" for "button"), a
    spelling ("gray") or a contraction, which a faithful answer writes too."""
    mine = [w.lower() for w in _COPY_WORD.findall(text)]
    if not _COLOURS.keys() & set(mine):
        return ""  # no colour to have changed: no source sentence need be aligned (the costly part)
    for sentence in sentences:
        theirs = [w.lower() for w in _COPY_WORD.findall(sentence)]
        if not _COLOURS.keys() & set(theirs):
            continue
        ops = difflib.SequenceMatcher(None, mine, theirs, autojunk=False).get_opcodes()
        changed = [op for op in ops if op[0] != "equal" and op[1] and op[3]  # none at either end
                   and op[2] < len(mine) and op[4] < len(theirs)]
        if len(changed) != 1 or changed[0][0] != "replace":
            continue
        _, i1, i2, j1, j2 = changed[0]
        before = sum(b - a for tag, a, b, _, _ in ops if tag == "equal" and b <= i1)
        after = sum(b - a for tag, a, b, _, _ in ops if tag == "equal" and a >= i2)
        new, old = mine[i1:i2], theirs[j1:j2]
        if (min(before, after) >= SUBSTITUTION_SIDE and len(new) == len(old) == 1
                and new[0] in _COLOURS and old[0] in _COLOURS and _COLOURS[new[0]] != _COLOURS[old[0]]):
            return f"the sources say {old[0]} there, not {new[0]}"
    return ""


# --- the model ---------------------------------------------------------------------------------
def _overlap(a: str, b: str) -> int:
    return len(content_words(a) & content_words(b))


def closest(sentence: str, passages: list[str], n: int = JUDGE_PASSAGES) -> list[str]:
    """The ``n`` passages sharing most words with ``sentence``, in their original order."""
    ranked = sorted(range(len(passages)), key=lambda i: -_overlap(sentence, passages[i]))[:n]
    return [passages[i] for i in sorted(ranked)]


JUDGE_SYSTEM = ("You check facts. Given passages and one sentence, decide whether the passages "
                "state what the sentence says: every name, number and fact in it. If any detail "
                "is missing from the passages or different in them, it is not supported.")


class ModelJudge:
    """The chat model as the judge, under the JSON grammar of ``Judgement``; greedy."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def judge(self, sentence: str, passages: list[str], question: str) -> Judgement:
        shown = "\n\n".join(f"[{i}] {p[:JUDGE_PASSAGE_CHARS]}"
                            for i, p in enumerate(closest(sentence, passages), 1))
        user = (f"Passages:\n{shown}\n\nSentence: {sentence}\n\n"
                "Do the passages support the sentence? Answer with supported (true or false) and "
                "a short reason.")
        request = GenerationRequest(
            messages=[ChatMessage(role="system", content=JUDGE_SYSTEM), ChatMessage(role="user", content=user)],
            max_tokens=max_output_tokens(Judgement), temperature=0.0, seed=0)
        return self.runtime.generate_json(request, Judgement)


# --- the critic --------------------------------------------------------------------------------
def critique(answer: str, passages: list[str], question: str = "", mode: CriticMode = "rules",
             judge: Judge | None = None) -> CriticReport:
    """The verdict on each sentence of ``answer`` against ``passages`` (and the question).
    ``mode`` "model" needs ``judge``; a judge that fails leaves the rules' verdict and says so."""
    started = time.perf_counter()
    if mode == "off":
        return CriticReport(mode=mode)
    if not passages:
        return CriticReport(mode=mode, note="no sources: nothing to check against")
    if mode == "model" and judge is None:
        raise ValueError("the model critic needs a judge")
    evidence = "\n\n".join(passages)
    verdicts: list[SentenceVerdict] = []
    notes: list[str] = []
    for sentence in sentences_of(answer):
        reason = rules_reason(sentence, evidence, question)
        verdict = SentenceVerdict(sentence=sentence, supported=not reason, reason=reason)
        if mode == "model" and not reason and len(plain(sentence).split()) >= MIN_JUDGED_WORDS:
            assert judge is not None
            try:
                said = judge.judge(plain(sentence), passages, question)
            except StructuredOutputError as exc:
                notes.append(f"the model gave no verdict: {str(exc)[:120]}")
            else:
                if not said.supported:
                    verdict = SentenceVerdict(sentence=sentence, supported=False, by="model",
                                              reason=said.reason.strip() or "the model found no source for it")
        verdicts.append(verdict)
    return CriticReport(mode=mode, sentences=verdicts, unsupported=sum(not v.supported for v in verdicts),
                        seconds=round(time.perf_counter() - started, 3), note="; ".join(dict.fromkeys(notes)))


# --- what the fronts show ----------------------------------------------------------------------
def flagged_in(meta: dict) -> list[SentenceVerdict]:
    """The unsupported sentences stored with an answer (``meta["critic"]``); none when unchecked."""
    stored = meta.get("critic") or {}
    return [SentenceVerdict.model_validate(v) for v in stored.get("sentences", []) if not v.get("supported", True)]


def unsupported_line(count: int) -> str:
    """The line under an answer: "2 sentences not supported by your documents"."""
    return f"{count} sentence{'' if count == 1 else 's'} not supported by your documents"
