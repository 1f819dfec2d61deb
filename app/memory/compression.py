"""Sleep's compression of the episodic tier: old stretches of turns become one vector each.

A stretch is up to ``memory.stretch_turns`` consecutive turns of one conversation, all older
than ``memory.compress_after_days`` (a conversation's last old turns wait until they are
``memory.min_stretch_turns``). Each is compressed by the method ``memory.compress`` names
(``app/memory/compressors.py``) and stored (``store/episode_stretches.py``); recall then searches
the stretch's vector instead of its turns, and a recalled stretch brings its turns into the prompt.

With ``ssm``, each sleep also trains the encoder (``memory.compress_train_steps`` steps) so that a
stretch's state lies close to the questions later answered from it (an answer whose recall
brought the stretch or one of its turns), or, for a stretch no later question used, its own
statements; the other stretches are the negatives. All states are then encoded again with the
new weights, which are kept as safetensors in the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from app.memory.compressors import (
    Compressor,
    Embed,
    Generate,
    SsmCompressor,
    SummaryCompressor,
    TrainingStretch,
    Turn,
    train_encoder,
)
from app.settings import MemoryConfig
from store.blobs import BlobStore
from store.conversations import ConversationStore
from store.database import Database
from store.episode_stretches import OldTurn, StretchRow, StretchStore

ENCODER_KEY = "memory/stretch_encoder"
ALL_CONVERSATIONS = 1_000_000


def cut_stretches(turns: list[OldTurn], size: int, minimum: int) -> list[list[OldTurn]]:
    """Consecutive turns of each conversation (``turns`` ordered by conversation, then id) in
    stretches of ``size``; a conversation's last stretch shorter than ``minimum`` waits."""
    out: list[list[OldTurn]] = []
    run: list[OldTurn] = []
    for turn in turns + [None]:  # type: ignore[list-item]
        if run and (turn is None or turn.conversation_id != run[-1].conversation_id):
            for start in range(0, len(run), size):
                piece = run[start:start + size]
                if len(piece) >= minimum:
                    out.append(piece)
            run = []
        if turn is not None:
            run.append(turn)
    return out


def stored_time(moment: datetime) -> str:
    """A time as the store writes ``created_at`` (so strings compare as times)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def load_encoder(blobs: BlobStore):
    """The trained encoder from the store, or a fresh one (its state starts as the turns' mean;
    seeded, so two fresh ones are the same)."""
    import torch

    from models.selective_ssm import SelectiveStateEncoder

    state = blobs.get(ENCODER_KEY)
    config = {k: int(state.pop(k)) for k in ("dim", "slots", "rank")} if state else {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = SelectiveStateEncoder(**config)
    if state:
        encoder.load_state_dict(state)
    return encoder


def save_encoder(blobs: BlobStore, encoder, losses: list[float]) -> None:
    state: dict[str, Any] = dict(encoder.state_dict())
    state.update(dim=encoder.dim, slots=encoder.slots, rank=encoder.rank)
    blobs.put(ENCODER_KEY, "memory", state, {"steps": len(losses), "first_loss": losses[0] if losses else None,
                                              "last_loss": losses[-1] if losses else None})


def later_questions(db: Database, stretches: list[StretchRow]) -> dict[int, list[str]]:
    """For each stretch, the questions whose answers recalled it (or one of its turns)."""
    conversations = ConversationStore(db)
    by_conversation: dict[int, list[StretchRow]] = {}
    for s in stretches:
        by_conversation.setdefault(s.conversation_id, []).append(s)
    found: dict[int, list[str]] = {}
    for conversation in conversations.list(ALL_CONVERSATIONS):
        asked = ""
        for message in conversations.messages(conversation.id):
            if message.role == "user":
                asked = message.content
                continue
            for item in message.meta.get("recalled", []):
                for s in by_conversation.get(item.get("conversation_id"), []):
                    ids = {item.get("question_id"), item.get("answer_id")}
                    if item.get("stretch_id") == s.id or any(
                            i is not None and s.first_message_id <= i <= s.last_message_id for i in ids):
                        found.setdefault(s.id, []).append(asked)
    return found


def stretch_turns(db: Database, stretch: StretchRow) -> list[Turn]:
    """A stored stretch's turns, in order."""
    return [Turn(role=m.role, content=m.content) for m in ConversationStore(db).messages(stretch.conversation_id)
            if stretch.first_message_id <= m.id <= stretch.last_message_id]


def train_stored(db: Database, embed: Embed, blobs: BlobStore, compressor: SsmCompressor, steps: int,
                 stop: Callable[[], bool] | None) -> dict[str, Any]:
    """Train the encoder on every stored ssm stretch, encode them all again, keep the weights."""
    store = StretchStore(db)
    rows, _ = store.stretches("ssm")
    asked = later_questions(db, rows)
    turns = [store.turn_vectors(r.conversation_id, r.first_message_id, r.last_message_id) for r in rows]
    texts = [asked.get(r.id) or [t.content for t in stretch_turns(db, r) if t.role == "user"] for r in rows]
    flat = [t for ts in texts for t in ts]
    vectors = embed(flat) if flat else np.zeros((0, 0), dtype=np.float32)
    examples, at = [], 0
    for matrix, ts in zip(turns, texts):
        examples.append(TrainingStretch(turns=matrix, positives=vectors[at:at + len(ts)]))
        at += len(ts)
    losses = train_encoder(compressor.encoder, examples, steps, stop=stop)
    if losses:
        for row, state in zip(rows, compressor.encode(turns)):
            store.set_vector(row.id, state)
        save_encoder(blobs, compressor.encoder, losses)
    return {"trained_steps": len(losses), "later_questions": sum(len(v) for v in asked.values()),
            "first_loss": round(losses[0], 4) if losses else None,
            "last_loss": round(losses[-1], 4) if losses else None}


def compress_old(db: Database, embed: Embed, generate: Generate, blobs: BlobStore, config: MemoryConfig,
                 now: datetime | None = None, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """One sleep's compression (the turns are embedded already); its figures for the report."""
    if config.compress == "off":
        return {}
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    store = StretchStore(db)
    cutoff = stored_time(now - timedelta(days=config.compress_after_days))
    pieces = cut_stretches(store.uncompressed_before(config.compress, cutoff), config.stretch_turns,
                           config.min_stretch_turns)
    compressor: Compressor
    if config.compress == "ssm":
        compressor = SsmCompressor(load_encoder(blobs))
    else:
        compressor = SummaryCompressor(generate, embed)
    turns = [[Turn(role=t.role, content=t.content) for t in p] for p in pieces]
    vectors = [store.turn_vectors(p[0].conversation_id, p[0].message_id, p[-1].message_id) for p in pieces]
    done = 0
    for piece, made in zip(pieces, compressor.compress(turns, vectors)):
        if stop is not None and stop():
            break
        store.add(piece[0].conversation_id, piece[0].message_id, piece[-1].message_id, len(piece),
                  config.compress, np.asarray(made.vector), piece[-1].created_at, made.summary, made.seconds)
        done += 1
    details: dict[str, Any] = {"stretches_compressed": done, "compress_method": config.compress}
    if isinstance(compressor, SsmCompressor) and not (stop is not None and stop()):
        details.update(train_stored(db, embed, blobs, compressor, config.compress_train_steps, stop))
    details["compress_seconds"] = round(time.perf_counter() - started, 3)
    return details
