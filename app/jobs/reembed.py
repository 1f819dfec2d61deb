"""Re-embedding the library after the embedding model or its backend changed, in the background.

One ``reembed`` job at a time, run by the worker like any other. It loads the embedder the
settings ask for (an ONNX backend that cannot be exported falls back to torch: then it re-embeds
into what actually runs, or does nothing when that is what the library already holds), embeds the
chunks that have no new vector yet into ``chunk_vectors_next`` (store/next_vectors.py) and reports
how far it is. It works in slices: after ``slice_s`` it queues its own continuation and returns, so
new documents are ingested (into the live index, with the live model) in between; their chunks are
caught up by a later slice. When no chunk lacks a new vector, ``swap`` builds the new index aside
and makes it live in one step; until then every search runs on the old vectors with the old model.
Turning ``embed_headers`` on or off is a switch like a model's: the library's identity carries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.ingest.headings import embedding_text, library_identity
from store.jobs import REEMBED, Job, JobQueue
from store.next_vectors import NextVectors

if TYPE_CHECKING:
    from app.ingest.embeddings import Embedder

log = logging.getLogger(__name__)

REEMBED_KEY = "embedding"
BATCH_CHUNKS = 256


def embedder_record(embedder: Embedder, headers: bool) -> dict:
    """What a library's vectors are, as the store records it (loads the model): the embedder's,
    and whether each chunk was embedded with its headers (``embed_headers``)."""
    return {"model": embedder.model_name, "backend": embedder.backend,
            "identity": library_identity(embedder.identity, headers), "dim": embedder.dim,
            "headers": headers}


def queue_reembed(queue: JobQueue, reason: str) -> None:
    queue.enqueue(REEMBED, REEMBED_KEY, {"reason": reason})


class ReembedJobs:
    """The worker's handler for ``reembed`` jobs."""

    def __init__(self, store: NextVectors, queue: JobQueue, target: Callable[[], Embedder],
                 live_identity: Callable[[], str | None], swap: Callable[[Embedder, dict], bool],
                 stopping: Callable[[], bool], slice_s: float = 20.0,
                 headers: Callable[[], bool] = lambda: False,
                 fill_contexts: Callable[[], None] = lambda: None) -> None:
        """``headers``: whether the settings ask for chunks embedded with their headers;
        ``fill_contexts``: works out the headers of chunks stored before they were kept."""
        self.store = store
        self.queue = queue
        self.target = target
        self.headers = headers
        self.fill_contexts = fill_contexts
        self.live_identity = live_identity
        self.swap = swap
        self.stopping = stopping
        self.slice_s = slice_s
        self.batch_chunks = BATCH_CHUNKS

    def __call__(self, job: Job, progress: Callable[[float, str], None]) -> None:
        embedder = self.target()
        headers = self.headers()
        record = embedder_record(embedder, headers)
        note = f" (torch: {embedder.fallback_reason})" if embedder.fallback_reason else ""
        if record["identity"] == self.live_identity():
            self.store.abandon()
            progress(1.0, f"the library is already embedded as {record['identity']}{note}")
            return
        self.store.begin(record)
        if headers:
            self.fill_contexts()
        started = time.monotonic()
        while True:
            batch = self.store.missing(self.batch_chunks)
            if not batch:
                break
            texts = [embedding_text(context, text, headers) for _, text, context in batch]
            self.store.add([cid for cid, _, _ in batch], embedder.encode(texts))
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
