"""``engram bench episodic``: which compression of old stretches of chat finds the right stretch.

On generated fictional conversations (``app/bench/episodic_set.py``) cut into stretches as sleep
cuts them (``app/memory/compression.py``), each held-out question that refers back to a fact is
ranked against every held-out stretch by cosine similarity to:
- ``raw``: the stretch's turn embeddings, the best turn counting (today's per-turn recall);
- ``summary``: the embedding of the chat model's summary of the stretch;
- ``ssm``: the selective state-space encoder's state, trained on the training conversations
  (positives: their later questions; a stretch without one: its own statements), and, as a
  reference, ``ssm_untrained`` (the encoder at initialisation: about the turns' mean).
Recall@1 and @3 of the stretch that stated the fact; bytes kept per stretch; seconds to
compress one. Recency is left out: every stretch has the same age here.

Retrieval is not what a person reads, so ``answers`` (``--answers N``) also stores the held-out
conversations as past chats of a real Engram (temporary data folder, the configured chat model,
greedy, episodic recall on, compression off) and asks N of their questions as ``engram ask``
does, each in a conversation of its own (deleted after, so a later question never recalls an
earlier bench answer): the share of answers containing the fact (``scoring.contains``, every
bench's rule), citing the conversation that stated it, and whose recall brought it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from app.bench.episodic_set import Conversation, Question, generate
from app.bench.scoring import contains
from app.memory.compression import cut_stretches
from app.memory.compressors import (
    Embed,
    Generate,
    SsmCompressor,
    SummaryCompressor,
    TrainingStretch,
    Turn,
    train_encoder,
)
from app.settings import LoadedSettings, Settings
from store.episode_stretches import OldTurn
from store.memory_facts import conversation_path

Echo = Callable[[str], None]
FLOAT_BYTES = 4


class MethodScore(BaseModel):
    recall_at_1: float
    recall_at_3: float
    bytes_per_stretch: float
    seconds_per_stretch: float


class BenchStretch(BaseModel, arbitrary_types_allowed=True):
    """A stretch of a generated conversation: its turns, their embeddings, its questions' rows."""

    conversation: int
    first: int
    turns: list[Turn]
    vectors: np.ndarray


class AskedBack(BaseModel):
    """One held-out question asked through the chat, and what its answer did."""

    question: str
    expected: str
    answer: str
    contains: bool
    cited_right: bool = Field(description="A citation the answer uses names the conversation that stated the fact.")
    recalled_right: bool = Field(description="The recall put that conversation in the prompt.")
    recalled: list[int] = Field(description="The stored conversations recalled (bench ids, from 0).")


class AnswerScore(BaseModel):
    questions: int
    contains: float
    cited_right: float
    recalled_right: float
    seconds_per_answer: float
    asked: list[AskedBack]


class EpisodicBenchReport(BaseModel):
    size: str
    seed: int
    stretch_turns: int
    train_stretches: int
    held_out_stretches: int
    held_out_questions: int
    raw: MethodScore
    ssm: MethodScore
    ssm_untrained: MethodScore
    summary: MethodScore | None = None
    ssm_training: dict[str, float | int | None]
    best: str
    summaries: list[str] = []
    answers: AnswerScore | None = None
    embed_seconds: float
    load_average: float


def stretches_of(conversations: list[Conversation], vectors: list[np.ndarray], size: int,
                 minimum: int) -> list[BenchStretch]:
    """The conversations cut as sleep cuts old turns (turn index = message id)."""
    turns = [OldTurn(message_id=i, conversation_id=c, role=t.role, content=t.content, created_at="")
             for c, conv in enumerate(conversations) for i, t in enumerate(conv.turns)]
    return [BenchStretch(conversation=p[0].conversation_id, first=p[0].message_id,
                         turns=[Turn(role=t.role, content=t.content) for t in p],
                         vectors=vectors[p[0].conversation_id][p[0].message_id:p[-1].message_id + 1])
            for p in cut_stretches(turns, size, minimum)]


def owner(stretches: list[BenchStretch], conversation: int, turn: int) -> int | None:
    for i, s in enumerate(stretches):
        if s.conversation == conversation and s.first <= turn < s.first + len(s.turns):
            return i
    return None


def questions_of(conversations: list[Conversation], stretches: list[BenchStretch]) -> list[tuple[str, int]]:
    """(question, index of its stretch) for every question whose fact lies in a stretch."""
    out = []
    for c, conv in enumerate(conversations):
        for q in conv.questions:
            at = owner(stretches, c, q.turn)
            if at is not None:
                out.append((q.text, at))
    return out


def recall_at(scores: np.ndarray, targets: list[int]) -> tuple[float, float]:
    """Recall@1 and @3 of ``scores`` [Q, S] for the right stretch of each question."""
    ranks = [(scores[i] > scores[i, t]).sum() for i, t in enumerate(targets)]
    n = max(1, len(ranks))
    return round(sum(r < 1 for r in ranks) / n, 4), round(sum(r < 3 for r in ranks) / n, 4)


def score(scores: np.ndarray, targets: list[int], bytes_each: float, seconds_each: float) -> MethodScore:
    at1, at3 = recall_at(scores, targets)
    return MethodScore(recall_at_1=at1, recall_at_3=at3, bytes_per_stretch=round(bytes_each, 1),
                       seconds_per_stretch=round(seconds_each, 6))


def raw_scores(stretches: list[BenchStretch], queries: np.ndarray) -> np.ndarray:
    """Each stretch's best turn per question [Q, S]: what per-turn recall ranks by."""
    return np.stack([(queries @ s.vectors.T).max(axis=1) for s in stretches], axis=1)


def training_examples(conversations: list[Conversation], stretches: list[BenchStretch],
                      embed: Embed) -> list[TrainingStretch]:
    asked: dict[int, list[str]] = {}
    for text, at in questions_of(conversations, stretches):
        asked.setdefault(at, []).append(text)
    texts = [asked.get(i) or [t.content for t in s.turns if t.role == "user"] for i, s in enumerate(stretches)]
    vectors = embed([t for ts in texts for t in ts])
    out, at = [], 0
    for s, ts in zip(stretches, texts):
        out.append(TrainingStretch(turns=s.vectors, positives=vectors[at:at + len(ts)]))
        at += len(ts)
    return out


def run_episodic_bench(embed: Embed, generate_text: Generate | None, size: str = "small", seed: int = 0,
                       steps: int = 300, stretch_turns: int = 8, min_turns: int = 4,
                       echo: Echo = print) -> EpisodicBenchReport:
    """Measure raw turns, the SSM (trained here on the training split) and, given
    ``generate_text`` (the chat model), summaries, on the held-out stretches."""
    import torch

    from models.selective_ssm import SelectiveStateEncoder

    data = generate(size, seed)
    started = time.perf_counter()
    vectors = {}
    for split, conversations in (("train", data.train), ("held", data.held_out)):
        flat = embed([t.content for c in conversations for t in c.turns])
        at, split_vectors = 0, []
        for c in conversations:
            split_vectors.append(flat[at:at + len(c.turns)])
            at += len(c.turns)
        vectors[split] = split_vectors
    train = stretches_of(data.train, vectors["train"], stretch_turns, min_turns)
    held = stretches_of(data.held_out, vectors["held"], stretch_turns, min_turns)
    asked = questions_of(data.held_out, held)
    queries = embed([q for q, _ in asked])
    embed_seconds = time.perf_counter() - started
    targets = [t for _, t in asked]
    echo(f"{len(train)} training and {len(held)} held-out stretches of {stretch_turns} turns; "
         f"{len(asked)} held-out questions (embedding took {embed_seconds:.1f} s)")
    turn_bytes = float(np.mean([s.vectors.nbytes for s in held]))
    raw = score(raw_scores(held, queries), targets, turn_bytes, 0.0)
    echo(f"raw turns: recall@1 {raw.recall_at_1:.3f}, @3 {raw.recall_at_3:.3f}")

    torch.manual_seed(seed)  # the encoder's initial weights: the same run gives the same figures
    encoder = SelectiveStateEncoder(dim=queries.shape[1])
    ssm = SsmCompressor(encoder)
    untrained = score(queries @ ssm.encode([s.vectors for s in held]).T, targets, encoder.dim * FLOAT_BYTES, 0.0)
    echo(f"ssm untrained: recall@1 {untrained.recall_at_1:.3f}, @3 {untrained.recall_at_3:.3f}")
    t0 = time.perf_counter()
    losses = train_encoder(encoder, training_examples(data.train, train, embed), steps, seed=seed)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    states = ssm.encode([s.vectors for s in held])
    ssm_score = score(queries @ states.T, targets, encoder.dim * FLOAT_BYTES, (time.perf_counter() - t0) / len(held))
    echo(f"ssm trained ({len(losses)} steps in {train_seconds:.1f} s, loss {losses[0] if losses else 0:.3f} -> "
         f"{losses[-1] if losses else 0:.3f}): recall@1 {ssm_score.recall_at_1:.3f}, @3 {ssm_score.recall_at_3:.3f}")

    summary_score, summaries = None, []
    if generate_text is not None:
        made = SummaryCompressor(generate_text, embed).compress([s.turns for s in held], [s.vectors for s in held])
        matrix = np.asarray([m.vector for m in made], dtype=np.float32)
        summaries = [m.summary for m in made]
        size_each = float(np.mean([len(m.summary.encode()) + matrix.shape[1] * FLOAT_BYTES for m in made]))
        summary_score = score(queries @ matrix.T, targets, size_each, float(np.mean([m.seconds for m in made])))
        echo(f"summaries: recall@1 {summary_score.recall_at_1:.3f}, @3 {summary_score.recall_at_3:.3f}, "
             f"{summary_score.seconds_per_stretch:.2f} s per stretch")
    methods = {"ssm": ssm_score, **({"summary": summary_score} if summary_score else {})}
    better = {k: v for k, v in methods.items() if (v.recall_at_1, v.recall_at_3) > (raw.recall_at_1, raw.recall_at_3)}
    best = max(better, key=lambda k: (better[k].recall_at_1, better[k].recall_at_3)) if better else "raw"
    echo(f"best: {best}" + ("" if better else " (neither compression beats the raw turns)"))
    return EpisodicBenchReport(
        size=size, seed=seed, stretch_turns=stretch_turns, train_stretches=len(train), held_out_stretches=len(held),
        held_out_questions=len(asked), raw=raw, ssm=ssm_score, ssm_untrained=untrained, summary=summary_score,
        ssm_training={"steps": len(losses), "seconds": round(train_seconds, 2),
                      "first_loss": round(losses[0], 4) if losses else None,
                      "last_loss": round(losses[-1], 4) if losses else None},
        best=best, summaries=summaries[:5], embed_seconds=round(embed_seconds, 2),
        load_average=round(os.getloadavg()[0], 2))


def questions_asked(conversations: list[Conversation], limit: int) -> list[tuple[int, Question]]:
    """Up to ``limit`` (conversation, question) pairs, taking each conversation's first question,
    then each one's second, ...: a small count still spans the conversations."""
    rounds = max((len(c.questions) for c in conversations), default=0)
    pairs = [(c, conv.questions[j]) for j in range(rounds) for c, conv in enumerate(conversations)
             if j < len(conv.questions)]
    return pairs[:limit]


def store_conversations(engram, conversations: list[Conversation]) -> list[int]:
    """The conversations stored as chat stores its exchanges, turns embedded; their ids."""
    ids = []
    for conv in conversations:
        conversation_id = None
        for said, answered in zip(conv.turns[::2], conv.turns[1::2]):
            conversation_id = engram.conversations.start_question(conversation_id, said.content).conversation_id
            engram.conversations.add_answer(conversation_id, answered.content, [], {"backend": "bench"})
        assert conversation_id is not None
        ids.append(conversation_id)
    engram.episodic.embed_new()
    return ids


def ask_back(engram, stored: list[int], conversation: int, question: Question) -> AskedBack:
    """Ask ``question`` in a new conversation, score its answer, then delete that conversation."""
    message = engram.chat.answer(question.text).message
    bench_id = {cid: n for n, cid in enumerate(stored)}
    recalled = [bench_id.get(r["conversation_id"], -1) for r in message.meta.get("recalled", [])]
    right = conversation_path(stored[conversation])
    engram.conversations.delete(message.conversation_id)
    return AskedBack(question=question.text, expected=question.answer, answer=message.content,
                     contains=contains(message.content, question.answer),
                     cited_right=any(c.cited and c.path == right for c in message.citations),
                     recalled_right=conversation in recalled, recalled=recalled)


def run_answer_bench(settings: Settings, conversations: list[Conversation], limit: int, embedder=None,
                     echo: Echo = print) -> AnswerScore:
    """Store ``conversations`` as past chats of a temporary Engram and ask ``limit`` of their
    questions through the chat (greedy); ``embedder``: a loaded one to share."""
    from app.core import Engram

    pairs = questions_asked(conversations, limit)
    with tempfile.TemporaryDirectory(prefix="engram-episodic-bench-") as tmp:
        root = Path(tmp)
        local = settings.model_copy(update={
            "data_dir": root / "data", "drop_folder": root / "drop", "temperature": 0.0,
            "memory": settings.memory.model_copy(update={"episodic": True, "compress": "off"})})
        engram = Engram(LoadedSettings(settings=local, sources={}, config_file=root / "none.toml"),
                        embedder=embedder)
        try:
            stored = store_conversations(engram, conversations)
            started, asked = time.perf_counter(), []
            for n, (conversation, question) in enumerate(pairs, 1):
                asked.append(ask_back(engram, stored, conversation, question))
                if n % 5 == 0 or n == len(pairs):
                    echo(f"  {n}/{len(pairs)} questions asked")
            seconds = (time.perf_counter() - started) / max(1, len(pairs))
        finally:
            engram.close()
    n = max(1, len(asked))
    return AnswerScore(questions=len(asked), contains=round(sum(a.contains for a in asked) / n, 4),
                       cited_right=round(sum(a.cited_right for a in asked) / n, 4),
                       recalled_right=round(sum(a.recalled_right for a in asked) / n, 4),
                       seconds_per_answer=round(seconds, 2), asked=asked)


def run_from_settings(settings: Settings, size: str = "small", seed: int = 0, steps: int = 300,
                      summaries: bool = True, threads: int = 1, answers: int = 0,
                      echo: Echo = print) -> EpisodicBenchReport:
    """The bench with the configured embedding model and (``summaries``) chat model (llama.cpp
    on ``threads`` threads: on a busy machine more threads wait on each other); ``answers``:
    held-out questions also asked through the chat (0: none)."""
    from app.ingest.embeddings import Embedder
    from app.runtimes.active import runtime_options
    from app.runtimes.registry import make_runtime

    embedder = Embedder(settings.embedding_model, device=settings.device, backend=settings.embedding_backend)
    memory = settings.memory
    options = runtime_options(settings, settings.chat_backend)
    if settings.chat_backend == "llamacpp":
        options["n_threads"] = threads
    runtime = make_runtime(settings.chat_backend, settings.chat_model, **options) if summaries else None
    try:
        report = run_episodic_bench(lambda texts: embedder.embed(texts),
                                    (lambda request: runtime.generate(request).text) if runtime else None,
                                    size=size, seed=seed, steps=steps, stretch_turns=memory.stretch_turns,
                                    min_turns=memory.min_stretch_turns, echo=echo)
    finally:
        if runtime is not None:
            runtime.close()
    if answers > 0:
        echo(f"answers: {answers} held-out questions asked through the chat ({settings.chat_model}, greedy)")
        report.answers = run_answer_bench(settings.model_copy(update={"cpu_threads": threads}),
                                          generate(size, seed).held_out, answers, embedder=embedder, echo=echo)
        a = report.answers
        echo(f"answers: contain the fact {a.contains:.3f}, cite the right conversation {a.cited_right:.3f}, "
             f"recalled it {a.recalled_right:.3f} ({a.questions} questions, {a.seconds_per_answer:.1f} s each)")
    return report
