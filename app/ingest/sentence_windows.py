"""The hybrid search's sentence windows: each chunk cut into runs of two sentences, embedded once.

A question put in other words often matches one or two sentences of a chunk, and the chunk's
single vector averages them with the rest. ``rag.sentence_rerank`` re-ranks a search's best
chunks by their most similar window (``engines.rag.hybrid.rerank_by_windows``). Embedding the
windows of 15 chunks while the person waits took seconds on a 2-core CPU, so they are embedded
once, in the background after ingestion (``WindowFill``, a refresher of ``app.jobs.refresh``), and
kept beside their chunks (``store.chunk_windows``) under the embedding identity that made them.
A search scores the stored windows and embeds the few that are not stored yet itself; where too
many are missing (a library just added), it keeps the fused order until the fill has them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from app.ingest.chunking import split_units
from engines.base import Progress
from engines.rag.hybrid import sentence_windows
from store.chunk_windows import ChunkWindowStore
from store.documents import DocumentStore

if TYPE_CHECKING:
    from app.ingest.embeddings import Embedder

MAX_WINDOWS_NOW = 24
"""Most windows a search embeds itself (about a tenth of a second): more waits for the fill."""
FILL_CHUNKS = 32
"""Chunks whose windows are embedded and stored together (one transaction) by the fill."""

Embed = Callable[[list[str]], np.ndarray]


def windows_of(text: str) -> list[str]:
    """The runs of two consecutive sentences (the chunker's units) of a chunk's text."""
    return sentence_windows([text[a:b] for a, b in split_units(text)]) or [text]


def embed_windows(embed: Embed, windows: dict[int, list[str]]) -> dict[int, np.ndarray]:
    """Each chunk's window vectors ([windows, dim]) from its windows, embedded in one call."""
    flat = [w for found in windows.values() for w in found]
    if not flat:
        return {}
    vectors, out, at = embed(flat), {}, 0
    for cid, found in windows.items():
        out[cid], at = vectors[at:at + len(found)], at + len(found)
    return out


def best_window_scores(store: ChunkWindowStore, docs: DocumentStore, ids: list[int], identity: str,
                       embed: Embed, vec: np.ndarray) -> dict[int, float] | None:
    """Each chunk's highest cosine similarity between the query vector and one of its windows:
    stored ones, and the missing ones embedded now where they are few (None where they are not:
    the search then keeps its fused order)."""
    stored = store.get(ids, identity)
    missing = {cid: windows_of(text)
               for cid, text in docs.chunk_texts_by_id([cid for cid in ids if cid not in stored]).items()}
    if sum(map(len, missing.values())) > MAX_WINDOWS_NOW:
        return None
    vectors = stored | embed_windows(embed, missing)
    return {cid: float((v.astype(np.float32) @ vec).max()) for cid, v in vectors.items() if len(v)}


class WindowFill:
    """The refresher that embeds and stores the windows of every chunk that has none under the
    library's embedding identity (``app.jobs.refresh``)."""

    name = "windows"

    def __init__(self, store: ChunkWindowStore, identity: Callable[[], str],
                 embedder: Callable[[], Embedder]) -> None:
        self.store = store
        self.identity = identity  # the live index's embedding identity
        self.embedder = embedder

    def stale_documents(self) -> tuple[str, list[int]]:
        """(the embedding identity and the newest chunk lacking windows under it, that chunk):
        chunks added later make another fill, even after one failed; the same missing chunks
        after a fill that could not store them do not."""
        identity = self.identity()
        newest = self.store.newest_missing(identity)
        return f"{identity} to chunk {newest}", [] if newest is None else [newest]

    def refresh(self, progress: Progress, stop: Callable[[], bool]) -> dict[str, int]:
        identity, embedder = self.identity(), self.embedder()
        if embedder.identity != identity:  # a re-embedding is under way: the new identity queues it again
            progress(1.0, "skipped: the library is being embedded with another model")
            return {"documents": 0, "chunks": 0, "left": 0}
        self.store.drop_other(identity)
        total, done, last = self.store.count_missing(identity), 0, -1
        while batch := self.store.missing(identity, FILL_CHUNKS, after=last):  # never the same chunks twice
            if stop():
                return {"documents": 0, "chunks": done, "left": total - done}
            self.store.put(identity, embed_windows(embedder.embed, {cid: windows_of(t) for cid, t in batch}).items())
            last = batch[-1][0]
            done += len(batch)
            progress(min(1.0, done / max(1, total)), f"sentence windows of {done}/{total} chunks")
        return {"documents": 0, "chunks": done, "left": 0}
