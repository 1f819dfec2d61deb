"""Refresh jobs: what was computed from the library or the weights, computed again in idle time.

A refresher says what it keeps up to date (``stale_documents``: the identity of what computes it
now, and what lacks it) and fills it (``refresh``). When the worker has nothing else to do, one
``refresh`` job per refresher that lacks something fills it: in the background, with progress,
ending between documents as soon as other work arrives (the next idle moment queues it again).
Two refreshers exist:

- **the hidden-state tier** (``reads_weights``). It stores each chunk's hidden states with the
  fingerprint of the weights that computed them, and leaves states of other weights out of
  answers. When ttt or cls learns a document the weights change, and every earlier document's
  states go stale. Sleep fills them too, but sleep waits for the person to be away and for
  enough to sleep on.
- **the sentence windows of the hybrid search's re-rank** (``app.ingest.sentence_windows``):
  embedded after ingestion, so a search never waits for them.

A refresh is not the person's activity (``store.activity`` leaves it out of idle time), and it
is queued at most once for the same identity (weights, embedding model), so what a fill cannot
make current never makes it run again and again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from engines.base import Progress
from store import activity
from store.activity import jobs_waiting_besides
from store.database import Database
from store.jobs import REFRESH, Job, JobQueue

log = logging.getLogger(__name__)


class Refresher(Protocol):
    """What the idle worker keeps up to date (an engine that ``reads_weights`` is one)."""

    name: str

    def stale_documents(self) -> tuple[str, list[int]]: ...

    def refresh(self, progress: Progress, stop: Callable[[], bool]) -> dict[str, int]: ...


class StateRefresh:
    """Queues (``check``, when the worker is idle) and runs (the ``refresh`` job) the fill of
    what each refresher lacks."""

    def __init__(self, db: Database, queue: JobQueue, refreshers: Callable[[], list[Refresher]],
                 stopping: Callable[[], bool], sleep_due: Callable[[], bool] = lambda: False) -> None:
        self.db = db
        self.queue = queue
        self.refreshers = refreshers
        self.stopping = stopping
        self.sleep_due = sleep_due  # sleep goes first: it is queued once the refresh gave way
        self._queued_for: dict[str, str] = {}  # refresher -> what computed it when a refresh was last queued

    def check(self) -> bool:
        """Queue a refresh where a refresher lacks something it was not refreshed for yet with
        what computes it now; returns whether it did."""
        if jobs_waiting_besides(self.db, ()):
            return False
        stale = {}
        for refresher in self.refreshers():
            weights, documents = refresher.stale_documents()
            if documents and self._queued_for.get(refresher.name) != weights:
                stale[refresher.name] = (weights, documents)
        if not stale:
            return False
        self.queue.enqueue_many(REFRESH, [(name, {"documents": len(docs)}) for name, (_, docs) in stale.items()])
        self._queued_for.update({name: weights for name, (weights, _) in stale.items()})
        log.info("refreshing %s", ", ".join(f"{name} ({len(docs)} waiting)" for name, (_, docs) in stale.items()))
        return True

    def __call__(self, job: Job, progress: Progress) -> None:
        """Run the refresh ``job.key`` names until it is done or gives way."""
        refresher = next((r for r in self.refreshers() if r.name == job.key), None)
        if refresher is None:
            progress(1.0, f"skipped: {job.key} is not on")
            return
        done = refresher.refresh(progress, self._stop())
        if done.get("left"):
            self._queued_for.pop(refresher.name, None)  # cut short by other work: queued again when idle
        log.info("%s refreshed %s document(s) (%s chunks), %s left", refresher.name, done.get("documents", 0),
                 done.get("chunks", 0), done.get("left", 0))

    def _stop(self) -> Callable[[], bool]:
        """A refresh gives way to the app stopping, to any other job, to the person (a question, a
        key or a click since it began: answers would wait for its forward passes) and to sleep."""
        started = activity.now(self.db)

        def stop() -> bool:
            if self.stopping() or jobs_waiting_besides(self.db, (REFRESH,)):
                return True
            last = activity.last_active(self.db)
            return (last is not None and last >= started) or self.sleep_due()
        return stop
