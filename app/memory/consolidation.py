"""Sleep's move from the episodic tier to the semantic one: what the person said becomes knowledge.

Each sleep reads every conversation for facts the person gave (``app/memory/importance.py``:
corrections, statements with names or numbers, answers they confirmed), keeps those at or above
``memory.min_importance``, and makes each a chunk of its conversation's document, so the hybrid
search finds it and an answer cites the conversation. It is idempotent: a fact is stored once by
(turn, sentence, kind), so a second sleep adds nothing. A later fact about the same thing
(cosine >= ``memory.supersede_similarity``, from another turn) supersedes the earlier one, whose
chunk leaves the index. Facts the person forgot stay out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from app.memory.importance import candidates
from app.settings import MemoryConfig
from engines.base import ConsolidateReport
from store.conversations import ConversationStore
from store.database import Database
from store.memory_facts import FactCandidate, FactRow, MemoryFactStore
from store.state import StateStore

if TYPE_CHECKING:
    from store.vector_index import VectorIndex

Embed = Callable[[list[str]], np.ndarray]
ENGINE = "memory"
"""The name a consolidation report goes by among the engines' sleep reports."""
ALL_CONVERSATIONS = 1_000_000
EMBEDDED_AS = "memory.embedded_as"
"""State key: the embedding model (identity) the facts' and turns' vectors were made by."""


def found_facts(db: Database, min_importance: float) -> tuple[list[FactCandidate], int]:
    """The facts of every conversation at or above ``min_importance``, and how many fell below."""
    conversations = ConversationStore(db)
    found = [c for row in conversations.list(ALL_CONVERSATIONS)
             for c in candidates(row.id, conversations.messages(row.id))]
    kept = [c for c in found if c.importance >= min_importance]
    return kept, len(found) - len(kept)


Vectors = dict[int, tuple[np.ndarray, np.ndarray | None]]
"""A fact's embedding and its subject's (a correction's question), by fact id."""


def embed_facts(embed: Embed, facts: list[FactCandidate]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each fact's embedding and its subject's (None when it has none), in one embedding call."""
    if not facts:
        return []
    subjects = [i for i, f in enumerate(facts) if f.subject]
    vectors = embed([f.text for f in facts] + [facts[i].subject for i in subjects])
    about = dict(zip(subjects, vectors[len(facts):]))
    return [(vectors[i], about.get(i)) for i in range(len(facts))]


def superseders(facts: list[FactRow], vectors: Vectors, threshold: float) -> dict[int, int | None]:
    """For each fact, the first later fact (another turn) at least ``threshold`` similar to it,
    by the later fact's text or its subject (the question a correction answers), or None;
    forgotten facts neither supersede nor are superseded."""
    live = sorted((f for f in facts if not f.forgotten), key=lambda f: (f.message_id, f.sentence, f.id))
    out: dict[int, int | None] = {f.id: None for f in facts}
    if not live:
        return out
    texts = np.stack([vectors[f.id][0] for f in live])
    subjects = np.stack([v if (v := vectors[f.id][1]) is not None else vectors[f.id][0] for f in live])
    similar = np.maximum(texts @ texts.T, texts @ subjects.T)  # [earlier i, later j]
    for i, fact in enumerate(live):
        for j in range(i + 1, len(live)):
            if live[j].message_id != fact.message_id and similar[i, j] >= threshold:
                out[fact.id] = live[j].id
                break
    return out


def consolidate(db: Database, embed: Embed, index: VectorIndex, config: MemoryConfig) -> ConsolidateReport:
    """One pass of consolidation; the report says what was added, superseded and removed."""
    started = time.perf_counter()
    store = MemoryFactStore(db)
    kept, below = found_facts(db, config.min_importance)
    known = store.known()
    wanted = {(c.message_id, c.sentence, c.kind) for c in kept}
    removed: list[int] = []
    for key, (fact_id, _text) in known.items():  # a fact no longer found (the rules or the cut changed)
        if key not in wanted:
            chunk = store.remove(fact_id)
            removed += [chunk] if chunk is not None else []
    new = [c for c in kept if known.get((c.message_id, c.sentence, c.kind), (0, None))[1] != c.text]
    for c in new:  # a changed correction: its old chunk goes first
        old = known.get((c.message_id, c.sentence, c.kind))
        chunk = store.detach(old[0]) if old else None
        removed += [chunk] if chunk is not None else []
    for c, (vector, subject) in zip(new, embed_facts(embed, new)):
        store.add(c, vector, subject)
    facts = store.facts()
    vectors = store.vectors()
    superseded = 0
    by_fact = superseders(facts, vectors, config.supersede_similarity)
    added: list[int] = []
    added_vectors: list[np.ndarray] = []
    for fact in facts:
        by = by_fact[fact.id]
        if by != fact.superseded_by:
            store.set_superseded(fact.id, by)
        active = not fact.forgotten and by is None
        superseded += by is not None
        if active and fact.chunk_id is None:
            chunk = store.attach(fact, vectors[fact.id][0])  # None: forgotten or deleted meanwhile
            if chunk is not None:
                added.append(chunk)
                added_vectors.append(vectors[fact.id][0])
        elif not active and fact.chunk_id is not None:
            chunk = store.detach(fact.id)
            removed += [chunk] if chunk is not None else []
    if removed:
        index.remove(np.asarray(removed, dtype=np.int64))
    if added:
        index.add(np.asarray(added, dtype=np.int64), np.stack(added_vectors))
    return ConsolidateReport(engine=ENGINE, seconds=round(time.perf_counter() - started, 3),
                             changed=bool(added or removed),
                             details={"facts": len(facts), "new_facts": len(new), "added": len(added),
                                      "removed": len(removed), "superseded": superseded,
                                      "below_importance": below})


def reembed(db: Database, embed: Embed, identity: str | None = None) -> int:
    """After an embedding-model switch: the facts embedded again, the turns left to re-embed
    lazily (their old vectors would not compare with the new ones) and the compressed stretches
    made again by the next sleep; returns the facts done. ``identity``: the model's, recorded
    once done (``follow_embedder`` compares with it)."""
    from store.episode_stretches import StretchStore
    from store.turn_vectors import TurnVectorStore

    TurnVectorStore(db).clear()
    StretchStore(db).clear()
    store = MemoryFactStore(db)
    facts = store.facts()
    for fact, (vector, subject) in zip(facts, embed_facts(embed, list(facts))):
        store.replace_vectors(fact.id, vector, subject)
    if identity is not None:
        StateStore(db).set(EMBEDDED_AS, identity)
    return len(facts)


def note_embedder(db: Database, identity: str | None) -> None:
    """Before the library's vectors change model: record the model the facts and turns were
    embedded by, when nothing is recorded yet, so a crash before they follow is seen."""
    state = StateStore(db)
    if identity is not None and state.get(EMBEDDED_AS) is None:
        state.set(EMBEDDED_AS, identity)


def follow_embedder(db: Database, embed: Embed, identity: str | None) -> int | None:
    """The facts and turns embedded again when another model than the library's (``identity``)
    embedded them: a crash came between the index swap and their re-embedding. None when they
    match, or nothing was ever recorded (they were embedded by the library's model)."""
    recorded = StateStore(db).get(EMBEDDED_AS)
    if identity is None or recorded is None or recorded == identity:
        return None
    return reembed(db, embed, identity)
