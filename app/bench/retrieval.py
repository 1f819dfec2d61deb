"""``engram bench retrieval``: does search find what people type, per kind of query and per mode?

A real library is ingested into a temporary data folder the ordinary way (files, parse, chunk,
embed, SQLite + FTS5 + FAISS): Python's documentation topics and a few hundred near-duplicate
notes (``app.bench.retrieval_queries``). Then the same queries are asked with ``rag.mode`` set to
dense, bm25 and hybrid in turn, through ``Engram.search``: the one ranking chat, the engines and
``engram search`` use, so the bench measures that code and has no ranking of its own.

A query's rank is the place of the first accepted document among the documents of the top
``SEARCH_K`` chunks (each document counted once, where its best chunk ranks). Figures per kind and
mode: recall@1, recall@5, MRR (0 past the read chunks) and the median time of one search (query
embedding included). Hybrid includes the sentence-window re-rank (``rag.sentence_rerank``), with
the windows embedded first as the idle worker does after ingestion (timed apart: ``windows_s``).
A cross-encoder reranker is not measured: none ships offline.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from app.bench.retrieval_queries import (
    KINDS,
    ParaphraseSet,
    Query,
    all_queries,
    load_topics,
    sentinel_notes,
    write_corpus,
)
from app.bench.verdict import verdict
from app.ingest.embeddings import RECENT_QUERIES
from app.settings import Settings

if TYPE_CHECKING:
    from app.core import Engram

Echo = Callable[[str], None]
MODES = ("dense", "bm25", "hybrid")
SEARCH_K = 20
"""Chunks read per query: enough for five distinct documents, and small enough that
``Engram.search`` keeps its default candidate depth (``rag.candidates``)."""
EXACT_TARGET = 0.98  # hybrid recall@1 on identifiers and codes
PARAPHRASE_TARGET = 0.95  # hybrid recall@5 on paraphrases
MISSES_SHOWN = 5
BLOCK = RECENT_QUERIES + 1
"""Queries a mode asks before the next mode's turn: one more than the embedder remembers."""
def rerank_said(sentence_rerank: int) -> str:
    windows = (f"hybrid re-ranks its best {sentence_rerank} chunks by their stored sentence windows "
               "(rag.sentence_rerank)" if sentence_rerank else "the sentence-window re-rank is off")
    return f"{windows}; a cross-encoder reranker is not available: none ships offline with Engram"


class KindFigures(BaseModel):
    """One kind of query under one retrieval mode."""

    kind: str
    mode: str
    queries: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    p50_ms: float = Field(description="Median time of one Engram.search, query embedding included.")


class Miss(BaseModel):
    """A hybrid query whose accepted document did not rank first."""

    kind: str
    query: str
    accepted: list[str]
    rank: int | None = Field(description="Place of the first accepted document; None: not in the read chunks.")
    found: list[str] = Field(description="The first three documents found.")


class TargetCheck(BaseModel):
    name: str
    ok: bool
    detail: str


class RetrievalBenchReport(BaseModel):
    created_at: str
    seed: int
    paraphrases: str = Field("held-out", description="Which hand-written paraphrase set was asked: held-out or dev.")
    topics: int
    notes: int
    chunks: int
    ingest_s: float
    windows_s: float | None = Field(None, description="The idle worker's embedding of every chunk's "
                                    "sentence windows after ingestion (rag.sentence_rerank; None: off).")
    embedding_model: str
    rag: dict[str, object] = Field(description="The rag settings the runs used (mode aside).")
    search_k: int
    figures: list[KindFigures]
    rerank: str
    targets: list[TargetCheck]
    misses: list[Miss] = Field(description=f"Up to {MISSES_SHOWN} hybrid misses per kind.")
    load_average: float = Field(description="The machine's 1-minute load average after the searches "
                                "(above its CPU count, other work was slowing the latencies).")
    cpus: int
    seconds: float


def document_order(paths: list[str]) -> list[str]:
    """Documents (file stems) in the order their best chunk ranks."""
    return list(dict.fromkeys(Path(p).stem for p in paths))


def rank_of(documents: list[str], accepted: list[str]) -> int | None:
    """1-based place of the first accepted document, None when none was found."""
    return next((i for i, doc in enumerate(documents, 1) if doc in accepted), None)


def figures_for(kind: str, mode: str, ranks: list[int | None], seconds: list[float]) -> KindFigures:
    n = len(ranks)
    return KindFigures(
        kind=kind, mode=mode, queries=n,
        recall_at_1=sum(r == 1 for r in ranks) / n, recall_at_5=sum(r is not None and r <= 5 for r in ranks) / n,
        mrr=sum(1 / r for r in ranks if r) / n, p50_ms=1000 * statistics.median(seconds))


def ask_all(engram, kind: str, queries: list[Query]) -> tuple[list[KindFigures], list[Miss]]:
    """Every query of one kind through ``Engram.search`` in each mode: figures per mode, and the
    hybrid misses. Modes take turns by blocks of queries, so a busy machine slows each alike; a
    block outnumbers the embedder's recent-query memory, so every search embeds its query as a
    new question would (a mode asking after another must not time a remembered vector)."""
    ranks: dict[str, list[int | None]] = {m: [] for m in MODES}
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    misses: list[Miss] = []
    for start in range(0, len(queries), BLOCK):
        for mode in MODES:
            engram.settings.rag.mode = mode
            for q in queries[start:start + BLOCK]:
                started = time.perf_counter()
                passages = engram.search(q.text, k=SEARCH_K)
                seconds[mode].append(time.perf_counter() - started)
                documents = document_order([p.path for p in passages])
                ranks[mode].append(rank_of(documents, q.accepted))
                if mode == "hybrid" and ranks[mode][-1] != 1:
                    misses.append(Miss(kind=kind, query=q.text, accepted=q.accepted, rank=ranks[mode][-1],
                                       found=documents[:3]))
    return [figures_for(kind, m, ranks[m], seconds[m]) for m in MODES], misses


def check_targets(figures: list[KindFigures]) -> list[TargetCheck]:
    """The issue's targets: exact queries first, hybrid never worse than a single method,
    paraphrases found in the top five."""
    by = {(f.kind, f.mode): f for f in figures}
    checks: list[TargetCheck] = []
    for kind in ("identifier", "code"):
        if (kind, "hybrid") in by:
            r1 = by[kind, "hybrid"].recall_at_1
            checks.append(TargetCheck(name=f"hybrid recall@1 on {kind}s >= {EXACT_TARGET}",
                                      ok=r1 >= EXACT_TARGET, detail=f"{r1:.3f}"))
    for kind in KINDS:
        if (kind, "hybrid") not in by:
            continue
        hybrid, short = by[kind, "hybrid"], []
        for metric in ("recall_at_1", "recall_at_5", "mrr"):
            best = max(getattr(by[kind, m], metric) for m in ("dense", "bm25"))
            if getattr(hybrid, metric) < best - 1e-9:
                short.append(f"{metric} {getattr(hybrid, metric):.3f} < {best:.3f}")
        checks.append(TargetCheck(name=f"hybrid >= best single method on {kind}s (R@1, R@5, MRR)",
                                  ok=not short, detail="; ".join(short) or "yes"))
    if ("paraphrase", "hybrid") in by:
        r5 = by["paraphrase", "hybrid"].recall_at_5
        checks.append(TargetCheck(name=f"hybrid recall@5 on paraphrases >= {PARAPHRASE_TARGET}",
                                  ok=r5 >= PARAPHRASE_TARGET, detail=f"{r5:.3f}"))
    return checks


def _open(settings: Settings, root: Path, embedder):
    """An Engram over a temporary data folder with retrieval only (no engine learns the corpus);
    its own copy of the rag settings, so switching modes never touches the caller's."""
    from app.core import Engram
    from app.settings import LoadedSettings

    bench = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop",
                                        "engines": ["rag"], "rag": settings.rag.model_copy()})
    return Engram(LoadedSettings(settings=bench, sources={}, config_file=root / "none.toml"), embedder=embedder)


def run_retrieval_bench(settings: Settings, queries: int = 100, notes: int = 300, topics: int | None = None,
                        seed: int = 0, echo: Echo = print, embedder=None,
                        paraphrases: ParaphraseSet = "held-out") -> RetrievalBenchReport:
    """Ingest the topics and notes, ask ``queries`` of each kind in every mode, check the targets.

    ``topics`` keeps only the first topics (a small slice for tests); ``embedder`` shares an
    already loaded model; ``paraphrases`` picks the hand-written set (tune on ``dev`` only)."""
    started = time.perf_counter()
    corpus = load_topics(topics)
    note_texts = sentinel_notes(notes, seed)
    asked = all_queries(corpus, note_texts, queries, seed, paraphrases)
    echo(f"{len(corpus)} documentation topics, {len(note_texts)} near-duplicate notes; queries: "
         + ", ".join(f"{len(qs)} {kind}" for kind, qs in asked.items()) + f" ({paraphrases} paraphrase set)")
    with tempfile.TemporaryDirectory(prefix="engram-bench-retrieval-") as tmp:
        root = Path(tmp)
        write_corpus(root / "corpus", corpus, note_texts)
        engram = _open(settings, root, embedder)
        try:
            engram.embedder.embed(["warm up the model"])
            t0 = time.perf_counter()
            engram.ingest([root / "corpus"])
            engram.run_pending()
            ingest_s = time.perf_counter() - t0
            chunks = engram.status().chunks
            echo(f"Ingested {len(corpus) + len(note_texts)} files into {chunks} chunks in {ingest_s:.1f} s")
            windows_s = _fill_windows(engram, echo) if engram.settings.rag.sentence_rerank else None
            figures, misses = _measure(engram, asked, echo)
            load = os.getloadavg()[0]
            rag = engram.settings.rag.model_dump(include={"rrf_k", "dense_weight", "bm25_weight", "candidates",
                                                           "sentence_rerank"})
            model = engram.settings.embedding_model
        finally:
            engram.close()
    report = RetrievalBenchReport(
        created_at=datetime.now().isoformat(timespec="seconds"), seed=seed, paraphrases=paraphrases,
        topics=len(corpus),
        notes=len(note_texts), chunks=chunks, ingest_s=ingest_s, windows_s=windows_s, embedding_model=model,
        rag=rag, search_k=SEARCH_K, figures=figures, rerank=rerank_said(int(rag["sentence_rerank"])),
        targets=check_targets(figures),
        misses=misses, load_average=load, cpus=os.cpu_count() or 1, seconds=time.perf_counter() - started)
    print_report(report, echo)
    return report


def _fill_windows(engram: Engram, echo: Echo) -> float:
    """Embed the sentence windows as the idle worker does after ingestion (searches then read them)."""
    t0 = time.perf_counter()
    done = engram.fill_windows()
    seconds = time.perf_counter() - t0
    echo(f"Embedded the sentence windows of {done['chunks']} chunks in {seconds:.1f} s (idle-time work)")
    return seconds


def _measure(engram, asked: dict[str, list[Query]], echo: Echo) -> tuple[list[KindFigures], list[Miss]]:
    for mode in MODES:  # the first search of a mode pays for lazy set-up, not the query
        engram.settings.rag.mode = mode
        engram.search("warm up this mode", k=SEARCH_K)
    figures: list[KindFigures] = []
    misses: list[Miss] = []
    for kind, queries in asked.items():
        if queries:
            result, missed = ask_all(engram, kind, queries)
            figures.extend(result)
            misses.extend(missed[:MISSES_SHOWN])
            echo(f"  {kind}: {len(queries)} queries x {len(MODES)} modes done")
    return figures, misses


def print_report(r: RetrievalBenchReport, echo: Echo) -> None:
    echo("")
    echo(f"{'kind':<11} {'mode':<7} {'n':>4} {'R@1':>6} {'R@5':>6} {'MRR':>6} {'p50 ms':>7}")
    for f in sorted(r.figures, key=lambda f: (KINDS.index(f.kind), MODES.index(f.mode))):  # type: ignore[arg-type]
        echo(f"{f.kind:<11} {f.mode:<7} {f.queries:>4} {f.recall_at_1:>6.3f} {f.recall_at_5:>6.3f} "
             f"{f.mrr:>6.3f} {f.p50_ms:>7.1f}")
    echo(f"hybrid + rerank: {r.rerank}")
    echo(f"{r.topics} topics + {r.notes} notes = {r.chunks} chunks; p50 = one Engram.search with its query "
         f"embedded; load average {r.load_average:.1f} on {r.cpus} CPUs")
    echo("")
    for t in r.targets:
        echo(f"{t.name}: {t.detail} {verdict(t.ok)}")
    if r.misses:
        echo("")
        echo("hybrid misses (query -> rank of the answer; first documents found):")
        for m in r.misses:
            echo(f"  {m.kind}: {m.query!r} -> {m.rank or '-'} (want {', '.join(m.accepted)}; got {', '.join(m.found)})")
