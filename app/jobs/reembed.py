"""Re-embedding the library after the embedding model or its backend changed, in the background.

One ``reembed`` job at a time, run by the worker like any other. It loads the embedder the
settings ask for (an ONNX backend that cannot be exported falls back to torch: then it re-embeds
into what actually runs, or does nothing when that is what the library already holds), embeds the
chunks that have no new vector yet into ``chunk_vectors_next`` (store/next_vectors.py) and reports
how far it is. It works in slices: after ``slice_s`` it queues its own continuation and returns, so
new documents are ingested (into the live index, with the live model) in between; their chunks are
caught up by a later slice. When no chunk lacks a new vector, ``swap`` builds the new index aside
and makes it live in one step; until then every search runs on the old vectors with the old model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from store.jobs import REEMBED, Job, JobQueue
from store.next_vectors import NextVectors

if TYPE_CHECKING:
    from app.ingest.embeddings import Embedder

log = logging.getLogger(__name__)

REEMBED_KEY = "embedding"
BATCH_CHUNKS = 256


def embedder_record(embedder: Embedder) -> dict:
    """What an embedder's vectors are, as the store records it (loads the model)."""
    return {"model": embedder.model_name, "backend": embedder.backend,
            "identity": embedder.identity, "dim": embedder.dim}


def queue_reembed(queue: JobQueue, reason: str) -> None:
    queue.enqueue(REEMBED, REEMBED_KEY, {"reason": reason})


class ReembedJobs:
    """The worker's handler for ``reembed`` jobs."""

    def __init__(self, store: NextVectors, queue: JobQueue, target: Callable[[], Embedder],
                 live_identity: Callable[[], str | None], swap: Callable[[Embedder, dict], bool],
                 stopping: Callable[[], bool], slice_s: float = 20.0) -> None:
        self.store = store
        self.queue = queue
        self.target = target
        self.live_identity = live_identity
        self.swap = swap
        self.stopping = stopping
        self.slice_s = slice_s
        self.batch_chunks = BATCH_CHUNKS

    def __call__(self, job: Job, progress: Callable[[float, str], None]) -> None:
        embedder = self.target()
        record = embedder_record(embedder)
        note = f" (torch: {embedder.fallback_reason})" if embedder.fallback_reason else ""
        if record["identity"] == self.live_identity():
            self.store.abandon()
            progress(1.0, f"the library is already embedded as {record['identity']}{note}")
            return
        self.store.begin(record)
        started = time.monotonic()
        while True:
            batch = self.store.missing(self.batch_chunks)
            if not batch:
                break
            self.store.add([cid for cid, _ in batch], embedder.encode([text for _, text in batch]))
            done, total = self.store.progress()
            progress(done / max(total, 1), f"re-embedding as {record['identity']}{note}: {done} of {total} chunks")
            if self.stopping() or time.monotonic() - started > self.slice_s:
                queue_reembed(self.queue, "continue")  # ingestion goes first; the rest comes next
                return
        if not self.swap(embedder, record):
            queue_reembed(self.queue, "chunks arrived while swapping")
            return
        progress(1.0, f"the library is embedded as {record['identity']}{note}; search uses it now")
        log.info("re-embedded the library as %s", record["identity"])
