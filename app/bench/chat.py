"""``engram bench chat``: the chat path against raw llama-cpp-python, retrieval cost, grounded accuracy.

- Speed: the same question through Engram's whole chat path (retrieval, prompt packing, streaming,
  storing the turn) and through a separate raw ``Llama.create_chat_completion`` given exactly the
  messages Engram built, greedy, alternating runs; tokens/s and time to first token of each, and
  the ratio (target: Engram >= 0.9 of raw).
- Retrieval: the retrieval engine's ``contribute`` at 10k stored chunks (real embeddings of the
  corpus plus vectors jittered around them, said so in the report), against the bare exact FAISS
  search in the same index (target: < 100 ms).
- Accuracy: fictional documents the model cannot know, their questions asked through the chat
  path; exact match, answer contained, and answer-in-sources (retrieval found the passage), with
  and without the logit bias toward retrieved passages.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from app.bench.ingest import jittered
from app.bench.scoring import contains, exact_match
from app.bench.verdict import verdict
from engines.loop_guard import has_loop
from app.bench.fiction import generate
from app.services.general_text import background_text
from app.settings import LoadedSettings, Settings

TARGET_SPEED_RATIO = 0.9
TARGET_ISOLATION_RATIO = 0.95
TARGET_RETRIEVAL_MS = 100.0
FILLER_DOC_CHUNKS = 100
SPEED_ANSWER_TOKENS = 128
ARM_LABELS = {"plain": "retrieval", "logit_bias": "retrieval + logit bias",
              "hidden": "retrieval + hidden states"}


class SpeedFigures(BaseModel):
    runs: int
    completion_tokens: int
    engram_tokens_per_s: float
    raw_tokens_per_s: float
    ratio: float
    engram_first_token_ms: float
    raw_first_token_ms: float


class IsolationFigures(BaseModel):
    """The model's own process against raw llama-cpp-python in this one: same messages, greedy."""

    isolated: bool
    runs: int
    completion_tokens: int
    isolated_tokens_per_s: float
    raw_tokens_per_s: float
    ratio: float
    extra_first_token_ms: float
    process_start_s: float | None


class RetrievalFigures(BaseModel):
    chunks: int
    contribute_p50_ms: float
    contribute_p95_ms: float
    faiss_exact_p50_ms: float
    query_embed_p50_ms: float


Arm = Literal["plain", "logit_bias", "hidden"]
"""How retrieved passages shape the answer: in the prompt only; plus +strength on each of their
tokens (``rag.logit_bias``); plus the hidden-state tier's reward (engines/hidden)."""


class AccuracyFigures(BaseModel):
    logit_bias: bool
    arm: Arm = "plain"
    questions: int
    exact_match: float
    answer_contained: float
    answer_in_sources: float
    seconds_per_answer: float
    looped: int = Field(0, description="Answers that began repeating themselves: the loop guard "
                        "stopped them (finish_reason 'repetition'), or a repeat is left in the text.")


class ChatBenchReport(BaseModel):
    model: str
    speed: SpeedFigures
    isolation: IsolationFigures
    retrieval: RetrievalFigures
    accuracy: list[AccuracyFigures]
    notes: list[str]


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def p95_ms(samples: list[float]) -> float:
    return 1000 * float(np.percentile(samples, 95))


def _raw_run(llm, messages: list[dict], max_tokens: int) -> tuple[str, float, float]:
    """(text, seconds to first text, total seconds) of one raw streamed chat completion."""
    started = time.perf_counter()
    first = None
    pieces = []
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                            temperature=0.0, stream=True):
        text = chunk["choices"][0]["delta"].get("content") or ""
        if text:
            first = first or time.perf_counter() - started
            pieces.append(text)
    return "".join(pieces), first or 0.0, time.perf_counter() - started


def _engram_run(engram, question: str) -> tuple[str, float, float]:
    started = time.perf_counter()
    first = None
    pieces = []
    for event in engram.chat.ask(question):
        if event.kind == "delta":
            first = first or time.perf_counter() - started
            pieces.append(event.text)
    return "".join(pieces), first or 0.0, time.perf_counter() - started


def _runtime_run(runtime, request) -> tuple[str, float, float]:
    started = time.perf_counter()
    first = None
    pieces = []
    for piece in runtime.stream(request):
        first = first or time.perf_counter() - started
        pieces.append(piece)
    return "".join(pieces), first or 0.0, time.perf_counter() - started


def _decode_rate(tokens: int, totals: list[float], firsts: list[float]) -> float:
    """Tokens after the first over the median time after the first (prompt time excluded)."""
    return (tokens - 1) / statistics.median(t - f for t, f in zip(totals, firsts))


def measure_speed(engram, question: str, runs: int) -> tuple[SpeedFigures, IsolationFigures]:
    """Alternating runs of raw llama-cpp-python, Engram's whole chat path, and the bare runtime
    (the model in its own process) on the same messages."""
    from llama_cpp import Llama

    from app.chat.prompt import build_prompt
    from app.runtimes.isolated import IsolatedRuntime
    from engines.base import Query
    from engines.generation import GenerationRequest

    runtime = engram.runtime.get()
    if runtime.name != "llamacpp":
        raise ValueError("the speed comparison runs against raw llama-cpp-python: use the llamacpp "
                         "backend (any GGUF file) for `engram bench chat`")
    passages = engram.engine("rag").contribute(Query(text=question)).passages
    plan = build_prompt(question, passages, [], [], runtime.count_tokens, runtime.context_window,
                        engram.settings.answer_max_tokens, engram.settings.rag.context_share)
    messages = [m.model_dump() for m in plan.messages]
    request = GenerationRequest(messages=plan.messages, max_tokens=engram.settings.answer_max_tokens,
                                temperature=0.0)
    raw = Llama(model_path=str(runtime.path), n_ctx=runtime.context_window,
                n_threads=runtime.n_threads, n_threads_batch=runtime.n_threads,
                n_gpu_layers=runtime.n_gpu_layers, seed=0, verbose=False)
    raw_s, raw_first, eng_s, eng_first, iso_s, iso_first = [], [], [], [], [], []
    try:
        _raw_run(raw, messages, 8)  # warm all three
        _engram_run(engram, question)
        _runtime_run(runtime, request)
        for _ in range(runs):
            text, first, total = _raw_run(raw, messages, engram.settings.answer_max_tokens)
            raw_s.append(total)
            raw_first.append(first)
            text2, first2, total2 = _engram_run(engram, question)
            eng_s.append(total2)
            eng_first.append(first2)
            text3, first3, total3 = _runtime_run(runtime, request)
            iso_s.append(total3)
            iso_first.append(first3)
    finally:
        raw.close()
    tokens = runtime.count_tokens(text)
    raw_rate = _decode_rate(tokens, raw_s, raw_first)
    eng_rate = _decode_rate(runtime.count_tokens(text2), eng_s, eng_first)
    iso_rate = _decode_rate(runtime.count_tokens(text3), iso_s, iso_first)
    speed = SpeedFigures(runs=runs, completion_tokens=tokens, engram_tokens_per_s=eng_rate,
                         raw_tokens_per_s=raw_rate, ratio=eng_rate / raw_rate,
                         engram_first_token_ms=median_ms(eng_first),
                         raw_first_token_ms=median_ms(raw_first))
    isolated = isinstance(runtime, IsolatedRuntime)
    isolation = IsolationFigures(
        isolated=isolated, runs=runs, completion_tokens=runtime.count_tokens(text3),
        isolated_tokens_per_s=iso_rate, raw_tokens_per_s=raw_rate, ratio=iso_rate / raw_rate,
        extra_first_token_ms=median_ms(iso_first) - median_ms(raw_first),
        process_start_s=round(runtime.start_seconds, 3) if isolated else None)
    return speed, isolation


def add_filler(engram, target_chunks: int, seed: int) -> int:
    """Fill the store to ``target_chunks`` with background prose chunks (vectors: real embeddings
    of a sample, jittered for the rest). Returns how many chunks were added."""
    from store.documents import NewChunk

    missing = target_chunks - engram.docs.counts()["chunks"]
    if missing <= 0:
        return 0
    prose = background_text()
    texts = [prose[i:i + 600] for i in range(0, min(len(prose), 600 * 400), 600)]
    base = engram.embedder.embed(texts)
    vectors = jittered(base, missing, np.random.default_rng(seed))
    added = 0
    for d in range(0, missing, FILLER_DOC_CHUNKS):
        n = min(FILLER_DOC_CHUNKS, missing - d)
        chunks = [NewChunk(text=texts[(d + i) % len(texts)], line_start=i + 1, line_end=i + 1,
                           char_start=0, char_end=600, token_count=150) for i in range(n)]
        _, _, ids = engram.docs.replace(f"/bench/filler{d:06d}.txt", None, f"filler{d}", 1, 0.0,
                                        chunks, vectors[d:d + n])
        engram.index.add(np.asarray(ids, dtype=np.int64), vectors[d:d + n])
        added += n
    return added


def measure_retrieval(engram, questions: list[str]) -> RetrievalFigures:
    from engines.base import Query

    rag = engram.engine("rag")
    contribute, faiss_s, embed_s = [], [], []
    for q in questions:
        t0 = time.perf_counter()
        rag.contribute(Query(text=q))
        contribute.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vec = engram.embedder.encode([q])  # the raw part: contribute just embedded q
        embed_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engram.index.search(vec, rag.config.k * 2)
        faiss_s.append(time.perf_counter() - t0)
    return RetrievalFigures(chunks=len(engram.index), contribute_p50_ms=median_ms(contribute),
                            contribute_p95_ms=p95_ms(contribute),
                            faiss_exact_p50_ms=median_ms(faiss_s),
                            query_embed_p50_ms=median_ms(embed_s))


def measure_accuracy(engram, questions, arm: Arm, echo: Callable[[str], None],
                     hidden_strength: float = 0.0) -> AccuracyFigures:
    """Ask every question through the chat path with passages shaping the answer as ``arm`` says."""
    logit_bias = arm == "logit_bias"
    engram.settings.rag.logit_bias = logit_bias
    if "hidden" in engram.settings.engines:
        engram.settings.hidden.strength = hidden_strength if arm == "hidden" else 0.0
    exact = contained = in_sources = looped = 0
    started = time.perf_counter()
    for i, q in enumerate(questions, 1):
        done = engram.chat.answer(q.question)
        answer = done.message.content
        looped += done.message.meta.get("finish_reason") == "repetition" or has_loop(answer)
        exact += exact_match(answer, q.answer)
        contained += contains(answer, q.answer)
        sources = " ".join(c.quote for c in done.message.citations)
        passages = engram.docs.chunks(c.chunk_id for c in done.message.citations)
        in_sources += any(q.answer in p.text for p in passages.values()) or q.answer in sources
        if i % 20 == 0:
            echo(f"  {i}/{len(questions)} questions ({arm})")
    n = len(questions)
    return AccuracyFigures(logit_bias=logit_bias, arm=arm, questions=n, exact_match=exact / n,
                           answer_contained=contained / n, answer_in_sources=in_sources / n,
                           seconds_per_answer=(time.perf_counter() - started) / n, looped=looped)


def run_chat_bench(settings: Settings, questions: int = 100, chunks: int = 10_000, runs: int = 5,
                   seed: int = 0, echo: Callable[[str], None] = print, hidden: bool = False) -> ChatBenchReport:
    """``hidden``: a third accuracy arm, the hidden-state tier (its states filled after ingestion,
    at the strength the settings give it; the torch model loads for it)."""
    from app.core import Engram

    fiction = generate("small", seed)
    asked = fiction.questions[:questions]
    with tempfile.TemporaryDirectory(prefix="engram-bench-chat-") as tmp:
        root = Path(tmp)
        bench_settings = settings.model_copy(update={
            "data_dir": root / "data", "drop_folder": root / "drop", "temperature": 0.0,
            "answer_max_tokens": min(settings.answer_max_tokens, 64), "history_turns": 0,
            "rag": settings.rag.model_copy(),
            "engines": [e for e in settings.engines if e != "hidden"] + (["hidden"] if hidden else []),
        })
        engram = Engram(LoadedSettings(settings=bench_settings, sources={}, config_file=root / "none"))
        cortex = None
        try:
            fiction.write(root / "docs")
            engram.ingest([root / "docs"])
            engram.run_pending()
            engram.fill_windows()  # as the app's idle worker does after ingestion
            echo(f"Ingested {len(fiction.documents)} fictional documents; asking {len(asked)} questions")
            arms: list[Arm] = ["plain", "logit_bias"]
            strength = settings.hidden.strength if hidden else 0.0  # type: ignore[attr-defined]
            if hidden:
                from app.paths import DataPaths
                from app.runtimes.neocortex import load_neocortex

                # the person's data folder caches the torch conversion: not a minute per bench run
                cortex = load_neocortex(settings.neocortex_model, settings.device, DataPaths(root=settings.data_dir).cache)
                engram.adopt_neocortex(cortex)
                filled = engram.engine("hidden").fill()  # type: ignore[attr-defined]
                echo(f"Hidden states stored for {filled['chunks']} chunks")
                arms.append("hidden")
            accuracy = [measure_accuracy(engram, asked, arm, echo, strength) for arm in arms]
            engram.settings.rag.logit_bias = False
            if hidden:
                engram.settings.hidden.strength = 0.0  # type: ignore[attr-defined]
            echo(f"Measuring speed against raw llama-cpp-python ({runs} runs each)...")
            engram.settings.answer_max_tokens = SPEED_ANSWER_TOKENS
            entity = fiction.documents[0].entity
            speed, isolation = measure_speed(engram, f"Describe {entity} in detail, fact by fact.",
                                             runs)
            echo(f"Filling the store to {chunks:,} chunks for the retrieval figures...")
            filled = add_filler(engram, chunks, seed)
            retrieval = measure_retrieval(engram, [q.question for q in fiction.questions[:60]])
            model = f"{engram.runtime.backend} {engram.runtime.model}"
        finally:
            engram.close()
            if cortex is not None:
                cortex.close()
    report = ChatBenchReport(model=model, speed=speed, isolation=isolation, retrieval=retrieval,
                             accuracy=accuracy, notes=[
        f"{filled:,} of the {retrieval.chunks:,} chunks are background prose with vectors jittered "
        "around real embeddings (noise 0.04), to reach the index size",
        "exact match: the answer is the expected string, or a short sentence ending in it; "
        "answer in sources: the expected answer is in a cited passage",
        "speed: greedy, alternating raw/Engram runs, medians; tokens/s is the decoding rate after "
        "the first token (tokens counted by re-tokenizing each answer); time to first token "
        "includes Engram's retrieval and prompt packing",
        "isolation: the same messages through the runtime alone, the model in its own process "
        "(`isolate_runtime`), against raw llama-cpp-python in this process",
    ])
    print_report(report, echo)
    return report


def print_report(r: ChatBenchReport, echo: Callable[[str], None]) -> None:
    s, q = r.speed, r.retrieval
    echo("")
    echo(f"model             {r.model}")
    echo(f"tokens/s          Engram {s.engram_tokens_per_s:6.1f}   raw llama-cpp-python "
         f"{s.raw_tokens_per_s:6.1f}   ratio {s.ratio:.2f} (target >= {TARGET_SPEED_RATIO}) "
         f"{verdict(s.ratio >= TARGET_SPEED_RATIO)}")
    echo(f"first token       Engram {s.engram_first_token_ms:6.0f} ms  raw {s.raw_first_token_ms:6.0f} ms"
         f"  ({s.completion_tokens} tokens per answer, {s.runs} runs)")
    i = r.isolation
    where = "own process" if i.isolated else "in process (isolate_runtime is off)"
    echo(f"isolation         model in its {where}: {i.isolated_tokens_per_s:6.1f} tokens/s, ratio "
         f"{i.ratio:.2f} to raw (target >= {TARGET_ISOLATION_RATIO}) "
         f"{verdict(i.ratio >= TARGET_ISOLATION_RATIO)}; first token {i.extra_first_token_ms:+.0f} ms"
         + (f"; process start {i.process_start_s:.2f} s (once)" if i.process_start_s else ""))
    echo(f"retrieval         {q.contribute_p50_ms:6.1f} ms p50, {q.contribute_p95_ms:6.1f} ms p95 at "
         f"{q.chunks:,} chunks (target < {TARGET_RETRIEVAL_MS:.0f} ms) "
         f"{verdict(q.contribute_p95_ms < TARGET_RETRIEVAL_MS)}; of which query embedding "
         f"{q.query_embed_p50_ms:.1f} ms, exact FAISS search {q.faiss_exact_p50_ms:.2f} ms")
    for a in r.accuracy:
        echo(f"grounded accuracy ({ARM_LABELS[a.arm]:<27}) exact {a.exact_match:.2f}"
             f"  contained {a.answer_contained:.2f}  in sources {a.answer_in_sources:.2f}  "
             f"({a.questions} questions, {a.seconds_per_answer:.1f} s/answer); looped {a.looped} "
             f"(target 0) {verdict(a.looped == 0)}")
    for note in r.notes:
        echo(f"note: {note}")
