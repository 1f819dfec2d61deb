"""A document as units of prose: sentences, list items, ``Key: value`` lines and table rows.

The first step of ``engines.ttt.facts``: each unit keeps the heading it sits under, so a
statement that names nothing can still say what it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|?\s*$")
_ITEM = re.compile(r"^\s*(?:[-*•+]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s+(?P<text>\S.*)$")
_KEY_VALUE = re.compile(r"^(?P<key>[A-Z][^:.!?]{0,40}?)\s*:\s+(?P<value>\S.{0,200})$")
_MARKUP = re.compile(r"(\*\*|__|`)")
# A list item opening with a bold label that ends in a stop or colon ("**Office move.** The team
# ..."): the label is the item's heading, not a word of its first sentence.
_LABEL = re.compile(r"^(?:\*\*|__)(?P<label>[^*_]{1,60}?)\s*(?:[.:](?:\*\*|__)|(?:\*\*|__)[.:])"
                    r"\s+(?P<rest>\S.*)$")
# Column headers that say a two-column table lists fields of one thing ("Specification | Value"),
# not named things ("Item | Price").
_FIELD_COLUMN = re.compile(r"^(?:specifications?|specs?|fields?|attributes?|parameters?|settings?)$",
                           re.IGNORECASE)
_VALUE_COLUMN = re.compile(r"^values?$", re.IGNORECASE)
_GREETING = re.compile(r"^\s*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b[^.!?]{0,40},\s*$",
                       re.IGNORECASE)  # "Hi all,": says nothing
_RULE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")  # a horizontal rule: "---" between messages
_NAME_LINE = re.compile(r"^(?:[A-Z][\w'’&-]*\s*){1,5}$")  # "Drudelen Delez", "Tamshi Joinery"
_SIGN_OFF = re.compile(r"^(?:\S+\s+){0,3}\S+,$")  # "Best,", "All the best,", "Kind regards,"
_EMPHASIS = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]{1,80}?)(?<!\s)\*(?![\w*])")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"”')\]]?\s+(?=[\"“(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:(?!May\.)[A-Z][a-z]{0,2}|[A-Z](?:\.[A-Z])*|etc|approx|vs|[a-z]\.[a-z])\.$")


@dataclass(frozen=True)
class Unit:
    """A raw piece of the document before resolution, with the heading it sits under."""

    text: str
    heading: str
    kind: str  # "sentence", "item", "row", "pair" (a ``Key: value`` line) or "field" (a two-column table's row)
    answers: tuple[str, ...] = ()  # spans known from structure (a table cell, a value)
    key: str = ""  # a ``Key: value`` line's key (its text is worded once its subject is known)
    label: str = ""  # a list item's bold label ("Office move"), the item's own topic



def _clean(line: str) -> str:
    """A line without emphasis markup and runs of spaces."""
    line = _EMPHASIS.sub(r"\1", _MARKUP.sub("", line))
    return " ".join(line.split())


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph; a break after an abbreviation or an initial ("Dr.", "J.") is
    not a sentence end, and a decimal point never is (the split needs a space after it)."""
    pieces = _SENTENCE_BREAK.split(paragraph)
    merged: list[str] = []
    for piece in pieces:
        if merged and _ABBREVIATION.search(merged[-1]):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return [p.strip() for p in merged if p.strip()]


def _cells(line: str) -> list[str]:
    return [_clean(c) for c in line.strip().strip("|").split("|")]


def table_units(lines: list[str], heading: str) -> list[Unit]:
    """A markdown table's rows as statements: header + row -> "The <column> of <first cell> is
    <cell>." (the first cell names the row; a row is a list of facts about it). A two-column
    table of fields ("Specification | Value") is a list of ``Key: value`` lines about its topic."""
    rows = [_cells(line) for line in lines if not _TABLE_RULE.match(line)]
    if len(rows) < 2:
        return []
    header, units = rows[0], []
    if len(header) == 2 and (_FIELD_COLUMN.match(header[0]) or _VALUE_COLUMN.match(header[1])):
        return [Unit(text=row[1], heading=heading, kind="field", answers=(row[1],), key=row[0])
                for row in rows[1:] if len(row) == 2 and row[0] and row[1]]
    for row in rows[1:]:
        if not row or not row[0]:
            continue
        for column, cell in zip(header[1:], row[1:]):
            if cell and column:
                text = f"The {column[0].lower()}{column[1:]} of {row[0]} is {cell}."
                units.append(Unit(text=text, heading=heading, kind="row", answers=(cell, row[0])))
    return units


def _is_heading(lines: list[str], i: int) -> bool:
    """A short line standing alone without a closing stop reads as a heading."""
    line = lines[i].strip()
    alone = (i + 1 >= len(lines) or not lines[i + 1].strip()) and (i == 0 or not lines[i - 1].strip())
    following = next((n.strip() for n in lines[i + 1:] if n.strip()), "")
    if not following or _RULE.match(following):
        return False  # a message's sign-off ("Ulteven" before "---"), not a heading
    return (alone and len(line.split()) <= 8 and line[-1:] not in ".!?:;," and line[:1].isupper()
            and not _TABLE_ROW.match(line) and not _ITEM.match(line) and not _header_line(line))


def _header_line(line: str) -> bool:
    """A line standing alone that is a field, not a heading: a short key without a number and a
    list, an address or a number as its value ("Present: Orla Benn, Kofi", "From: Jo <jo@x.org>");
    "Chapter 1: The Beginning" and "Step 1: Unpack the box" stay headings."""
    kv = _KEY_VALUE.match(_clean(line))
    return (bool(kv) and len(kv["key"].split()) <= 3 and not re.search(r"\d", kv["key"])
            and bool(re.search(r"[,@\d]", kv["value"])))


def _field_line(line: str) -> bool:
    """A ``Key: value`` line: a short key and a value of one sentence ("Present: Orla Benn, Kofi";
    not "Quick update from Jonas: the report is due on Friday. He will ..."), which is not a
    heading even when it stands alone."""
    return _short_field(_KEY_VALUE.match(_clean(line)))


def _short_field(kv: re.Match[str] | None) -> bool:
    """A short key and a value of one sentence."""
    return bool(kv) and len(kv["key"].split()) <= 5 and len(split_sentences(kv["value"])) == 1


def units(text: str) -> tuple[str, list[Unit]]:
    """The document's title (its first heading, if any) and its units in order."""
    lines = text.splitlines()
    title, heading, found = "", "", []
    intro = ""  # the line a list hangs from ("The shop sells:")
    paragraph: list[str] = []
    signed: set[str] = set()  # the name lines of a sign-off seen so far

    def flush() -> None:
        if paragraph:
            found.extend(_sentences(_clean(" ".join(paragraph)), heading))
            paragraph.clear()

    i = 0
    while i < len(lines):
        raw = lines[i]
        m = _HEADING.match(raw)
        if m or (raw.strip() and _is_heading(lines, i)):
            flush()
            heading = _clean(m["text"] if m else raw)
            title = title or heading
            intro = ""
        elif _TABLE_ROW.match(raw):
            flush()
            j = i
            while j < len(lines) and _TABLE_ROW.match(lines[j]):
                j += 1
            found += table_units(lines[i:j], heading)
            i = j
            continue
        elif not raw.strip() or _RULE.match(raw):
            flush()
            intro = ""
        elif (item := _ITEM.match(raw)) or _field_line(raw):
            flush()
            labelled = _LABEL.match(item["text"]) if item else None
            if labelled and _labels_a_sentence(labelled["label"], labelled["rest"]):
                found += _sentences(_clean(labelled["rest"]), heading, label=_clean(labelled["label"]))
            else:
                found += _line_units(_clean(item["text"] if item else raw), heading, intro)
        elif raw.rstrip().endswith(":"):
            flush()
            intro = _clean(raw).rstrip(":")
        elif not _GREETING.match(raw):
            line = raw.strip()
            if paragraph and (_SIGN_OFF.match(paragraph[-1]) or paragraph[-1] in signed) and _NAME_LINE.match(line):
                line = line if line[-1] in ".!?" else f"{line}."  # "Best," / "Drudelen Delez" / "Tamshi Joinery":
                signed.add(line)  # each line of a sign-off ends, so a name and its company stay apart
            paragraph.append(line)
        i += 1
    flush()
    return title, found


def _labels_a_sentence(label: str, rest: str) -> bool:
    """Whether a bold label heads a sentence ("**Office move.** The team moves on 2 June."),
    not a value ("**Price:** £40", "**Owner:** Vella Marsh": those are ``Key: value`` lines)."""
    words = _clean(rest).split()
    return (len(label.split()) <= 6 and len(words) >= 4 and words[0][:1].isupper()
            and words[-1][-1:] in ".!?")


def _sentences(text: str, heading: str, label: str = "") -> list[Unit]:
    return [Unit(text=sentence, heading=heading, kind="sentence", label=label)
            for sentence in split_sentences(text)]


def _line_units(body: str, heading: str, intro: str) -> list[Unit]:
    """A list item or a ``Key: value`` line as a statement (under the line it hangs from); an
    item of several sentences is its first one as the item, then the others as sentences."""
    kv = _KEY_VALUE.match(body)
    if kv and _short_field(kv):
        key, value = kv["key"].strip(), kv["value"].strip().rstrip(".")
        return [Unit(text=value, heading=heading, kind="pair", answers=(value,), key=key)]
    first, *more = split_sentences(body) or [body]
    item = first.rstrip(".;,")
    if not item:  # "- ...": nothing to state
        return _sentences(" ".join(more), heading)
    text = f"{intro}: {item}." if intro else f"{item[0].upper()}{item[1:]}."
    return [Unit(text=text, heading=heading, kind="item")] + _sentences(" ".join(more), heading)


# --- references --------------------------------------------------------------------------------
