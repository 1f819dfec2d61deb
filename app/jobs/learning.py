"""Learn jobs: hand each new or changed document to the engines that learn documents.

Ingestion queues one ``learn`` job per learning engine in the same transaction that stores the
document, so a crash never loses one. The job runs after the document is searchable; it reads the
document back from the store, skips it when the file changed or left meanwhile (a newer job
exists or nothing is left to learn), and records the engine's report as a ``learn`` episode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engines.base import DocumentInput, Engine, LearnReport
from store.database import Database
from store.documents import DocumentStore
from store.episodes import EpisodeStore
from store.jobs import Job

log = logging.getLogger(__name__)


def document_input(db: Database, document_id: int) -> tuple[DocumentInput, str | None] | None:
    """The stored document (chunks in order) and its content hash; None when it is gone."""
    docs = DocumentStore(db)
    row = docs.by_id(document_id)
    if row is None or row.status != "indexed":
        return None
    chunks = docs.chunk_texts(document_id)
    return DocumentInput(document_id=document_id, path=row.path, chunks=chunks), row.content_hash


class LearnJobs:
    """The worker's handler for ``learn`` jobs."""

    def __init__(self, db: Database, engine: Callable[[str], Engine]) -> None:
        self.db = db
        self.engine = engine

    def __call__(self, job: Job, progress: Callable[[float, str], None]) -> None:
        found = document_input(self.db, int(job.payload["document_id"]))
        if found is None or found[1] != job.payload.get("hash"):
            progress(1.0, "skipped: the document changed or left since")
            return
        document, _ = found
        name = job.payload["engine"]
        report = self.engine(name).learn(document, progress)
        self.record(report, document.document_id)

    def record(self, report: LearnReport, document_id: int) -> None:
        EpisodeStore(self.db).record_learned(document_id, report.model_dump())
        log.info("%s learned %s in %.1f s", report.engine, report.path, report.seconds)
