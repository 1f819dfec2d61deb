"""The ingest pipeline: find changed files, then parse -> chunk -> embed -> store -> index.

Scanning is cheap (stat only; unchanged size and mtime means no work at all). Processing takes a
batch of file jobs, embeds all their chunks in one batched call (the embedding model is the
bottleneck, and it is fastest on full batches), then commits each document in its own
transaction and updates the vector index. One unreadable file becomes an error row for that file
and never stops the others.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from app.ingest.chunking import chunk_document
from app.ingest.embeddings import Embedder
from app.ingest.file_rules import BAD_NAME_ERROR, display_name, is_document, is_ignored_name, storable
from app.ingest.parsers import ParseError, parse_file, too_large_error
from app.settings import Settings
from store.documents import DocumentStore, NewChunk
from store.folders import FolderStore
from store.ignored_files import IgnoredFiles
from store.jobs import INGEST, LEARN, Job, JobQueue
from store.vector_index import VectorIndex

log = logging.getLogger(__name__)

HASH_BLOCK = 1 << 20

Outcome = Literal["indexed", "unchanged", "error", "removed"]


class FileResult(BaseModel):
    path: str
    outcome: Outcome
    chunks: int = 0
    error: str | None = None


class ScanReport(BaseModel):
    root: str
    files: int
    queued: int
    removed: int
    batch_id: int | None
    errors: int = 0  # files the scan itself could not take (names that cannot be stored)


class _Prepared(BaseModel):
    path: str
    folder_id: int | None
    content_hash: str
    size: int
    mtime: float
    chunks: list[NewChunk]


def walk_documents(root: Path) -> Iterator[Path]:
    """Document files below ``root``, iteratively (no recursion limit), never following folder
    symlinks (so a symlink loop cannot trap the walk), skipping hidden and temporary names."""
    if root.is_file():
        if is_document(root):
            yield root
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if is_ignored_name(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
            except OSError:
                continue
            path = Path(entry.path)
            if is_document(path):
                yield path


def file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class Ingestor:
    """Turns file jobs into stored, searchable chunks."""

    def __init__(
        self,
        settings: Settings,
        docs: DocumentStore,
        folders: FolderStore,
        queue: JobQueue,
        index: VectorIndex,
        embedder: Callable[[], Embedder],
        learners: list[str] | None = None,
        ignored: IgnoredFiles | None = None,
        forgotten: Callable[[list[int]], None] | None = None,
    ) -> None:
        """``learners``: engines that learn each new or changed document after it is indexed;
        ``ignored``: files the person asked to forget, skipped until they are re-learned;
        ``forgotten``: told the ids of documents that left the store (deleted, moved out of a
        watched folder, forgotten), so that the engines drop what they keep of them."""
        self.settings = settings
        self.docs = docs
        self.folders = folders
        self.queue = queue
        self.index = index
        self._embedder = embedder
        self.learners = learners or []
        self.ignored = ignored
        self.forgotten = forgotten

    @property
    def embedder(self) -> Embedder:
        return self._embedder()

    # --- scanning ----------------------------------------------------------------------------
    def scan(self, root: Path, label: str | None = None) -> ScanReport:
        """Queue new and changed files below ``root``; forget files that are gone."""
        root = Path(os.path.abspath(root))
        known = self.docs.file_states(str(root)) if root.is_dir() else {}
        if root.is_file() and (state := self.docs.get(str(root))):
            known = {str(root): state}
        changed: list[str] = []
        seen: set[str] = set()
        errors = 0
        skip = self.ignored.under(str(root)) if self.ignored else set()
        for path in walk_documents(root):
            key = str(path)
            if not storable(key):
                seen.add(self._bad_name(key))
                errors += 1
                continue
            if key in skip:
                continue
            seen.add(key)
            state = known.get(key)
            try:
                st = path.stat()
            except OSError:
                changed.append(key)  # the job records why it cannot be read
                continue
            if state and state.status != "pending" and state.size == st.st_size and state.mtime == st.st_mtime:
                continue
            changed.append(key)
        removed = self.forget([p for p in known if p not in seen])
        batch_id = None
        if changed:
            batch_id = self.queue.new_batch(label or f"scan {root}")
            self.queue.enqueue_many(INGEST, [(p, {}) for p in changed], batch_id)
        return ScanReport(root=str(root), files=len(seen), queued=len(changed), removed=removed,
                          batch_id=batch_id, errors=errors)

    def _bad_name(self, key: str) -> str:
        """Record a file whose name cannot be stored, under a readable stand-in; returns it."""
        shown = display_name(key)
        state = self.docs.get(shown)
        if state is None or state.error != BAD_NAME_ERROR:
            owner = self.folders.owner(shown)
            self.docs.record_error(shown, owner.id if owner else None, BAD_NAME_ERROR)
            log.warning("cannot learn %s: %s", shown, BAD_NAME_ERROR)
        return shown

    def enqueue_paths(self, paths: list[Path], label: str) -> int | None:
        """Queue specific paths (from the watcher): files, folders, or paths that vanished."""
        keys = []
        for p in paths:
            key = str(Path(os.path.abspath(p)))
            if storable(key):
                keys.append(key)
            elif os.path.lexists(key):
                self._bad_name(key)
            else:
                self.forget([display_name(key)])
        if not keys:
            return None
        batch_id = self.queue.new_batch(label)
        self.queue.enqueue_many(INGEST, [(k, {}) for k in keys], batch_id)
        return batch_id

    def forget(self, paths: list[str]) -> int:
        """Remove documents (and their vectors) from the store; returns how many were known."""
        if not paths:
            return 0
        rows = [row for row in map(self.docs.get, paths) if row is not None]
        removed_ids = self.docs.remove_many([row.path for row in rows])
        self.index.remove(np.asarray(removed_ids, dtype=np.int64))
        if rows and self.forgotten is not None:
            self.forgotten([row.id for row in rows])
        return len(rows)

    # --- processing --------------------------------------------------------------------------
    def process(self, jobs: list[Job]) -> list[FileResult]:
        """Run a batch of ingest jobs; marks each job done once its document is committed."""
        results: list[FileResult] = []
        prepared: list[tuple[Job, _Prepared]] = []
        for job in jobs:
            outcome = self._prepare_safely(job)
            if isinstance(outcome, FileResult):
                results.append(outcome)
                self.queue.finish([job.id])
            else:
                prepared.append((job, outcome))
        if prepared:
            results += self._embed_and_store(prepared)
        return results

    def _prepare_safely(self, job: Job) -> _Prepared | FileResult:
        path = job.key or ""
        try:
            return self._prepare(Path(path))
        except Exception as exc:  # a parser bug must cost one file, not the batch
            log.exception("unexpected error reading %s", path)
            return self._error(path, f"unexpected error: {type(exc).__name__}: {exc}")

    def _prepare(self, path: Path) -> _Prepared | FileResult:
        key = str(path)
        if path.is_dir():
            self.scan(path, label=f"folder {path}")
            return FileResult(path=key, outcome="unchanged")
        try:
            st = path.stat()
        except FileNotFoundError:
            removed = self.forget(self.docs.paths_under(key))
            return FileResult(path=key, outcome="removed" if removed else "unchanged")
        except OSError as exc:
            return self._error(key, f"cannot read: {exc.strerror or exc}")
        if not is_document(path) or (self.ignored and self.ignored.contains(key)):
            return FileResult(path=key, outcome="unchanged")  # skipped by rule, like the scanner does
        if not stat.S_ISREG(st.st_mode):
            return self._error(key, "not a regular file")
        if st.st_size > self.settings.max_file_bytes:
            return self._error(key, str(too_large_error(st.st_size, self.settings.max_file_bytes)), st=st)
        try:
            digest = file_hash(path)
        except OSError as exc:
            return self._error(key, f"cannot read: {exc.strerror or exc}", st=st)
        existing = self.docs.get(key)
        if existing and existing.content_hash == digest and existing.status in ("indexed", "error"):
            self.docs.touch(key, st.st_size, st.st_mtime)
            return FileResult(path=key, outcome="unchanged", chunks=existing.chunk_count,
                              error=existing.error)
        try:
            parsed = parse_file(path, self.settings.max_file_bytes)
        except ParseError as exc:
            return self._error(key, str(exc), digest, st)
        chunks = chunk_document(parsed, self.embedder.count_tokens, self.settings.chunk_tokens,
                                self.settings.chunk_overlap_tokens)
        if not chunks:
            return self._error(key, "no text found", digest, st)
        owner = self.folders.owner(key)
        return _Prepared(path=key, folder_id=owner.id if owner else None, content_hash=digest,
                         size=st.st_size, mtime=st.st_mtime, chunks=chunks)

    def _queue_learning(self, document_id: int, path: str, content_hash: str) -> None:
        if self.learners:
            self.queue.enqueue_many(LEARN, [
                (f"{name}:{path}", {"engine": name, "document_id": document_id, "hash": content_hash})
                for name in self.learners
            ])

    def _error(self, path: str, message: str, digest: str | None = None,
               st: os.stat_result | None = None) -> FileResult:
        owner = self.folders.owner(path)
        removed = self.docs.record_error(
            path, owner.id if owner else None, message, digest,
            st.st_size if st else None, st.st_mtime if st else None,
        )
        self.index.remove(np.asarray(removed, dtype=np.int64))
        log.info("could not ingest %s: %s", path, message)
        return FileResult(path=path, outcome="error", error=message)

    def _embed_and_store(self, prepared: list[tuple[Job, _Prepared]]) -> list[FileResult]:
        texts = [c.text for _, p in prepared for c in p.chunks]
        vectors = self.embedder.embed(texts)
        results = []
        offset = 0
        for job, doc in prepared:
            n = len(doc.chunks)
            doc_vectors = vectors[offset:offset + n]
            offset += n
            # The document, its learn jobs and its ingest job's completion commit together.
            with self.docs.db.transaction():
                doc_id, removed, added = self.docs.replace(
                    doc.path, doc.folder_id, doc.content_hash, doc.size, doc.mtime,
                    doc.chunks, doc_vectors,
                )
                self._queue_learning(doc_id, doc.path, doc.content_hash)
                self.queue.finish([job.id])
            self.index.remove(np.asarray(removed, dtype=np.int64))
            self.index.add(np.asarray(added, dtype=np.int64), doc_vectors)
            results.append(FileResult(path=doc.path, outcome="indexed", chunks=n))
        return results
