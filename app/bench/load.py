"""``engram bench load``: concurrent chat while thousands of files arrive, no errors, no deadlock.

A running Engram (watcher + worker, as the app runs) gets a burst of files dropped into its
watched folder and, at the same time, concurrent questions through the chat service. The report
gives the chat latency p50/p95 under that load (against one question asked alone in the same run),
the ingest throughput while answering, and every error; every request must finish within the
deadline, which is how a deadlock would show.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from app.bench.fiction import generate
from app.services.general_text import background_text
from app.settings import LoadedSettings, Settings
from store.jobs import INGEST, REFRESH


class LoadBenchReport(BaseModel):
    files: int
    concurrent_chats: int
    chat_ok: int
    chat_errors: list[str]
    alone_s: float
    chat_p50_s: float
    chat_p95_s: float
    ingest_s: float
    files_per_s: float
    consistent: bool
    deadlocked: bool


def write_small_files(folder: Path, files: int, seed: int) -> None:
    """``files`` short documents (one or two sentences of real prose each)."""
    rng = random.Random(seed)
    prose = background_text()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        start = rng.randrange(0, len(prose) - 400)
        (folder / f"note{i:05d}.txt").write_text(prose[start:start + rng.randint(80, 400)])


def _ask_all(engram, questions: list[str], deadline_s: float) -> tuple[list[float], list[str], bool]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(question: str) -> None:
        started = time.perf_counter()
        try:
            engram.chat.answer(question)
        except Exception as exc:  # every failure is a finding of the bench
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=one, args=(q,), daemon=True) for q in questions]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    return latencies, errors, any(t.is_alive() for t in threads)


def run_load_bench(settings: Settings, files: int = 5000, chats: int = 20, seed: int = 0,
                   deadline_s: float = 1800.0,
                   echo: Callable[[str], None] = print) -> LoadBenchReport:
    from app.core import Engram

    fiction = generate("tiny", seed)
    with tempfile.TemporaryDirectory(prefix="engram-bench-load-") as tmp:
        root = Path(tmp)
        drop = root / "drop"
        bench_settings = settings.model_copy(update={
            "data_dir": root / "data", "drop_folder": drop, "watch_debounce_s": 0.5,
            "answer_max_tokens": min(settings.answer_max_tokens, 48), "temperature": 0.0})
        engram = Engram(LoadedSettings(settings=bench_settings, sources={}, config_file=root / "none"))
        try:
            engram.start(watch=True)
            fiction.write(drop / "facts")
            wait = time.monotonic() + 300
            while engram.docs.counts()["indexed"] < len(fiction.documents) and time.monotonic() < wait:
                time.sleep(0.2)
            engram.fill_windows()  # as the app's idle worker does after ingestion: not while timing
            while engram.queue.pending_count(REFRESH) and time.monotonic() < wait:
                time.sleep(0.2)
            questions = [q.question for q in fiction.questions]
            started = time.perf_counter()
            engram.chat.answer(questions[0])
            alone = time.perf_counter() - started
            echo(f"One question alone: {alone:.1f} s. Dropping {files:,} files and asking "
                 f"{chats} questions at once...")
            ingest_started = time.perf_counter()
            writer = threading.Thread(target=write_small_files, args=(drop / "burst", files, seed))
            writer.start()
            asked = [questions[i % len(questions)] for i in range(chats)]
            latencies, errors, deadlocked = _ask_all(engram, asked, deadline_s)
            writer.join()
            echo(f"{len(latencies)} answers, {len(errors)} errors; waiting for the ingest to finish...")
            target = len(fiction.documents) + files
            end = time.monotonic() + deadline_s
            while engram.docs.counts()["documents"] < target or engram.queue.pending_count(INGEST):
                if time.monotonic() > end:
                    deadlocked = True
                    break
                time.sleep(0.5)
            ingest_s = time.perf_counter() - ingest_started
            counts = engram.docs.counts()
            consistent = (counts["indexed"] == target and len(engram.index) == counts["chunks"]
                          and set(engram.index.ids().tolist()) == set(engram.docs.chunk_ids().tolist()))
        finally:
            engram.close()
    report = LoadBenchReport(
        files=files, concurrent_chats=chats, chat_ok=len(latencies), chat_errors=errors,
        alone_s=alone,
        chat_p50_s=statistics.median(latencies) if latencies else float("nan"),
        chat_p95_s=float(np.percentile(latencies, 95)) if latencies else float("nan"),
        ingest_s=ingest_s, files_per_s=files / ingest_s, consistent=consistent, deadlocked=deadlocked,
    )
    print_report(report, echo)
    return report


def print_report(r: LoadBenchReport, echo: Callable[[str], None]) -> None:
    ok = r.chat_ok == r.concurrent_chats and not r.chat_errors and r.consistent and not r.deadlocked
    echo("")
    echo(f"chat under load   {r.chat_ok}/{r.concurrent_chats} answered, p50 {r.chat_p50_s:.1f} s, "
         f"p95 {r.chat_p95_s:.1f} s (one alone: {r.alone_s:.1f} s; answers share one model, so "
         "they queue)")
    echo(f"ingest under load {r.files:,} files in {r.ingest_s:.0f} s ({r.files_per_s:.1f} files/s)")
    echo(f"errors {len(r.chat_errors)}, deadlock {'YES' if r.deadlocked else 'no'}, store and index "
         f"{'consistent' if r.consistent else 'INCONSISTENT'}  {'PASS' if ok else 'FAIL'}")
    for error in r.chat_errors[:10]:
        echo(f"  error: {error}")
