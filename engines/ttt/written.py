"""Learning material a chat model writes: questions and rewrites of each section, checked.

``facts`` reads prose with rules, which cover the sentences they were written for. A larger model
(Ollama or a GGUF set as the chat model) asks the questions a person would ask and restates facts
in its own words, which is what lets a small model answer closed book (knowledge augmentation).
A model may invent, so nothing it writes is trained unchecked:

- a pair is kept only when its answer is in the section, word for word (case aside), and not
  already in its question;
- a rewrite is kept only when every number and every capitalised name in it is in the section
  (a rewrite may reword, not add facts), and it is not a copy of one of the section's sentences.

The document is read a section at a time (paragraphs up to ``SECTION_CHARS``), so a long one fits
the model's context and every part of it gets questions.
"""

from __future__ import annotations

import logging
import re

from pydantic import BaseModel, Field

from engines.generation import (
    ChatMessage,
    GenerationRequest,
    Runtime,
    StructuredOutputError,
)
from engines.ttt.rehearsal import QA

log = logging.getLogger(__name__)

SECTION_CHARS = 1200
MAX_SECTIONS = 40  # a long document: its first sections (the rules still read all of it)
MAX_TOKENS = 600  # per section, and at most 64 + a token per character of it (JSON around its facts)

INSTRUCTIONS = (
    "Read the user's text. Write questions a person would ask about its facts, in your own words, "
    "each answered by a few words copied exactly from the text. Then restate each fact in a new "
    "sentence that names what it is about. Use only facts the text states.")

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z][\w'-]*")


class _Pair(BaseModel):
    question: str = Field(max_length=200)
    answer: str = Field(max_length=80)


class _Written(BaseModel):
    questions: list[_Pair] = Field(max_length=10)
    rewrites: list[str] = Field(max_length=8)


def sections(text: str, limit: int = SECTION_CHARS) -> list[str]:
    """The text's paragraphs joined up to ``limit`` characters (a longer paragraph alone)."""
    out: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        if out and len(out[-1]) + len(paragraph) + 2 <= limit:
            out[-1] = f"{out[-1]}\n\n{paragraph}"
        else:
            out.append(paragraph)
    return out


def _folded(text: str) -> str:
    return " ".join(text.lower().split())


def checked_pairs(section: str, pairs: list[tuple[str, str]]) -> list[QA]:
    """The pairs whose answer the section states word for word and the question does not give."""
    source = _folded(section)
    kept = []
    for question, answer in pairs:
        q, a = " ".join(question.split()), " ".join(answer.split()).strip(" .")
        if q.endswith("?") and a and _folded(a) in source and _folded(a) not in _folded(q):
            kept.append(QA(question=q, answer=a))
    return kept


def checked_rewrites(section: str, rewrites: list[str]) -> list[str]:
    """The rewrites that add nothing: each number and capitalised name is in the section, and the
    rewrite is not one of the section's own sentences."""
    source = _folded(section)
    numbers = set(_NUMBER.findall(section))
    kept = []
    for rewrite in rewrites:
        text = " ".join(rewrite.split())
        if len(text.split()) < 4 or _folded(text).rstrip(".") in source:
            continue
        if not set(_NUMBER.findall(text)) <= numbers:
            continue
        if all(name.lower() in source for name in _NAME.findall(text)):
            kept.append(text)
    return kept


def write(runtime: Runtime, text: str, max_tokens: int = MAX_TOKENS) -> tuple[list[QA], list[str]]:
    """Checked pairs and rewrites of every section of ``text`` (a section the model cannot answer
    in valid JSON gives nothing, and the rest go on)."""
    pairs: list[QA] = []
    rewrites: list[str] = []
    for section in sections(text)[:MAX_SECTIONS]:
        request = GenerationRequest(messages=[ChatMessage(role="system", content=INSTRUCTIONS),
                                              ChatMessage(role="user", content=section)],
                                    max_tokens=min(max_tokens, 64 + len(section)), temperature=0.0)
        try:
            found = runtime.generate_json(request, _Written)
        except StructuredOutputError as e:
            log.info("no written material for a section: %s", e)
            continue
        pairs += checked_pairs(section, [(p.question, p.answer) for p in found.questions])
        rewrites += checked_rewrites(section, found.rewrites)
    return list(dict.fromkeys(pairs)), list(dict.fromkeys(rewrites))
