"""Learning material from real prose: every fact of a document, resolved and restated several ways.

Training on a document's sentences teaches the model to continue them, not to answer questions
about them; rehearsing the facts as questions with answers, in several wordings and orders, is
what lets a small model retrieve them closed book (Allen-Zhu & Li 2023, "Physics of Language
Models 3.1": knowledge augmentation). The older extractor (``rehearsal.extract``) took only each
sentence's last span as the answer. Real prose is harder, so this module:

1. reads the document as units: prose sentences, list items, ``Key: value`` lines and markdown
   table rows (a row becomes one statement per column, worded with the header);
2. resolves references, walking the units in order: pronouns become the last named entity of a
   fitting kind, definite descriptions ("the town") the last entity of that type, and a statement
   that still names nothing gets the nearest heading (or the title) as its subject;
3. finds every answer-bearing span of a statement (dates, money, numbers with units, quoted
   titles, names), each with the wh-phrase that asks for it;
4. restates: per span a question in place ("Ada Quill was born in what year?"), one with the
   verb moved forward where the sentence has a form of "be", and the question answered by the
   whole statement; per statement the resolved text and its clauses reordered; per entity a
   passage collecting everything said about it, and per co-occurring pair a linking statement
   (Yang et al. 2024, "Synthetic continued pretraining": EntiGraph, without a model).

Pure Python and regular expressions, deterministic, no model: a few milliseconds a document.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field, replace
from itertools import combinations

from engines.ttt.prose_units import Unit, units
from engines.ttt.rehearsal import QA

MAX_STATEMENT_WORDS = 60
MAX_ANSWER_WORDS = 6
MAX_SPANS = 4  # answer spans asked per statement
MAX_PAIRS = 240  # question/answer pairs per document (each also draws recalled pairs)
MAX_ENTITY_STATEMENTS = 8  # statements per entity passage
MAX_LINKS = 40  # entity-pair linking statements per document

# --- words the rules need (general English, as regular expressions) ---------------------------
_MONTHS = "|".join(m for m in calendar.month_name if m)
_WEEKDAYS = "|".join(calendar.day_name)
_MONTH = f"(?:{_MONTHS})"
_WEEKDAY = f"(?:{_WEEKDAYS})"
_NUMBER_WORDS = "two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|dozen"
_FUNCTION = re.compile(
    r"^(?:the|a|an|in|on|at|of|for|to|by|with|from|after|before|during|since|until|when|while|"
    r"this|that|these|those|there|here|each|every|some|all|most|both|many|one|its|his|her|their|"
    r"our|my|your|we|you|i|he|she|it|they|as|if|but|and|or|so|then|today|later|now|also|no|not|"
    r"once|where|what|who|which|how|why|yes|because|although|though|under|over|between|among|"
    r"about|around|near|only|just|every|other|another|such|any|few|several|first|last|next|unless)$",
    re.IGNORECASE)
# A sentence's opening auxiliary or "Please" ("Can you chase it, please?") is no name; mid-sentence,
# "Can" or "Do" may be part of one.
# A word that opens a sentence alone and names nothing ("Two engineers start", "Lunch was at ...",
# "Never rinse it"); inside a longer name it stays ("Three Rivers Stadium", "Morning Star").
_LONE_OPENING = re.compile(rf"^(?:{_NUMBER_WORDS}|one|tomorrow|yesterday|tonight|morning|afternoon|evening|"
                           r"breakfast|lunch|dinner|supper|never|always)$", re.IGNORECASE)
_OPENING_AUXILIARY = re.compile(
    r"^(?:can|could|would|should|shall|might|must|do|does|did|is|are|was|were|has|have|had|please|"
    r"thank|thanks|dear|hello|hi|hey|welcome|congratulations|sorry)$",  # and greetings: "Thank you for ..."
    re.IGNORECASE)
# What follows an imperative's verb ("Spread the dough", "Charge it", "Add 2 eggs", "Bake for
# 40 minutes"); a name opening a sentence is followed by its verb ("Orne is ...").
_OBJECT = r"(?:the|a|an|it|them|this|that|these|those|your|its|some|all|each|every|both|any|\d|everything)"
_IMPERATIVE_OBJECT = re.compile(
    rf"^\s+(?:{_OBJECT}|for|to|in|on|with|at|into|from|up|down|off|out|over)\b", re.IGNORECASE)
# What a command's verb takes ("Rinse it", "Tip in everything"), not a preposition ("Work at the
# press was hard").
_COMMAND_OBJECT = re.compile(rf"^\s+(?:(?:in|on|up|down|off|out|over|back)\s+)?{_OBJECT}\b", re.IGNORECASE)
_PERSON_PRONOUN = re.compile(r"^(?:he|she|him|his|her|hers)$", re.IGNORECASE)
_THING_PRONOUN = re.compile(r"^(?:it|its)$", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(?:he|she|him|his|her|it|its|they|them|their)\b", re.IGNORECASE)
_CONNECTOR = re.compile(r"^(?:of|de|van|von|der|du|la|le|&)$")
_CALENDAR_WORDS = "|".join([_MONTHS, _WEEKDAYS])
_CALENDAR = re.compile(rf"^(?:{_CALENDAR_WORDS})$")
# A sentence whose subject is a common noun ("The pallet left ..."): its next sentence's "It" is
# that thing, not the last name.
_SUBJECT_PHRASE = re.compile(
    r"^(?P<phrase>The\s+(?:[a-z][\w-]*\s+){0,2}?[a-z][\w-]*)\s+(?:is|was|has|had|will|can|could|would|"
    r"[a-z]{2,}(?:s|ed)|left|went|came|took|made|got|ran|fell|rose|began|sold|bought|held|kept|found|brought|"
    r"sent|cost|hit|put|set|stood|grew|broke|drove|flew|gave|lost|won|met|paid|said|told|wrote|arrived)\b")
_APPOSITIVE = re.compile(r"\b[Tt]he\s+(?P<noun>[a-z]{3,20}),\s+$")  # "the mayor, Rinvena Losen"
_APPOSITIVE_TOLD = re.compile(r"\b[Tt]he\s+(?P<noun>[a-z]{3,20}),?\s+$")  # "the operator Calder Lines said"
_PREPOSITION_BEFORE = re.compile(r"\b(?:in|on|at|of|after|before|during|from|to|for|with|by|since|until|under|"
                                 r"over|across|near|into|through|about)\s+$", re.IGNORECASE)
_REPLY = re.compile(r"^(?:(?:Re|Fwd?|AW|WG)\s*:\s*)+", re.IGNORECASE)  # before a reply's subject: "Re: Fwd: "
_ADDRESS = re.compile(r"\S+@\S+|\bhttps?://\S+|\bwww\.\S+")
_PREPOSITION_KEY = re.compile(r"^(?:From|To|Cc|Bcc|By|For|With|Via)$")
_ATTENDANCE_KEY = re.compile(r"^(?:Present|Absent|Attending|In attendance)$")
_DEFINITE = re.compile(r"\b[Tt]he\s+(?P<noun>[a-z]{3,20})\b(?!\s+(?:of|that|which|who)\b)")
_TITLE = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof|Professor|Sir|Dame|Lady|Lord|Captain|Judge)\.?\s+$")
_ORG_WORD = re.compile(
    r"^(?:Ltd|Inc|Co|Company|Corporation|Corp|Group|Press|Works|Bank|Trust|Society|Association|"
    r"Foundation|Studio|Studios|Labs|Partners|Brothers|Holdings|Industries|Systems|Media|Records|"
    r"Club|Union|Institute|Council|Agency|GmbH|AG|LLC|plc)\.?$")
_ORG_NOUN = re.compile(r"^(?:company|firm|business|brand|maker|manufacturer|publisher|label|operator|"
                       r"organisation|organization|charity|startup|employer)$")
_PLACE_NOUN = re.compile(r"^(?:town|city|village|place|region|country|island|valley|harbour|"
                         r"harbor|district|county|province|settlement|port)$")
_PLACE_WORD = re.compile(
    r"^(?:Street|Road|Lane|Avenue|Square|Bridge|River|Lake|Hill|Hills|Park|Bay|Island|Islands|"
    r"Valley|Mountain|Mountains|Forest|Coast|Harbour|Harbor|Quay|Station|Market|Hall|Castle)$")
_PLACE_PREP = re.compile(r"(?:\b(?:in|at|near|from|to|into|outside|across)\s+)$", re.IGNORECASE)
_WHERE_PREP = re.compile(r"\b(?:in|at|near)\s+$", re.IGNORECASE)
_BE = re.compile(r"\s(is|was|are|were)\s")
_OPENING_WORD = re.compile(r"^(?:[A-Z][a-z]+(?:ing|ed|ly)|Built|Born|Made|Known|Written|Held|Set|Found|Grown|Seen|Given|Taken|Left|Kept|Sold|Bought|Run|Led)$")  # a participle or adverb opening a sentence
_OPENING_CLAUSE = re.compile(r"^(?:[A-Z][a-z]+(?:ing|ed|ly)|Built|Born|Founded|In|On|At|By|After|Before|During|Since|"
                             r"Until|From|For|With|Every|Once|Although|While|When)\b[^,]{0,80},\s+")
_RELATIVE = re.compile(r",\s+(?:which|who)\s+(?P<clause>[^,;]+?)(?=[,;.]|$)")
_JOINED = re.compile(r"(?:;\s+|,\s+(?:although|though|while|whereas|but|and)\s+|\s+(?:although|though)\s+)"
                     r"(?=[A-Z]|(?:he|she|it|they|the|its|his|her|their)\b)")
_OPENING_PHRASE = re.compile(r"^(?P<verb>[A-Z][a-z]+(?:ing|ed))\s+(?P<phrase>[^,]{3,80}),\s+"
                             r"(?P<rest>[A-Z][^,]*?\s+(?:is|was|are|were|has|had|lies|stands)\b.*)$")
_DO_VERB = re.compile(r"^(?P<subject>.+?)\s+(?P<verb>[a-z]{3,}?(?:s|es|ed))\s+(?P<adverb>(?:about|around|"
                      r"nearly|almost|roughly|some|over|just|more than|fewer than|up to)\s+)?$")
_LEADING_PREP = re.compile(r"^(?:In|On|At|By|After|Before|During|Since|Until|From|For|With|Every)\b")
_TRAILING_PHRASE = re.compile(r"^(?P<rest>.+?),?\s+(?P<phrase>(?:in|on|at|by|since|until|from|for|"
                              r"during|every)\s+[^,]+)$")

# --- structure of a document -------------------------------------------------------------------

# --- answer-bearing spans, in priority order (an earlier kind wins an overlap) ----------------
_CAPITAL_RUN = re.compile(
    r"(?<![\w'’°])(?:[A-Z][\w’'-]*[\w]|[A-Z])(?:\s+(?:(?:of|de|van|von|der|du|la|le|&)\s+)?"
    r"(?:[A-Z][\w’'-]*[\w]|[A-Z]\.?|\d+))*")
_SPAN_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("date", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH},?\s+\d{{4}}\b|"
                        rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b|\b\d{{4}}-\d\d-\d\d\b"),
     "what date"),
    ("month", re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"), "what month"),
    ("day", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\b|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b"),
     "what date"),  # "on 3 May": a date without its year
    ("weekday", re.compile(rf"\b{_WEEKDAY}\b"), "what day"),
    ("month name", re.compile(rf"(?:(?<=\bin )|(?<=\bby )|(?<=\bsince )|(?<=\buntil )|(?<=\bfrom )|"
                              rf"(?<=\bduring ))(?:early |late |mid-)?{_MONTH}\b(?!\s+[A-Z])"), "what month"),  # not "by August Derleth"
    ("money", re.compile(r"[£$€¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:million|billion|thousand|bn|m|k)\b)?"),
     "how much"),
    ("percent", re.compile(r"\b\d[\d,]*(?:\.\d+)?\s?(?:%|per\s?cent\b|percent\b)"), "what percentage"),
    ("temperature", re.compile(r"[-−]?\b\d[\d,]*(?:\.\d+)?\s?°\s?[CF]\b"), "what temperature"),
    ("time", re.compile(r"\b\d{1,2}[:.]\d\d\s?(?:[ap]\.?m\.?)?(?!\d)|\b\d{1,2}\s?[ap]\.m\.(?!\w)"
                        r"|\b\d{1,2}\s?[ap]m\b"), "what time"),
    ("quantity", re.compile(r"\b\d(?:[\d,]*\d)?(?:\.\d+)?(?:\s?[-–]\s?\d(?:[\d,]*\d)?(?:\.\d+)?)?\s?"
                            r"(?P<unit>(?:cubic |square )?[a-zµ][A-Za-zµ]{0,13}|[A-Z]{1,3})\b"),
     "how many"),
    ("counted", re.compile(rf"(?:^(?i:{_NUMBER_WORDS})|(?<![\w-])(?:{_NUMBER_WORDS}))(?:-(?:{_NUMBER_WORDS}))?"
                           rf"\s+(?P<unit>[a-z][a-z]{{1,13}})\b"), "how many"),  # "two weeks", "forty-five minutes"
    ("year", re.compile(r"\b(?:1[0-9]|20)\d\d(?:s)?\b"), "what year"),
    ("title", re.compile(r"\"[^\"]{2,60}\"|“[^”]{2,60}”"), "what title"),
    ("code", re.compile(r"(?<![\w-])--[a-z][\w-]+|(?<![\w@.-])[a-z]\w+(?:[._][a-z]\w+)+(?![\w@-])"),
     "what"),  # --dry-run, ttt.lr (not a part of an address)
    ("number", re.compile(r"\b\d[\d,]*(?:\.\d+)?\b"), "what number"),
]


@dataclass(frozen=True)
class Span:
    """An answer inside a statement, and the wh-phrase that replaces ``start:end`` to ask it."""

    answer: str
    start: int
    end: int
    wh: str


@dataclass(frozen=True)
class Statement:
    """One self-contained fact: references resolved, with what it is about."""

    text: str
    subject: str
    entities: tuple[str, ...]
    spans: tuple[Span, ...]


@dataclass
class _Entity:
    name: str
    kind: str  # "person", "org", "place" or "" (not known yet)
    types: set[str] = field(default_factory=set)  # nouns it was called ("town", "bridge")
    gender: str = ""  # the pronoun that first stood for it ("she", "he"), once one did
    mentions: int = 0


class Resolver:
    """Walks the units in order, remembering the entities named so far, and rewrites each unit so
    it stands alone: pronouns and definite descriptions become names, and a unit that names
    nothing is put under its heading or the title."""

    def __init__(self, text: str, title: str) -> None:
        self.raw_title = title
        subject = _REPLY.sub("", title)  # a reply's subject
        self.title = subject[:1].upper() + subject[1:]
        prose = _ADDRESS.sub(" ", text)  # "drudelen.delez@tamshi.com" does not make "Drudelen" a word
        self.lower = set(re.findall(r"\b[a-z][\w'-]*\b", prose))
        self.proper = _proper_words(text, self.lower)
        self.entities: dict[str, _Entity] = {}
        self.recent: list[str] = []  # entity names, the latest subject last
        self.inserted = ""  # the topic the last resolve() put into its unit's text, if any
        self.subject: re.Match[str] | None = None  # the last sentence's opening "The pallet", if it named nothing
        self.subject_heading = ""
        self.text = text
        self._first_names: dict[str, bool] = {}  # _a_name's answers for words not in proper

    # --- entities
    def names(self, sentence: str) -> list[tuple[int, int, str]]:
        """Named entities in a sentence (start, end, name): runs of capitalised words, where an
        opening word counts only if the document treats it as a name (never written in lower
        case, or capitalised mid-sentence elsewhere)."""
        found = []
        for m in _CAPITAL_RUN.finditer(sentence):
            words, start = m.group().split(), m.start()
            opening = start == 0 or sentence[:start].rstrip().endswith((":", "\"", "“", "—", "("))
            while words and (self._common(words[0], opening) or words[0][0].isdigit()):
                start += len(words[0]) + 1
                words, opening = words[1:], False
                if words and _CONNECTOR.match(words[0]):
                    start += len(words[0]) + 1
                    words = words[1:]
            while words and (self._common(words[-1], False) or words[-1][0].isdigit()
                             or _CONNECTOR.match(words[-1])):
                words = words[:-1]
            if words:
                words[-1] = re.sub(r"['’]s?$", "", words[-1])  # "Quill's": the name is "Quill"
            if not words or (opening and len(words) == 1 and words[0].rstrip(".") not in self.proper
                             and _IMPERATIVE_OBJECT.match(sentence[start + len(words[0]):])):
                continue  # none, or an imperative's verb: "Spread the dough"
            if opening and len(words) == 1 and _LONE_OPENING.match(words[0]):
                continue
            if (start == 0 and len(words) == 1 and sentence[len(words[0]):].startswith(":")
                    and not self._a_name(words[0])):
                continue  # a list's lead-in ("Ingredients: 250 g flour"), not a name
            name = " ".join(words)
            found.append((start, start + len(name), name))
        return found

    def _common(self, word: str, opening: bool) -> bool:
        """Whether a capitalised word is an ordinary word (a name's neighbour, not part of it)."""
        bare = word.rstrip(".")
        if _FUNCTION.match(bare) or _CALENDAR.match(bare) or _PRONOUN.fullmatch(bare):
            return True
        if opening:
            if _OPENING_AUXILIARY.match(bare):
                return True
            if bare not in self.proper and _OPENING_WORD.match(bare):
                return True  # "Lying 26 km north of ...", "Founded in 1901, ...": not a name
            return bare not in self.proper and bare.lower() in self.lower and not _TITLE.search(bare + " ")
        return False

    def note(self, name: str, before: str, after: str) -> str:
        """Record a mention and what the words around it say of its kind; returns the canonical
        name (a short form of a longer name maps to it)."""
        full = self.canonical(name)
        entity = self.entities.setdefault(full, _Entity(full, ""))
        entity.mentions += 1
        words = full.split()
        if _ORG_WORD.match(words[-1]):
            entity.kind = "org"
        elif _PLACE_WORD.match(words[-1]):
            entity.kind = entity.kind or "place"
        elif _TITLE.search(before):
            entity.kind = "person"
        elif not entity.kind and _PLACE_PREP.search(before) and len(words) == 1:
            entity.kind = "place"
        if len(words) > 1:
            entity.types.add(words[-1].lower())
        for noun in _called(after) + _called_before(before, after):
            entity.types.add(noun)
            if _ORG_NOUN.match(noun):
                entity.kind = entity.kind or "org"
            elif _PLACE_NOUN.match(noun):
                entity.kind = entity.kind or "place"
        if (not entity.kind and 2 <= len(words) <= 3 and words[-1].lower() not in self.lower
                and not any(c.isdigit() for c in full)):  # "Vikki T76" is a product, not a person
            entity.kind = "person?"  # First Last: a person until a pronoun says otherwise
        return full

    def canonical(self, name: str) -> str:
        """A known entity's full name when ``name`` is part of it and of no other."""
        if name in self.entities:
            return name
        longer = [e for e in self.entities if f" {name} " in f" {e} "]
        return longer[0] if len(longer) == 1 else name

    def kind(self, name: str) -> str:
        entity = self.entities.get(self.canonical(name))
        return entity.kind.rstrip("?") if entity else ""

    def _fits(self, name: str, pronoun: str) -> bool:
        """Whether an entity can be what ``pronoun`` stands for."""
        entity = self.entities[name]
        low = pronoun.lower()
        if _PERSON_PRONOUN.match(low):
            gender = "f" if low in ("she", "her", "hers") else "m"
            return entity.kind in ("person", "person?", "") and entity.gender in ("", gender)
        if _THING_PRONOUN.match(low):
            return entity.kind in ("org", "place", "")
        return entity.kind == "org" or " and " in name

    def _antecedent(self, pronoun: str, before: list[str]) -> str | None:
        """What a pronoun stands for: for he/she the subject of its own sentence if it fits, else
        the nearest fitting name before it in the sentence (it, they) or the latest one before."""
        person = bool(_PERSON_PRONOUN.match(pronoun))
        if person and before and self._fits(before[0], pronoun):
            return before[0]
        ordered = before if person else list(reversed(before))
        for name in ordered + list(reversed(self.recent)):
            if name in self.entities and self._fits(name, pronoun):
                return name
        return None

    def _described(self, noun: str) -> str | None:
        """The entity a definite description ("the town") points at: the latest called so, or
        the latest company for "the company" and the latest place for "the town"."""
        for name in reversed(self.recent):
            if noun in self.entities[name].types:
                return name
        for name in reversed(self.recent):
            kind = self.entities[name].kind
            if (_ORG_NOUN.match(noun) and kind == "org") or (_PLACE_NOUN.match(noun) and kind == "place"):
                return name
        return None

    # --- rewriting
    def resolve(self, unit: Unit) -> str:
        """The unit's text with references replaced and its subject made explicit (the topic
        put in, if one was, is kept in ``inserted``)."""
        self.inserted = ""
        if unit.kind == "pair" and self._names_someone(unit.key) and unit.text[:1].islower():
            unit = replace(unit, text=f"{unit.key}: {unit.text}.", kind="item")  # "Dunka: book the van"
        if unit.kind in ("pair", "field"):
            self.inserted = (self.title_thing() if unit.kind == "field" else "") or self.topic(unit.heading)
            return _field_statement(unit.key, unit.text, self.inserted)
        if unit.heading != self.subject_heading:  # "It" under a new heading is not the last section's thing
            self.subject = None
        text = self._pronouns(self._descriptions(unit.text))
        named: list[str] = []
        opening = _OPENING_CLAUSE.match(text)
        main = ""  # the first name after an opening phrase ("Lying 26 km from Orne, Mirvale ...")
        for start, end, name in reversed(self.names(text)):
            full = self.note(name, text[:start], text[end:])
            if full != name:
                text = text[:start] + full + text[end:]
            named.insert(0, full)
            if opening and start >= opening.end():
                main = full
        if main:
            named.remove(main)
            named.insert(0, main)
        self.subject = _SUBJECT_PHRASE.match(text) if unit.kind == "sentence" and not named else None
        self.subject_heading = unit.heading
        if named:
            if unit.kind != "row":  # a pronoun after a table seldom means its last row
                self.recent = [n for n in self.recent if n not in named] + list(reversed(named[1:])) + [named[0]]
            return text
        topic = self.topic(unit.label or unit.heading)
        if unit.label and unit.label != topic:  # "**Office move.** We leave on 3 May."
            label = unit.label if unit.label.split()[0] in self.proper else _lowered(unit.label)
            topic = f"{topic}, {label}" if topic else unit.label
        if topic and topic.lower() not in text.lower():
            text = f"{topic}: {text[0].lower() if text[1:2].islower() else text[0]}{text[1:]}"
            self.inserted = topic
        return text

    def _names_someone(self, key: str) -> bool:
        """Whether a line's key is a name the document uses ("Dunka: book the van", an action
        in minutes), not a field ("Place: the kitchen")."""
        words = key.split()
        return 0 < len(words) <= 3 and all(self._a_name(w) for w in words)

    def _a_name(self, word: str) -> bool:
        """Whether the document uses a capitalised word as a name: mid-sentence, or as the first
        name of a full name ("Orla" of "Present: Orla Benn, ...")."""
        if word in self.proper:
            return True
        if word not in self._first_names:
            following = re.findall(rf"\b{re.escape(word)}\s+([A-Z][\w'-]*)", self.text)
            self._first_names[word] = any(w in self.proper for w in following)
        return self._first_names[word]

    def title_thing(self) -> str:
        """The thing the title names that the document has named most so far (the product a
        specification table or a command is about, not its guide's title); "" when none."""
        things = [e for e in self.entities.values() if e.kind not in ("person", "person?") and e.name in self.title]
        return max(things, key=lambda e: e.mentions).name if things else ""

    def _imperative(self, text: str) -> bool:
        """Whether a sentence opens with a command ("Charge it ...", "Unpack everything ..."): a
        capitalised word the document does not use as a name, before what a verb takes."""
        text = re.sub(r"^(?:Never|Always|Please|Do not|Don't|Then|Now|First|Finally),?\s+(?=[a-z])", "", text)
        text = text[:1].upper() + text[1:]
        m = re.match(r"^([A-Z][a-z]+)\b", text)
        return bool(m) and m[1] not in self.proper and not _FUNCTION.match(m[1]) and not _OPENING_WORD.match(m[1]) \
            and bool(_COMMAND_OBJECT.match(text[m.end():]))

    def topic(self, heading: str) -> str:
        """What an unnamed unit is about: its heading if that names a known entity, else the
        title, else the latest subject."""
        if heading and any(self.canonical(n) in self.entities for _, _, n in self.names(heading)):
            return heading
        if heading and heading != self.raw_title and self.title and re.search(r"\d", heading):
            return f"{self.title}, {heading}"  # a changelog's version, a diary's day
        return self.title or (self.recent[-1] if self.recent else heading)

    def _pronouns(self, text: str) -> str:
        mentions = self.names(text)
        for start, end, name in mentions:
            self.note(name, text[:start], text[end:])
        resolved: list[tuple[int, str]] = [(s, self.canonical(n)) for s, _, n in mentions]
        imperative = self._imperative(text)

        def swap(m: re.Match[str]) -> str:
            word = m.group()
            ordered = sorted(resolved)
            before = [n for at, n in ordered if at < m.start()]
            if word.lower() in ("he", "she"):  # "Lunch was at Seldru Grill; Bepel paid before he left"
                clause = text.rfind(";", 0, m.start())
                before = [n for at, n in ordered if clause < at < m.start()] or before
            if m.start() == 0 and _THING_PRONOUN.match(word) and self.subject:  # "The pallet left
                phrase = self.subject["phrase"]  # Mirvale. It was stopped": the pallet, not Mirvale
                return f"{phrase}'s" if word.lower() == "its" else phrase
            if imperative and _THING_PRONOUN.match(word):  # "Charge it" in a manual: its product;
                name = self.title_thing() or None  # "leave it covered" in a recipe: the dough, unnamed
            else:
                name = self._antecedent(word, before)
            if name is None:
                return word
            entity = self.entities[name]
            if _PERSON_PRONOUN.match(word):
                entity.kind = "person"
                entity.gender = entity.gender or ("f" if word.lower() in ("she", "her", "hers") else "m")
            elif _THING_PRONOUN.match(word) and entity.kind == "person?":
                entity.kind = ""
            resolved.append((m.start(), name))
            return f"{name}'s" if _possessive(word, text[m.end():]) else name

        return _PRONOUN.sub(swap, text)

    def _descriptions(self, text: str) -> str:
        def swap(m: re.Match[str]) -> str:
            name = self._described(m["noun"].lower())
            return name if name else m.group()

        return _DEFINITE.sub(swap, text)


def _field_statement(key: str, value: str, topic: str) -> str:
    """A ``Key: value`` line about ``topic`` as a sentence: "The price of Shop is £40.", and for
    a preposition or an attendance key "Order 58 is from Ulteven Druez." and "Present at Minutes
    of the garden committee: Orla Benn, Kofi."; a reply's "Subject: Re: ..." is its topic again:
    nothing ("" is no statement)."""
    if key.lower() == "subject":
        value = _REPLY.sub("", value)
        if topic and value.strip(" .").lower() == topic.lower():
            return ""  # the subject the thread is already about says nothing new
    if not topic:
        return f"{key}: {value}."
    if _PREPOSITION_KEY.match(key):
        return f"{topic} is {key.lower()} {value}."
    if _ATTENDANCE_KEY.match(key):
        return f"{key} at {topic}: {value}."
    return f"The {_lowered(key)} of {topic} is {value}."


def _proper_words(text: str, lower: set[str]) -> set[str]:
    """Capitalised words the document uses as names: seen capitalised after a sentence's first
    word, and never written in lower case."""
    seen = {m.group() for m in re.finditer(r"(?<=[a-z,;)] )[A-Z][\w'-]*", text)}
    return {w for w in seen if w.lower() not in lower}


def _called(after: str) -> list[str]:
    """Nouns an entity is called right after its name: ", a small town" / " is a company"."""
    m = re.match(r"^(?:,\s+|\s+(?:is|was|are|were)\s+)(?:a|an|the)\s+(?P<words>[a-z][a-z -]{0,60}?)"
                 r"(?=[,.;]|\s+(?:in|on|at|of|for|with|that|which|who|near|from|by|founded|run|owned|known)\b|$)",
                 after)
    if not m:
        return []
    return [m["words"].split()[-1]]


def _called_before(before: str, after: str) -> list[str]:
    """The noun a name is said to be right before it: "its best-known employer is Dundru", "the
    mayor, Rinvena Losen", "the operator Calder Lines said" (not "the handheld GPS unit")."""
    m = re.search(r"\b(?P<noun>[a-z]{3,20})\s+(?:is|was|are|were)\s+$", before)
    if m:
        return [] if _FUNCTION.match(m["noun"]) else [m["noun"]]
    told = re.match(r"^(?:[,.;:)]|\s+(?:said|says|is|was|has|had|will)\b)", after)
    m = (_APPOSITIVE_TOLD if told else _APPOSITIVE).search(before)
    if not m or _FUNCTION.match(m["noun"]) or not before[:m.start()].strip() \
            or _PREPOSITION_BEFORE.search(before[:m.start()]):
        return []  # "After the war, Mirvale ...", "the mayor of the town, Rinvena Losen": no apposition
    return [m["noun"]]


def _possessive(word: str, after: str) -> bool:
    """Whether a pronoun is possessive ("her shop"), not an object ("met her in")."""
    low = word.lower()
    if low in ("his", "its", "their"):
        return True
    if low != "her":
        return False
    nxt = re.match(r"^\s+([a-z][\w-]*)", after)
    return bool(nxt) and not re.match(r"^(?:to|in|on|at|for|with|from|by|and|as|again|once|that|about)$", nxt[1])


# --- answers -------------------------------------------------------------------------------------

def spans(text: str, names: list[tuple[int, int, str]], kinds: dict[str, str],
          known: tuple[str, ...] = ()) -> list[Span]:
    """Every answer-bearing span of a statement with its wh-phrase, left to right, no overlaps."""
    taken: list[tuple[int, int]] = []
    found: list[Span] = []

    def add(start: int, end: int, wh: str) -> None:
        while end > start and text[end - 1].isspace():  # "09:10 train": the time, not its space
            end -= 1
        if any(start < e and s < end for s, e in taken):
            return
        answer = re.sub(r"['’]s$", "", text[start:end].strip(" ,.;:\"“”"))
        if not answer or len(answer.split()) > MAX_ANSWER_WORDS:
            return
        taken.append((start, end))
        found.append(Span(answer=answer, start=start, end=end, wh=wh))

    for value in known:
        at = text.rfind(value)
        if at >= 0 and value:
            add(at, at + len(value), _wh_for_value(value, names, kinds))
    for _, pattern, wh in _SPAN_RULES:
        for m in pattern.finditer(text):
            unit = m.groupdict().get("unit")
            if unit is not None:
                if _FUNCTION.match(unit) or _CALENDAR.match(unit):
                    continue
                add(m.start(), m.end(), f"how many {unit}")
            else:
                add(m.start(), m.end(), wh)
    for start, end, name in names:
        if text[end:end + 2] in ("'s", "’s"):
            add(start, end + 2, "whose")
        else:
            add(start, end, "who" if kinds.get(name) == "person" else "what")
    return sorted(found, key=lambda s: s.start)


def _wh_for_value(value: str, names: list[tuple[int, int, str]], kinds: dict[str, str]) -> str:
    for _, pattern, wh in _SPAN_RULES:
        m = pattern.fullmatch(value)
        if m:
            unit = m.groupdict().get("unit")
            return f"how many {unit}" if unit else wh
    for _, _, name in names:
        if name == value:
            return "who" if kinds.get(name) == "person" else "what"
    return "what"


def question(text: str, span: Span) -> str:
    """The statement with the span replaced by its wh-phrase ("... in what year?"); a span that
    opens the sentence becomes a plain wh-question ("Who founded ...?")."""
    head, tail = text[:span.start], text[span.end:]
    wh = span.wh
    if _WHERE_PREP.search(head) and wh == "what" and not any(ch.isdigit() for ch in span.answer):
        head, wh = _WHERE_PREP.sub("", head), "where"
    body = f"{head}{wh}{tail}".strip().rstrip(".!?;: ")
    return body[0].upper() + body[1:] + "?"


def _lowered(text: str) -> str:
    return text[0].lower() + text[1:]


def _inside(text: str) -> str:
    """``text`` moved inside a sentence: its first letter lowered unless it opens a name."""
    if text[:1].isupper() and not _FUNCTION.match(text.split()[0]):
        return text
    return _lowered(text)


def inverted(text: str, span: Span) -> str | None:
    """The question with its wh-phrase first and "is/was/are/were" before the subject, when the
    span ends a sentence of that form ("In what year was Ada Quill born?")."""
    body = text.rstrip(".!? ")
    if span.end < len(body) - 1 or "," in body:
        return None
    m = _BE.search(body)
    if not m or m.start() == 0 or span.start <= m.start():
        return None
    subject, verb, rest = body[:m.start()], m[1], body[m.end():span.start].strip()
    prep = _WHERE_PREP.search(body[:span.start])
    wh = span.wh
    if prep and wh == "what" and not any(ch.isdigit() for ch in span.answer):
        wh, rest = "where", _WHERE_PREP.sub("", body[m.end():span.start]).strip()
    elif rest.split()[-1:] and re.match(r"^(?:in|on|at|by|since|until|from|for|during)$", rest.split()[-1]):
        wh, rest = f"{rest.split()[-1]} {wh}", " ".join(rest.split()[:-1])
    lead = _inside(subject)
    text = f"{wh} {verb} {lead} {rest}".strip()
    return text[0].upper() + text[1:] + "?"


def _base_form(verb: str) -> tuple[str, str] | None:
    """("does", "employ") for "employs", ("did", "move") for "moved": the auxiliary and the bare
    verb a question moves it to (regular verbs and "has"/"had" only)."""
    if verb in ("has", "had"):
        return ("does" if verb == "has" else "did"), "have"
    if verb in ("is", "was", "are", "were", "does", "did", "this", "its", "thus", "less"):
        return None
    if verb.endswith("ed"):
        stem = verb[:-2]
        if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "aeioulsf":
            stem = stem[:-1]  # "stopped" -> "stop"
        elif re.search(r"(?:[vcgzu]|at|iz|ur|ar)$", stem):
            stem += "e"  # "moved" -> "move", "created" -> "create"
        return "did", stem
    if verb.endswith("ies"):
        return "does", verb[:-3] + "y"
    if re.search(r"(?:ss|sh|ch|x|z|o)es$", verb):
        return "does", verb[:-2]
    if verb.endswith("s") and not verb.endswith("ss"):
        return "does", verb[:-1]
    return None


def do_question(text: str, span: Span) -> str | None:
    """The question a person asks of a subject's verb and what follows it: "Dundru Electric
    employs about 383 people." -> "How many people does Dundru Electric employ?"."""
    body = text.rstrip(".!? ")
    m = _DO_VERB.match(body[:span.start])
    if not m or not span.wh.startswith(("how many", "how much", "what", "who")) or span.wh == "whose":
        return None
    subject = m["subject"]
    if "," in subject or len(subject.split()) > 6 or re.search(r"\b(?:is|was|are|were|has|had|have|be|been|to|not)$", subject):
        return None
    moved = _base_form(m["verb"])
    if moved is None:
        return None
    aux, verb = moved
    tail = body[span.end:].split(",")[0].split(";")[0].strip()
    tail = f" {tail}" if tail and len(tail.split()) <= 6 else ""
    asked = f"{span.wh} {aux} {_inside(subject)} {verb}{tail}"
    return asked[0].upper() + asked[1:] + "?"


def clauses(text: str) -> list[str]:
    """Shorter statements standing alone inside a long one, so that a fact is also learned in the
    few words a question uses: a relative clause with the name it follows as its subject
    ("Dundru Electric, which has made tripods since 1945" -> "Dundru Electric has made tripods
    since 1945."), the sentence without it, clauses joined by "although", "but" or ";" apart, and
    an opening participle phrase given the sentence's subject ("Lying 26 km north of Orne, Mirvale
    is a town" -> "Mirvale is lying 26 km north of Orne.")."""
    body = text.rstrip(".!? ")
    out: list[str] = []
    for m in _RELATIVE.finditer(body):
        before = body[:m.start()]
        head = re.search(r"(?:\b[Tt]he\s+[a-z]+|(?:[A-Z][\w'’-]*\s+)*[A-Z][\w'’-]*)$", before)
        if head and not _FUNCTION.match(head.group().split()[0] if head.group()[:1].isupper() else "x"):
            out.append(f"{head.group()} {m['clause'].strip()}")
    if out:
        out.append(_RELATIVE.sub("", body))
    opening = _OPENING_PHRASE.match(body)
    if opening:
        subject = re.match(r"^(?:The\s+)?[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*", opening["rest"])
        if subject:
            be = "is" if opening["verb"].endswith("ing") else "was"
            out.append(f"{subject.group()} {be} {opening['verb'].lower()} {opening['phrase']}")
            out.append(opening["rest"])
    for part in _JOINED.split(body):
        if part != body and len(part.split()) >= 4:
            out.append(part)
    statements_ = []
    for clause in dict.fromkeys(c.strip(" ,;") for c in out):
        if len(clause.split()) >= 3 and clause != body:
            statements_.append(clause[0].upper() + clause[1:] + ".")
    return statements_


def reordered(text: str) -> str | None:
    """The statement with its clauses in another order: an opening phrase moved to the end, or
    a closing phrase to the front ("In 1931, Ada Quill founded ...")."""
    body = text.rstrip(".!? ")
    if _LEADING_PREP.match(body) and ", " in body:
        lead, rest = body.split(", ", 1)
        return f"{rest[0].upper()}{rest[1:]}, {lead[0].lower()}{lead[1:]}."
    m = _TRAILING_PHRASE.match(body)
    if m and len(m["phrase"].split()) <= 6 and len(m["rest"].split()) >= 3:
        return f"{m['phrase'][0].upper()}{m['phrase'][1:]}, {_inside(m['rest'])}."
    return None


# --- the whole document --------------------------------------------------------------------------

def statements(text: str) -> list[Statement]:
    """Every unit of the document as a resolved statement with its answer spans."""
    title, found = units(text)
    resolver = Resolver(text, title)
    out = []
    for unit in found:
        resolved = resolver.resolve(unit)
        if len(resolved.split()) < 3 or len(resolved.split()) > MAX_STATEMENT_WORDS:
            continue
        if not resolved.endswith((".", "!", "?")):
            resolved += "."
        whole = _statement(resolver, resolved, resolver.topic(unit.heading), unit.answers, resolver.inserted)
        out.append(whole)
        for clause in clauses(resolved):
            out.append(_statement(resolver, clause, whole.subject, unit.answers, resolver.inserted))
    return out


def _within(text: str, topic: str, span: Span) -> bool:
    """Whether a span is a part of the topic the resolver put in (a title's "Minutes" or
    "Drudel Systems"): not a fact of the unit. The whole topic may still be asked back."""
    at = text.find(topic) if topic else -1
    return at >= 0 and at <= span.start and span.end <= at + len(topic) and span.answer != topic


def _statement(resolver: Resolver, text: str, subject: str, known: tuple[str, ...],
               inserted: str) -> Statement:
    """A resolved statement, or one of its clauses, with its answer spans: about its own first
    name, else ``subject``; the topic the resolver put in front is not asked."""
    names = resolver.names(text)
    entities = tuple(dict.fromkeys(resolver.canonical(n) for _, _, n in names))
    kinds = {n: resolver.kind(n) for _, _, n in names}
    found = [s for s in spans(text, names, kinds, tuple(k for k in known if k in text))
             if not _within(text, inserted, s)]
    return Statement(text=text, subject=entities[0] if entities else subject, entities=entities,
                     spans=tuple(found[:MAX_SPANS * 2]))


def _asked(statement: Statement) -> list[Span]:
    """The spans worth asking: those that leave a name in the question (a question must say what
    it is about), facts before names, at most ``MAX_SPANS``."""
    keep = []
    for span in statement.spans:
        rest = statement.text[:span.start] + statement.text[span.end:]
        if any(e in rest for e in statement.entities) or statement.subject in rest:
            keep.append(span)
    keep.sort(key=lambda s: s.wh in ("what", "who", "whose"))
    return keep[:MAX_SPANS]


def pairs(statement: Statement) -> list[QA]:
    """A statement's questions: each span asked in place and with the verb first (answer: the
    span), and asked in place answered by the whole statement."""
    out = []
    for span in _asked(statement):
        asked = question(statement.text, span)
        out.append(QA(question=asked, answer=span.answer))
        for other in (inverted(statement.text, span), do_question(statement.text, span)):
            if other and other != asked:
                out.append(QA(question=other, answer=span.answer))
        out.append(QA(question=asked, answer=statement.text))
    return out


def entity_passages(found: list[Statement]) -> list[str]:
    """Per entity, one passage of every statement about it; per pair of entities named together,
    a statement linking them (EntiGraph's two kinds of rewrite, from the text alone)."""
    about: dict[str, list[str]] = {}
    for s in found:
        for e in s.entities or (s.subject,):
            about.setdefault(e, [])
            if s.text not in about[e]:
                about[e].append(s.text)
    passages = [f"About {e}: " + " ".join(texts[:MAX_ENTITY_STATEMENTS])
                for e, texts in about.items() if len(texts) >= 2 and e]
    links: list[str] = []
    for s in found:
        for a, b in combinations(s.entities, 2):
            if len(links) < MAX_LINKS and a != b:
                links.append(f"{a} and {b} are connected: {s.text}")
    return passages + links


def rehearse(text: str) -> tuple[list[QA], list[str]]:
    """A document's question/answer pairs and its restated passages (resolved statements,
    reordered ones, entity passages and links), deduplicated, pairs capped at ``MAX_PAIRS``."""
    found = statements(text)
    qa: dict[tuple[str, str], QA] = {}
    restated: dict[str, None] = {}
    for s in found:
        for p in pairs(s):
            qa.setdefault((p.question, p.answer), p)
        restated[s.text] = None
        again = reordered(s.text)
        if again:
            restated[again] = None
    for passage in entity_passages(found):
        restated[passage] = None
    return list(qa.values())[:MAX_PAIRS], list(restated)

