"""Feedback jobs: hand each thumbs up/down or correction to the engines that learn from it.

Feedback is recorded at once; learning from it (ACE's Reflect and Curate, seconds to minutes on
a CPU) runs later in the worker, one durable job per engine and answer: a second rating of the
same answer before the job ran refreshes the pending job instead of queuing another. The job
reads the answer and its latest feedback back from the store when it runs, and records the
engine's report as a ``feedback_learn`` episode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from engines.base import Engine
from engines.feedback import latest_feedback_episode, read_feedback
from store.database import Database
from store.episodes import EpisodeStore
from store.jobs import FEEDBACK, Job, JobQueue

log = logging.getLogger(__name__)


def queue_feedback(queue: JobQueue, db: Database, engines: list[Engine], message_id: int) -> int:
    """Queue a feedback job for every engine that learns from feedback; returns how many."""
    learners = [e.name for e in engines if e.learns_feedback]
    episode = latest_feedback_episode(db, message_id)
    for name in learners:
        queue.enqueue(FEEDBACK, f"{name}:{message_id}",
                      {"engine": name, "message_id": message_id, "episode_id": episode})
    return len(learners)


class FeedbackJobs:
    """The worker's handler for ``feedback`` jobs."""

    def __init__(self, db: Database, engine: Callable[[str], Engine]) -> None:
        self.db = db
        self.engine = engine

    def __call__(self, job: Job, progress: Callable[[float, str], None]) -> None:
        message_id = int(job.payload["message_id"])
        feedback = read_feedback(self.db, message_id, job.payload.get("episode_id"))
        if feedback is None:
            progress(1.0, "skipped: the answer was deleted, or an API client wrote it")
            return
        report = self.engine(job.payload["engine"]).learn_feedback(feedback, progress)
        EpisodeStore(self.db).record_feedback_learned(message_id, report.model_dump())
        log.info("%s learned from feedback on answer %d in %.1f s", report.engine, message_id,
                 report.seconds)
