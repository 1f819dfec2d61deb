"""The one background worker: runs queued jobs, ingestion first, until stopped.

Ingest jobs are claimed in batches (embedding is fastest on full batches) and always go before
other work, so a new document is searchable as soon as possible; other job kinds (learning a
document into an engine, reflecting on feedback, sleep) run one at a time through the handler
registered for their kind, reporting progress into the job row.

When there is nothing to do, the ``on_idle`` hook may queue work: that is how sleep starts.

Pausing is a persistent flag in the store, so a paused worker stays paused across restarts and
any process (CLI or UI) can pause or resume it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from store.jobs import INGEST, Job, JobQueue
from store.state import StateStore

if TYPE_CHECKING:
    from app.ingest.pipeline import FileResult, Ingestor

log = logging.getLogger(__name__)

PAUSED_KEY = "ingest_paused"

ReportProgress = Callable[[float, str], None]
JobHandler = Callable[[Job, ReportProgress], None]
"""Runs one job; raising marks the job failed with the error as its message."""


def is_paused(state: StateStore) -> bool:
    """Whether ingestion is paused: read from the store, so no worker need be built to know."""
    return bool(state.get(PAUSED_KEY, False))


def set_paused(state: StateStore, paused: bool) -> None:
    state.set(PAUSED_KEY, paused)


class Worker:
    def __init__(
        self,
        ingestor: Ingestor,
        queue: JobQueue,
        state: StateStore,
        save_index: Callable[[], None],
        batch_files: int = 32,
        save_interval_s: float = 5.0,
        poll_s: float = 0.5,
        on_result: Callable[[FileResult], None] | None = None,
        idle_check_s: float = 30.0,
    ) -> None:
        self.ingestor = ingestor
        self.queue = queue
        self.state = state
        self.save_index = save_index
        self.batch_files = batch_files
        self.save_interval_s = save_interval_s
        self.poll_s = poll_s
        self.on_result = on_result
        self.idle_check_s = idle_check_s
        self.on_idle: Callable[[], bool] | None = None
        """Asked when there is nothing to do (at most every ``idle_check_s``); True: it queued work."""
        self.after_ingest: Callable[[], None] | None = None
        """Called after each batch of ingest jobs (errors only log): work that needs the embedder
        loaded, such as exporting the query copy of its model."""
        self._last_idle_check = 0.0
        self.handlers: dict[str, JobHandler] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_save = time.monotonic()
        self.busy = False
        self._job = threading.RLock()  # held while a batch or a job runs, and by ``held``
        self._holding = threading.Event()

    def register(self, kind: str, handler: JobHandler) -> None:
        """Run jobs of ``kind`` with ``handler`` (ingest jobs are built in)."""
        if kind == INGEST:
            raise ValueError("ingest jobs are handled by the ingestor")
        self.handlers[kind] = handler

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="engram-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        self.save_index()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Long handlers check this to end early (their job goes back to pending on restart)."""
        return self._stop.is_set()

    @property
    def holding(self) -> bool:
        """``held`` waits for the job running now: a sleep checks this to end early."""
        return self._holding.is_set()

    @contextmanager
    def held(self) -> Iterator[None]:
        """No job runs inside: waits for the batch or job running now to end (a sleep asked to stop
        by ``holding`` ends at its next step), and the worker takes the next only after (a bundle
        import applies meanwhile)."""
        self._holding.set()
        try:
            with self._job:
                self._holding.clear()
                yield
        finally:
            self._holding.clear()

    @property
    def paused(self) -> bool:
        return is_paused(self.state)

    def set_paused(self, paused: bool) -> None:
        set_paused(self.state, paused)
        self.wake()

    def run_once(self, kinds: list[str] | None = None) -> int:
        """Process one batch of ingest jobs, or else one other job; returns how many it took
        (0 when idle or paused). ``kinds`` limits which non-ingest kinds may run."""
        if self.paused:
            return 0
        with self._job:
            took = self._run_ingest()
            if took:
                return took
            allowed = [k for k in self.handlers if kinds is None or k in kinds]
            return self._run_other(allowed)

    def _run_ingest(self) -> int:
        jobs = self.queue.claim(INGEST, self.batch_files)
        if not jobs:
            return 0
        self.busy = True
        try:
            results = self.ingestor.process(jobs)
        except Exception as exc:  # e.g. the embedding model failed: the whole batch fails visibly
            log.exception("ingest batch failed")
            for job in jobs:
                self.queue.fail(job.id, f"{type(exc).__name__}: {exc}")
            results = []
        finally:
            self.busy = False
        for result in results:
            if self.on_result:
                self.on_result(result)
        self._maybe_save()
        if self.after_ingest is not None:
            try:
                self.after_ingest()
            except Exception:  # an optional speed-up must never fail ingestion
                log.exception("after-ingest step failed")
        return len(jobs)

    def _run_other(self, kinds: list[str]) -> int:
        jobs = self.queue.claim(kinds, 1)
        if not jobs:
            return 0
        job = jobs[0]
        self.busy = True
        try:
            self.handlers[job.kind](job, lambda f, m: self.queue.report(job.id, f, m))
        except Exception as exc:  # one failing job must not stop the worker
            log.exception("%s job %s failed", job.kind, job.key)
            self.queue.fail(job.id, f"{type(exc).__name__}: {exc}")
        else:
            self.queue.finish([job.id])
        finally:
            self.busy = False
        return 1

    def drain(self, kinds: list[str] | None = None) -> None:
        """Run until no ingest job (and no job of ``kinds``) is left: foreground use."""
        while not self._stop.is_set() and self.run_once(kinds=kinds or []):
            pass
        self.save_index()

    def _maybe_save(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_save >= self.save_interval_s:
            self.save_index()
            self._last_save = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                took = self.run_once()
            except Exception:  # never let the worker die silently (e.g. the disk is full)
                log.exception("worker loop error")
                took = 0
            if not took and not self._idle():
                self._maybe_save()
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def _idle(self) -> bool:
        """Nothing to do: let ``on_idle`` queue work (sleep); a failing check only logs."""
        now = time.monotonic()
        if self.on_idle is None or self.paused or now - self._last_idle_check < self.idle_check_s:
            return False
        self._last_idle_check = now
        try:
            return self.on_idle()
        except Exception:
            log.exception("idle check failed")
            return False
