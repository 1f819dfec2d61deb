"""``engram bench ingest --backends``: the same corpus ingested end to end by each embedding
backend (``name`` or ``name/batch``: torch/64, auto/16), each run in a fresh process (so its peak resident memory is its own), the backends taking
turns run after run (so a busy machine slows each alike), medians reported as ratios against the
old path (torch fp32) measured in the same run.

A child exports the ONNX model before its clock starts (once per cache; never counted), warms the
model up, then times ``ingest`` + ``run_pending`` and reads its peak resident memory
(``resource.getrusage``: the most the process ever held, model and torch included).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from app.bench.verdict import verdict
from app.settings import Settings

OLD_PATH = "torch/64"
"""What ingesting ran before issue 29: torch fp32, 64 chunks per embedding batch."""
TARGET_SPEEDUP = 2.0
TARGET_PEAK_GB = 0.8


class BackendRun(BaseModel):
    backend: str
    ran_as: str = ""  # what actually ran (torch after a fallback)
    chunks: int
    ingest_s: float
    chunks_per_s: float
    peak_rss_gb: float
    loaded_rss_gb: float  # after the model loaded and warmed up, before ingesting


class BackendFigures(BaseModel):
    backend: str
    runs: int
    chunks_per_s: float  # median
    speedup: float  # median chunks/s over the old path's median, same run
    peak_rss_gb: float  # the largest of its runs
    times_s: list[float]


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB on Linux


def _rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3


def parse_spec(spec: str, default_batch: int) -> tuple[str, int]:
    """'torch/64' -> ('torch', 64); 'auto' -> ('auto', the settings' batch size)."""
    name, _, batch = spec.partition("/")
    return name, int(batch) if batch else default_batch


def child(args: dict) -> BackendRun | None:
    """One backend's ingest of ``args['corpus']`` in this (fresh) process; with ``prepare``, only
    the export into the cache (its memory and time are never counted)."""
    from app.core import Engram
    from app.ingest.embeddings import Embedder
    from app.settings import LoadedSettings

    settings = Settings.model_validate_json(args["settings"])
    backend, batch = parse_spec(args["backend"], settings.embed_batch_size)
    if args.get("prepare"):
        Embedder(device="cpu", backend=backend, cache_dir=Path(args["cache"])).embed(["export"])
        return None
    root = Path(args["root"])
    bench = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop",
                                        "embedding_backend": backend, "embed_batch_size": batch})
    embedder = Embedder(bench.embedding_model, bench.device, batch, backend=backend,
                        cache_dir=Path(args["cache"]))
    embedder.embed(["warm up the model"] * 8)  # exports first when the cache lacks the files
    engram = Engram(LoadedSettings(settings=bench, sources={}, config_file=root / "none.toml"), embedder=embedder)
    try:
        engram.index
        loaded = _rss_gb()
        t0 = time.perf_counter()
        engram.ingest([Path(args["corpus"])])
        engram.run_pending()
        ingest_s = time.perf_counter() - t0
        peak = _peak_gb()
        chunks = engram.docs.counts()["chunks"]
    finally:
        engram.close()
    return BackendRun(backend=args["backend"], ran_as=embedder.backend, chunks=chunks, ingest_s=ingest_s,
                      chunks_per_s=chunks / ingest_s, peak_rss_gb=peak, loaded_rss_gb=loaded)


def run_backend(settings: Settings, backend: str, corpus: Path, cache: Path, workdir: Path,
                prepare: bool = False) -> BackendRun | None:
    args = {"settings": settings.model_dump_json(), "backend": backend, "corpus": str(corpus),
            "cache": str(cache), "root": str(workdir), "prepare": prepare}
    done = subprocess.run([sys.executable, "-m", "app.bench.ingest_backends", json.dumps(args)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {backend} run failed:\n{done.stderr[-3000:]}")
    return None if prepare else BackendRun.model_validate_json(done.stdout.strip().splitlines()[-1])


def compare_backends(settings: Settings, corpus: Path, backends: list[str], repeat: int,
                     echo: Callable[[str], None]) -> list[BackendFigures]:
    """Every backend ingests ``corpus`` ``repeat`` times, taking turns; medians and ratios."""
    if OLD_PATH not in backends:
        backends = [OLD_PATH, *backends]
    runs: dict[str, list[BackendRun]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory(prefix="engram-bench-backends-") as tmp:
        cache = Path(tmp) / "onnx-cache"
        for b in backends:
            if not b.startswith("torch"):
                run_backend(settings, b, corpus, cache, Path(tmp) / f"{b}-export", prepare=True)
        for r in range(repeat):
            order = backends if r % 2 == 0 else backends[::-1]
            for b in order:
                run = run_backend(settings, b, corpus, cache, Path(tmp) / f"{b}-{r}")
                assert run is not None
                runs[b].append(run)
                echo(f"  run {r + 1}/{repeat} {b:<10} {run.chunks_per_s:7.1f} chunks/s  "
                     f"{run.ingest_s:6.1f} s  peak {run.peak_rss_gb:.2f} GB"
                     + (f"  (ran as {run.ran_as})" if run.ran_as != b.partition("/")[0] else ""))
    old = statistics.median(r.chunks_per_s for r in runs[OLD_PATH])
    return [BackendFigures(backend=b, runs=len(rs), chunks_per_s=statistics.median(r.chunks_per_s for r in rs),
                           speedup=statistics.median(r.chunks_per_s for r in rs) / old,
                           peak_rss_gb=max(r.peak_rss_gb for r in rs), times_s=[r.ingest_s for r in rs])
            for b, rs in runs.items()]


def print_figures(figures: list[BackendFigures], default: str, echo: Callable[[str], None]) -> None:
    echo("")
    echo(f"{'backend/batch':<16} {'runs':>4} {'chunks/s':>9} {'vs ' + OLD_PATH:>12} {'peak GB':>8}")
    for f in figures:
        echo(f"{f.backend:<16} {f.runs:>4} {f.chunks_per_s:>9.1f} {f.speedup:>11.2f}x {f.peak_rss_gb:>8.2f}")
    chosen = next((f for f in figures if f.backend == default), None)
    if chosen is not None:
        echo(f"default ({default}) end-to-end vs the old path ({OLD_PATH}), same run: {chosen.speedup:.2f}x "
             f"(target >= {TARGET_SPEEDUP}x) {verdict(chosen.speedup >= TARGET_SPEEDUP)}")
        echo(f"default ({default}) peak resident memory while ingesting: {chosen.peak_rss_gb:.2f} GB "
             f"(target < {TARGET_PEAK_GB} GB) {verdict(chosen.peak_rss_gb < TARGET_PEAK_GB)}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = child(json.loads(sys.argv[1]))
    print(result.model_dump_json() if result else "{}")
