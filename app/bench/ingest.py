"""``engram bench ingest``: ingestion and search figures as ratios against raw parts, same run.

- end-to-end chunks/s of the real pipeline (scan, parse, chunk, embed, SQLite, FAISS) on a
  generated corpus, against raw embedding throughput of exactly the same chunk texts;
- the time to re-scan the unchanged corpus (must do no embedding work);
- search latency p50/p95 of the exact and the approximate index at several sizes, and the
  approximate index's recall@10 against exact search.

The corpus is real English prose (the Python language reference that ships with every CPython,
``pydoc_data``), cut into files of mixed sizes and formats. Index sizes beyond the corpus are
reached with vectors jittered around the corpus' real embeddings (said so in the report).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from app.bench.ingest_backends import BackendFigures, compare_backends, print_figures
from app.bench.verdict import verdict
from app.services.general_text import background_text
from app.settings import Settings

TARGET_RATIO = 0.8
TARGET_RESCAN_S = 2.0
TARGET_RECALL = 0.95


class SearchFigures(BaseModel):
    vectors: int
    index_kind: str
    exact_p50_ms: float
    exact_p95_ms: float
    approx_p50_ms: float
    approx_p95_ms: float
    recall_at_10: float
    build_s: float


class IngestBenchReport(BaseModel):
    files: int
    chunks: int
    errors: int
    ingest_s: float
    chunks_per_s: float
    raw_embed_chunks_per_s: float
    ratio_to_raw: float
    rescan_s: float
    rescan_queued: int
    query_embed_ms: float
    peak_rss_gb: float = 0.0  # this process's most resident memory up to the end of ingesting
    embedding_backend: str = "torch"  # what ran in this process (the settings' backend, resolved)
    default_spec: str = ""  # the settings' backend/batch, as --backends names it
    search: list[SearchFigures]
    backends: list[BackendFigures] = []  # --backends: each ingesting in its own process, same run
    notes: list[str]


def generate_corpus(folder: Path, files: int, seed: int = 0) -> int:
    """Write ``files`` documents of mixed sizes (200 B .. 24 KB, log-uniform) and formats."""
    rng = random.Random(seed)
    prose = background_text()
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(files):
        size = int(200 * (120 ** rng.random()))
        start = rng.randrange(0, len(prose) - size - 1)
        text = prose[start:start + size]
        kind = rng.choices(["txt", "md", "html", "jsonl"], weights=[5, 3, 1, 1])[0]
        sub = folder / f"group{i % 20:02d}"
        sub.mkdir(exist_ok=True)
        path = sub / f"doc{i:05d}.{kind}"
        if kind == "md":
            body = f"# Document {i}\n\n{text}\n"
        elif kind == "html":
            paras = "".join(f"<p>{p}</p>" for p in text.split("\n\n") if p.strip())
            body = f"<html><head><style>p{{}}</style></head><body><h1>Doc {i}</h1>{paras}</body></html>"
        elif kind == "jsonl":
            body = "".join(json.dumps({"id": j, "text": p}) + "\n"
                           for j, p in enumerate(text.split("\n\n")) if p.strip())
            body = body or json.dumps({"text": text or "empty"}) + "\n"
        else:
            body = text
        path.write_text(body, encoding="utf-8")
        total += len(body)
    return total


def _latencies(search: Callable[[np.ndarray], object], queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(q[None, :])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def jittered(base: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    """``n`` unit vectors scattered around real embeddings (a stand-in for a bigger real corpus)."""
    picks = base[rng.integers(0, len(base), size=n)]
    out = picks + rng.normal(scale=noise, size=picks.shape).astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def search_figures(settings: Settings, base: np.ndarray, queries: np.ndarray, size: int,
                   folder: Path, seed: int) -> SearchFigures:
    from store.vector_index import VectorIndex

    rng = np.random.default_rng(seed)
    vectors = base[:size] if len(base) >= size else np.vstack([base, jittered(base, size - len(base), rng)])
    ids = np.arange(1, size + 1, dtype=np.int64)
    exact = VectorIndex(folder / f"exact{size}.faiss", base.shape[1], ann_threshold=size + 1)
    exact.add(ids, vectors)
    t0 = time.perf_counter()
    approx = VectorIndex(folder / f"approx{size}.faiss", base.shape[1],
                         ann_threshold=min(settings.ann_threshold, size), nprobe=settings.ann_nprobe)
    approx.add(ids, vectors)
    build_s = time.perf_counter() - t0
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
    e50, e95 = _latencies(lambda q: exact.search(q, 10), queries)
    a50, a95 = _latencies(lambda q: approx.search(q, 10), queries)
    return SearchFigures(vectors=size, index_kind=approx.kind, exact_p50_ms=e50, exact_p95_ms=e95,
                         approx_p50_ms=a50, approx_p95_ms=a95, recall_at_10=recall, build_s=build_s)


def run_ingest_bench(settings: Settings, files: int = 2000, vector_sizes: list[int] | None = None,
                     seed: int = 0, echo: Callable[[str], None] = print, backends: list[str] | None = None,
                     repeat: int = 3) -> IngestBenchReport:
    import resource

    from app.core import Engram
    from app.settings import LoadedSettings

    vector_sizes = vector_sizes or [10_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="engram-bench-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        nbytes = generate_corpus(corpus, files, seed)
        echo(f"Generated {files} files ({nbytes / 1e6:.1f} MB) in {corpus}")
        compared = []
        if backends:
            echo(f"Ingesting with {', '.join(backends)} in turn, {repeat} times, each in its own process")
            compared = compare_backends(settings, corpus, backends, repeat, echo)
        bench_settings = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop"})
        engram = Engram(LoadedSettings(settings=bench_settings, sources={}, config_file=root / "none.toml"))
        try:
            engram.embedder.embed(["warm up the model"] * 8)
            t0 = time.perf_counter()
            engram.ingest([corpus])
            engram.run_pending()
            ingest_s = time.perf_counter() - t0
            peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
            counts = engram.docs.counts()
            texts = engram.docs.all_chunk_texts()
            echo(f"Ingested {counts['documents']} files into {counts['chunks']} chunks in {ingest_s:.1f} s")

            t0 = time.perf_counter()
            engram.embedder.embed(texts)
            raw_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            rescan = engram.ingestor.scan(corpus)
            rescan_s = time.perf_counter() - t0

            queries_text = [t[:200] for t in random.Random(seed).sample(texts, min(200, len(texts)))]
            t0 = time.perf_counter()
            for q in queries_text[:50]:
                engram.embedder.encode([q])
            query_ms = (time.perf_counter() - t0) * 1000 / min(50, len(queries_text))
            base = engram.docs.vectors(engram.docs.chunk_ids())
            queries = jittered(engram.embedder.embed(queries_text), len(queries_text),
                               np.random.default_rng(seed + 1), noise=0.02)
            figures = []
            for size in vector_sizes:
                echo(f"Measuring search at {size:,} vectors...")
                figures.append(search_figures(bench_settings, base, queries, size, root / "idx", seed))
        finally:
            engram.close()
    chunks = len(texts)
    report = IngestBenchReport(
        files=files, chunks=chunks, errors=counts["error"], ingest_s=ingest_s,
        chunks_per_s=chunks / ingest_s, raw_embed_chunks_per_s=chunks / raw_s,
        ratio_to_raw=(chunks / ingest_s) / (chunks / raw_s), rescan_s=rescan_s,
        rescan_queued=rescan.queued, query_embed_ms=query_ms, search=figures, peak_rss_gb=peak_gb,
        embedding_backend=engram.embedder.backend, backends=compared,
        default_spec=f"{settings.embedding_backend}/{settings.embed_batch_size}",
        notes=[f"{len(base)} real chunk embeddings; larger index sizes add vectors jittered "
               "around them (noise 0.04 per dimension before normalising)",
               f"approximate index: IVF when vectors >= ann_threshold ({bench_settings.ann_threshold}), "
               f"nprobe={bench_settings.ann_nprobe}"],
    )
    print_report(report, echo)
    return report


def print_report(r: IngestBenchReport, echo: Callable[[str], None]) -> None:
    echo("")
    echo(f"end-to-end      {r.chunks_per_s:8.1f} chunks/s   raw embedding {r.raw_embed_chunks_per_s:8.1f} "
         f"chunks/s   ratio {r.ratio_to_raw:.2f} (target >= {TARGET_RATIO}) {verdict(r.ratio_to_raw >= TARGET_RATIO)}")
    echo(f"unchanged rescan {r.rescan_s:7.2f} s for {r.files} files, {r.rescan_queued} queued "
         f"(target < {TARGET_RESCAN_S} s, 0 queued) {verdict(r.rescan_s < TARGET_RESCAN_S and r.rescan_queued == 0)}")
    echo(f"query embedding {r.query_embed_ms:7.1f} ms per query")
    for s in r.search:
        echo(f"{s.vectors:>8,} vectors  exact p50 {s.exact_p50_ms:6.2f} ms p95 {s.exact_p95_ms:6.2f} ms | "
             f"{s.index_kind} p50 {s.approx_p50_ms:6.2f} ms p95 {s.approx_p95_ms:6.2f} ms | "
             f"recall@10 {s.recall_at_10:.3f} (target >= {TARGET_RECALL}) {verdict(s.recall_at_10 >= TARGET_RECALL)}")
    echo(f"peak resident memory {r.peak_rss_gb:.2f} GB while ingesting ({r.embedding_backend}; this process)")
    for note in r.notes:
        echo(f"note: {note}")
    if r.backends:
        print_figures(r.backends, r.default_spec, echo)
