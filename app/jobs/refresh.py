"""Refresh jobs: what an engine computed with the model's weights, computed again once they changed.

The hidden-state tier (``reads_weights``) stores each chunk's hidden states with the fingerprint
of the weights that computed them, and leaves states of other weights out of answers. When ttt
or cls learns a document, the weights change and every earlier document's states go stale. Sleep
fills them, but sleep waits for the person to be away and for enough to sleep on. So when the
worker has nothing else to do and the weights in this process differ from those the stale states
were computed with, one ``refresh`` job fills them now: in the background, with progress, ending
between documents as soon as other work arrives (the next idle moment queues it again).

A refresh is not the person's activity (``store.activity`` leaves it out of idle time), and it
is queued at most once for the same weights, so states that a fill cannot make current never
make it run again and again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engines.base import Engine, Progress
from store.activity import jobs_waiting_besides
from store.database import Database
from store.jobs import REFRESH, Job, JobQueue

log = logging.getLogger(__name__)


class StateRefresh:
    """Queues (``check``, when the worker is idle) and runs (the ``refresh`` job) the fill of
    stale states of every enabled engine that reads the weights."""

    def __init__(self, db: Database, queue: JobQueue, engines: Callable[[], list[Engine]],
                 weights_loaded: Callable[[], bool], stopping: Callable[[], bool]) -> None:
        self.db = db
        self.queue = queue
        self.engines = engines
        self.weights_loaded = weights_loaded  # nothing changed the weights in a process that never loaded them
        self.stopping = stopping
        self._queued_for: dict[str, str] = {}  # engine -> the weights a refresh was last queued for

    def readers(self) -> list[Engine]:
        return [e for e in self.engines() if e.reads_weights]

    def check(self) -> bool:
        """Queue a refresh where an engine has stale states of weights not refreshed for yet;
        returns whether it did."""
        if not self.weights_loaded() or jobs_waiting_besides(self.db, ()):
            return False
        stale = {}
        for engine in self.readers():
            weights, documents = engine.stale_documents()
            if documents and self._queued_for.get(engine.name) != weights:
                stale[engine.name] = (weights, documents)
        if not stale:
            return False
        self.queue.enqueue_many(REFRESH, [(name, {"documents": len(docs)}) for name, (_, docs) in stale.items()])
        self._queued_for.update({name: weights for name, (weights, _) in stale.items()})
        log.info("weights changed since stored states were computed: refreshing %s",
                 ", ".join(f"{name} ({len(docs)} documents)" for name, (_, docs) in stale.items()))
        return True

    def __call__(self, job: Job, progress: Progress) -> None:
        engine = next((e for e in self.readers() if e.name == job.key), None)
        if engine is None:
            progress(1.0, f"skipped: {job.key} is not enabled")
            return
        done = engine.refresh(progress, lambda: self.stopping() or jobs_waiting_besides(self.db, (REFRESH,)))
        if done.get("left"):
            self._queued_for.pop(engine.name, None)  # cut short by other work: queued again when idle
        log.info("%s refreshed %s document(s) (%s chunks), %s left", engine.name, done.get("documents", 0),
                 done.get("chunks", 0), done.get("left", 0))
