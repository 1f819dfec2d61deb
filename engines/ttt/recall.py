"""The recall pool: question/answer pairs of the documents already learned into weights.

Training on a new document moves rows that also hold earlier documents; rehearsing a few of the
earlier documents' pairs beside it keeps them (experience replay). The pool is a uniform sample
(reservoir sampling) of every pair learned so far, at most ``capacity`` of them, so the first
documents are as likely to be recalled as the last. It lives in the learned state as JSON:
``{"seen": N, "pairs": [[document_id, question, answer], ...]}``.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

MAX_CHARS = 2000


class RecallPoolError(ValueError):
    """A saved pool that cannot be read (the learned weights beside it may still be fine)."""


class RecallEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    document_id: StrictInt
    question: StrictStr = Field(max_length=MAX_CHARS)
    answer: StrictStr = Field(max_length=MAX_CHARS)


class RecallPool:
    """Thread-safe: a document may be forgotten (by a scan) while another is being learned."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: list[RecallEntry] = []
        self.seen = 0  # pairs ever offered to the pool (the reservoir's denominator)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def draw(self, n: int, seed: int, exclude: int | None = None) -> list[RecallEntry]:
        """``n`` entries at random (fewer if the pool is smaller), none of document ``exclude``."""
        with self._lock:
            pool = [e for e in self.entries if e.document_id != exclude]
        return random.Random(seed).sample(pool, min(n, len(pool)))

    def drop(self, document_ids: set[int]) -> bool:
        """Forget these documents' pairs (changed or left the store); whether there were any."""
        with self._lock:
            kept = [e for e in self.entries if e.document_id not in document_ids]
            dropped, self.entries = len(kept) < len(self.entries), kept
        return dropped

    def documents(self) -> set[int]:
        """The documents some pair is kept of."""
        with self._lock:
            return {e.document_id for e in self.entries}

    def keep(self, document_ids: set[int]) -> None:
        """Forget the pairs of every document not among ``document_ids`` (those still stored)."""
        with self._lock:
            self.entries = [e for e in self.entries if e.document_id in document_ids]

    def add(self, document_id: int, pairs: list[tuple[str, str]], seed: int) -> None:
        """Offer a document's pairs (a pair too long to be a fact is skipped); once full, the
        n-th pair ever offered stays with probability capacity / n, replacing a random entry."""
        rng = random.Random(seed)
        with self._lock:
            self._add(document_id, pairs, rng)

    def _add(self, document_id: int, pairs: list[tuple[str, str]], rng: random.Random) -> None:
        for question, answer in pairs:
            if len(question) > MAX_CHARS or len(answer) > MAX_CHARS:
                continue
            self.seen += 1
            entry = RecallEntry(document_id=document_id, question=question, answer=answer)
            if len(self.entries) < self.capacity:
                self.entries.append(entry)
            else:
                slot = rng.randrange(self.seen)
                if slot < self.capacity:
                    self.entries[slot] = entry

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"seen": self.seen, "pairs": [[e.document_id, e.question, e.answer] for e in self.entries]}

    @classmethod
    def from_json(cls, value: Any, capacity: int) -> RecallPool:
        """The pool of a saved state, validated (RecallPoolError), trimmed to ``capacity``."""
        pool = cls(capacity)
        if value is None:
            return pool
        try:
            if not isinstance(value, dict) or not isinstance(value.get("pairs"), list):
                raise TypeError("not an object with a list of pairs")
            pool.entries = [RecallEntry(document_id=d, question=q, answer=a) for d, q, a in value["pairs"]]
            pool.seen = max(int(value.get("seen", 0)), len(pool.entries))
        except (TypeError, ValueError, OverflowError, ValidationError) as exc:
            raise RecallPoolError(f"the state's recall pool is not [document_id, question, answer] "
                                  f"triples ({exc})") from None
        if len(pool.entries) > capacity:
            pool.entries = random.Random(pool.seen).sample(pool.entries, capacity)
        return pool
