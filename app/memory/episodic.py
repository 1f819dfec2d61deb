"""The episodic tier: past conversation turns, embedded, recalled by similarity weighted by age.

A turn is embedded with the embedder the chunks use, once: in sleep, or when a question that
refers back to an earlier conversation needs them (the controller decides; other questions never
wait for it). A recalled turn's score is its cosine similarity to the question times
``0.5 ** (age_days / half_life_days)``: of two turns equally close to the question, the newer
one wins, and a week-old turn counts half as much as today's with a 7-day half-life. Recall
returns whole exchanges (the question and Engram's answer). The chat puts each in the prompt as a
numbered source (``RecalledExchange.passage``), cited as its conversation the way consolidated
facts are (path ``conversation:ID``, its turns as lines), so the critic checks an answer drawn
from it and the person sees where it came from; only the current conversation is chat history.
The critic counts only the person's turns of it as support, never Engram's answers.

Once sleep has compressed old stretches (``memory.compress``, ``app/memory/compression.py``),
recall searches each stretch's one vector beside the turns not compressed, with the same
weighting (the stretch's age is its last turn's); a recalled stretch brings all its turns, and
the critic again counts the person's turns among them only. Its summary (``memory.compress =
summary``) only finds the stretch: written by the chat model, it is neither a source nor support.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from app.settings import MemoryConfig
from engines.base import Passage
from engines.generation import ChatMessage
from store.conversations import ConversationStore, MessageRow
from store.database import Database
from store.episode_stretches import StretchRow, StretchStore
from store.memory_facts import conversation_path
from store.turn_vectors import StoredTurn, TurnVectorStore

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]
EMBED_BATCH = 64
RECALL_EMBEDS = 64  # turns a recall embeds before searching (oldest first; sleep embeds the rest)
SPEAKERS = {"user": "The user said", "assistant": "You answered"}
"""Who said a turn, as a recalled exchange's text names them: in the words of the instructions,
which call the model "you" (``engram bench episodic --answers``: the embedded model's answers
hold the fact more often than with "User:" / "Engram:")."""


class RecalledExchange(BaseModel):
    """An earlier exchange recalled for a question, and how it scored."""

    conversation_id: int
    title: str
    question_id: int | None
    answer_id: int | None
    question: str
    answer: str
    created_at: str
    similarity: float
    recency: float
    score: float
    stretch_id: int | None = None
    turns: list[ChatMessage] = []
    turn_start: int = Field(description="The exchange's first turn in its conversation, from 1.")
    turn_end: int = Field(description="Its last turn.")

    def messages(self) -> list[ChatMessage]:
        """The exchange's turns (a side that is missing is left out); a compressed stretch's
        turns, all of them."""
        if self.turns:
            return list(self.turns)
        turns = [ChatMessage(role="user", content=self.question)] if self.question else []
        return turns + ([ChatMessage(role="assistant", content=self.answer)] if self.answer else [])

    def text(self, roles: tuple[str, ...] = ("user", "assistant")) -> str:
        """The exchange as a source's text: one paragraph a turn, each saying who said it;
        ``roles``: whose turns (the others are left out)."""
        return "\n\n".join(f"{SPEAKERS[m.role]}: {m.content.strip()}" for m in self.messages()
                           if m.role in roles)

    def passage(self) -> Passage:
        """The exchange as a source of the answer, in the shape a consolidated fact is cited in
        (path ``conversation:ID``, its turns as lines) plus the conversation's title and when it
        was said. ``chunk_id`` and ``document_id`` are 0: it is no stored chunk. The prompt gets
        every turn (a follow-up needs the answer it follows); the critic only the person's
        (``evidence``): Engram's earlier answer shows what it said, not that it was true, so a
        detail it invented then must not support the same detail now."""
        return Passage(chunk_id=0, document_id=0, path=conversation_path(self.conversation_id),
                       line_start=self.turn_start, line_end=self.turn_end, score=self.similarity,
                       text=self.text(), evidence=self.text(("user",)), title=self.title,
                       said_at=self.created_at)


def recency_weight(created_at: str, now: datetime, half_life_days: float) -> float:
    """0.5 ** (age in days / half-life): 1.0 for a turn just said."""
    then = datetime.fromisoformat(created_at).replace(tzinfo=timezone.utc)
    age_days = max(0.0, (now - then).total_seconds() / 86400.0)
    return 0.5 ** (age_days / half_life_days)


class EpisodicMemory:
    """Embeds turns and recalls earlier exchanges for a question."""

    def __init__(self, db: Database, embed: Embed, config: MemoryConfig) -> None:
        self.db = db
        self.embed = embed
        self.config = config
        self.vectors = TurnVectorStore(db)
        self.stretches = StretchStore(db)
        self.conversations = ConversationStore(db)

    def embed_new(self, limit: int = 10_000, stop: Callable[[], bool] | None = None) -> int:
        """Embed up to ``limit`` turns that have no vector yet, in batches; returns how many."""
        done = 0
        while done < limit and not (stop is not None and stop()):
            batch = self.vectors.unembedded(min(EMBED_BATCH, limit - done))
            if not batch:
                break
            self.vectors.add([m for m, _ in batch], self.embed([text for _, text in batch]))
            done += len(batch)
        return done

    def recall(self, question: str, exclude_conversation: int | None = None, k: int | None = None,
               now: datetime | None = None) -> list[RecalledExchange]:
        """The ``k`` (default recall_k) best earlier exchanges for ``question``, outside
        ``exclude_conversation``, best first; turns below the similarity cut never count."""
        k = k or self.config.recall_k
        self.embed_new(limit=RECALL_EMBEDS)  # a question pays for a few turns at most; sleep embeds the rest
        method = None if self.config.compress == "off" else self.config.compress
        turns, matrix = self.vectors.turns(exclude_conversation, compressed=method)
        stretches, packed = self.stretches.stretches(method, exclude_conversation) if method else ([], None)
        if not turns and not stretches:
            return []
        now = now or datetime.now(timezone.utc)
        query = self.embed([question])[0]
        scored = []
        for turn, sim in zip(turns, (matrix @ query).tolist() if turns else []):
            if sim >= self.config.recall_min_similarity:
                weight = recency_weight(turn.created_at, now, self.config.half_life_days)
                scored.append((sim * weight, sim, weight, turn))
        for stretch, sim in zip(stretches, (packed @ query).tolist() if stretches else []):
            if sim >= self.config.recall_min_similarity:
                weight = recency_weight(stretch.said_at, now, self.config.half_life_days)
                scored.append((sim * weight, sim, weight, stretch))
        scored.sort(key=lambda item: -item[0])
        found: list[RecalledExchange] = []
        seen: set[tuple[int, int]] = set()
        said: dict[int, list[MessageRow]] = {}  # each conversation read once, however many it gives
        for score, sim, weight, item in scored:
            if item.conversation_id not in said:
                said[item.conversation_id] = self.conversations.messages(item.conversation_id)
            if isinstance(item, StretchRow):
                found.append(self._stretch(item, said[item.conversation_id], sim, weight, score))
            else:
                pair = self.vectors.exchange(item.message_id)
                if pair is None or pair in seen:
                    continue
                seen.add(pair)
                found.append(self._exchange(item, pair, said[item.conversation_id], sim, weight, score))
            if len(found) >= k:
                break
        return found

    def _exchange(self, turn: StoredTurn, pair: tuple[int, int], said: list[MessageRow], sim: float,
                  weight: float, score: float) -> RecalledExchange:
        """``said``: the conversation's messages, whose places number the turns as a fact's citation does."""
        by_id = {m.id: (n, m) for n, m in enumerate(said, 1)}
        question_row = by_id[pair[0]][1] if pair[0] in by_id else None
        answer_row = by_id[pair[1]][1] if pair[1] in by_id else None
        places = [by_id[i][0] for i in pair if i in by_id] or [0]
        return RecalledExchange(
            conversation_id=turn.conversation_id, title=turn.title,
            question_id=question_row.id if question_row else None,
            answer_id=answer_row.id if answer_row else None,
            question=question_row.content if question_row else "",
            answer=answer_row.content if answer_row and not answer_row.meta.get("error") else "",
            created_at=turn.created_at, similarity=round(sim, 4), recency=round(weight, 4),
            score=round(score, 4), turn_start=min(places), turn_end=max(places))

    def _stretch(self, stretch: StretchRow, said: list[MessageRow], sim: float, weight: float,
                 score: float) -> RecalledExchange:
        inside = [(n, m) for n, m in enumerate(said, 1)
                  if stretch.first_message_id <= m.id <= stretch.last_message_id]
        rows = [m for _, m in inside if m.content.strip() and not m.meta.get("error")]
        return RecalledExchange(
            conversation_id=stretch.conversation_id, title=stretch.title, question_id=None, answer_id=None,
            question="", answer="", created_at=stretch.said_at, similarity=round(sim, 4),
            recency=round(weight, 4), score=round(score, 4), stretch_id=stretch.id,
            turns=[ChatMessage(role=m.role, content=m.content) for m in rows],
            turn_start=min((n for n, _ in inside), default=0), turn_end=max((n for n, _ in inside), default=0))
