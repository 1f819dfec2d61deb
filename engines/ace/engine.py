"""ACE, Agentic Context Engineering (Zhang et al. 2025): a playbook that improves from feedback.

The engine's knowledge is a playbook of short strategies. ``contribute`` selects the bullets
relevant to a question (the chat model, as Generator, answers with them; their ids are kept with
the answer). Learning runs the Reflector and Curator roles on the agent runtime (the chat model
unless settings name a bigger one) in three modes:

- online: after each feedback event, in the background job queue (``learn_feedback``);
- offline: epochs over question/answer pairs (``train``, ``engram ace train``);
- sleep: curation over the day's failed episodes not yet reflected on, then merging near-duplicate
  bullets (``consolidate``).

Documents are never learned from directly (``learn`` does nothing): a playbook changes only from
outcomes, and document text reaches the roles only as quoted data.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from engines.ace.config import AceConfig
from engines.ace.cycle import Cycle, CycleReport, Episode
from engines.ace.generator import Generator
from engines.ace.guard import ReplayCase, answer_score
from engines.ace.merge import duplicate_merges
from engines.ace.playbook import Delta, Playbook
from engines.ace.reflector import Outcome
from engines.ace.training import QAPair, TrainReport, train
from engines.ace.vectors import VectorCache
from engines.base import (
    Budget,
    ConsolidateReport,
    Contribution,
    DocumentInput,
    Engine,
    EngineContext,
    LearnReport,
    Progress,
    Query,
    no_progress,
)
from engines.feedback import (
    FeedbackInput,
    failed_episodes_since,
    feedback_meta,
    judged_answers,
    read_feedback,
)
from store.playbooks import PlaybookStore

SLEEP_WINDOW = timedelta(days=1)


def replay_case(feedback: FeedbackInput) -> ReplayCase:
    reference = feedback.correction or (feedback.answer if feedback.rating == "up" else None)
    rejected = feedback.answer if feedback.rating == "down" and not reference else None
    return ReplayCase(question=feedback.question, reference=reference, rejected=rejected)


class AceEngine(Engine):
    name = "ace"

    def __init__(self, context: EngineContext, config: AceConfig | None = None) -> None:
        self.context = context
        self.config = config or AceConfig()
        self.learns_feedback = self.config.online
        self.store = PlaybookStore(context.db)
        self.vectors = VectorCache(context.embed)
        self.generator = Generator(context, self.config, self.vectors)
        self.cycle = Cycle(self.store, self.generator, self.config, context.agent_runtime, self.vectors)
        self._lock = threading.Lock()  # one learning step at a time

    @property
    def playbook(self) -> Playbook:
        return self.store.load(self.config.playbook)

    # --- answering ---------------------------------------------------------------------------
    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        progress(1.0, "nothing to learn: playbooks learn from outcomes, not from document text")
        return LearnReport(engine=self.name, path=document.path, seconds=0.0, changed=False)

    def contribute(self, query: Query) -> Contribution:
        playbook = self.playbook
        chosen = self.generator.select(playbook, query.text)
        meta = {"playbook": playbook.name, "version": playbook.version,
                "bullet_ids": [b.id for b in chosen]}
        notes = [f"playbook {playbook.name} v{playbook.version}: {len(chosen)} of "
                 f"{len(playbook.bullets)} bullets"] if playbook.bullets else []
        return Contribution(engine=self.name, bullets=[b.content for b in chosen], meta=meta,
                            notes=notes)

    # --- online ------------------------------------------------------------------------------
    def episode(self, feedback: FeedbackInput) -> Episode:
        kept = feedback_meta(feedback.meta, self.name)
        used = kept.get("bullet_ids", []) if kept.get("playbook") == self.config.playbook else []
        return Episode(question=feedback.question, answer=feedback.answer,
                       outcome=Outcome(rating=feedback.rating, correction=feedback.correction),
                       used_ids=[int(i) for i in used], sources=feedback.sources,
                       episode_id=feedback.episode_id)

    def replay_cases(self, feedback: FeedbackInput) -> list[ReplayCase]:
        """This answer and the most recent answers whose right answer is known."""
        others = judged_answers(self.context.db, self.config.guard_cases - 1, feedback.message_id)
        return [replay_case(feedback), *(replay_case(f) for f in others)]

    def _learn(self, feedback: FeedbackInput, source: str) -> CycleReport:
        with self._lock:
            self.generator.forget_answers()
            return self.cycle.run(self.episode(feedback), self.replay_cases(feedback), source)  # type: ignore[arg-type]

    def learn_feedback(self, feedback: FeedbackInput, progress: Progress = no_progress) -> LearnReport:
        started = time.perf_counter()
        if not feedback.question:
            progress(1.0, "skipped: the question is gone")
            return LearnReport(engine=self.name, path=f"answer {feedback.message_id}", seconds=0.0,
                               changed=False)
        progress(0.05, "reflecting on the feedback")
        report = self._learn(feedback, "online")
        progress(1.0, report.summary()[:200])
        return LearnReport(engine=self.name, path=f"answer {feedback.message_id}",
                           seconds=round(time.perf_counter() - started, 3), changed=report.changed,
                           details=report.model_dump())

    # --- sleep -------------------------------------------------------------------------------
    def unreflected_failures(self, since: datetime) -> list[tuple[int, int]]:
        found = failed_episodes_since(self.context.db, since.strftime("%Y-%m-%dT%H:%M:%S"))
        done = self.store.episodes_with_deltas([episode for episode, _ in found])
        return [(e, m) for e, m in found if e not in done]

    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        started = time.perf_counter()
        deadline = started + budget.seconds
        failures = self.unreflected_failures(datetime.now(UTC) - SLEEP_WINDOW)
        if budget.steps is not None:
            failures = failures[: budget.steps]
        reports: list[CycleReport] = []
        stopped = False
        for n, (episode_id, message_id) in enumerate(failures):
            stopped = budget.interrupted()
            if time.perf_counter() >= deadline or stopped:
                break
            progress(n / (len(failures) + 1), f"reflecting on failed answer {n + 1}/{len(failures)}")
            feedback = read_feedback(self.context.db, message_id, episode_id)
            if feedback is not None and feedback.question:
                reports.append(self._learn(feedback, "sleep"))
        stopped = stopped or budget.interrupted()
        merged = self._merge_duplicates() if time.perf_counter() < deadline and not stopped else None
        progress(1.0, "done")
        details: dict[str, Any] = {"failures": len(failures), "reflected": len(reports),
                                   "summaries": [r.summary() for r in reports], "interrupted": stopped}
        if merged is not None:
            details["duplicates"] = merged
        changed = any(r.changed for r in reports) or bool(merged and merged.get("accepted"))
        return ConsolidateReport(engine=self.name, seconds=round(time.perf_counter() - started, 3),
                                 changed=changed, details=details)

    def _merge_duplicates(self) -> dict[str, Any] | None:
        operations = duplicate_merges(self.playbook, self.vectors, self.config.dedup_similarity)
        cases = [replay_case(f) for f in judged_answers(self.context.db, self.config.guard_cases)]
        if not operations or not cases:
            return None
        with self._lock:
            self.generator.forget_answers()
            outcome = self.cycle.attempt(Delta(operations=operations, source="sleep",
                                               note="merge near-duplicate bullets"),
                                         "curate", cases=cases)
        return outcome.model_dump()

    # --- offline -----------------------------------------------------------------------------
    def train(self, pairs: list[QAPair], epochs: int = 1, seed: int = 0,
              progress: Progress = no_progress) -> TrainReport:
        with self._lock:
            self.generator.forget_answers()
            return train(self.cycle, pairs, epochs, seed, progress)

    def accuracy(self, pairs: list[QAPair], playbook: Playbook | None = None) -> float:
        """Share of ``pairs`` answered right (greedy) with ``playbook`` (default: the live one)."""
        if not pairs:
            return 0.0
        playbook = playbook or self.playbook
        right = sum(answer_score(self.cycle.replay(playbook, p.question), p.answer) >= 1.0 for p in pairs)
        return right / len(pairs)

    # --- state -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        playbook = self.playbook
        counts = self.store.delta_counts(playbook.name)
        return {"playbook": playbook.name, "version": playbook.version,
                "bullets": len(playbook.bullets), "deltas_accepted": counts["accepted"],
                "deltas_rejected": counts["rejected"], "online": self.config.online}

    def state_dict(self) -> dict[str, Any]:
        return {"playbook": self.playbook.model_dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the saved bullets the live version (a new version: history is kept)."""
        saved = Playbook.model_validate(state["playbook"])
        current = self.playbook
        restored = Playbook(name=current.name, version=current.version + 1,
                            next_id=max(current.next_id, saved.next_id), bullets=saved.bullets)
        self.store.commit(restored, Delta(source="restore", note="load_state_dict").record(
            changes=[f"restored {len(saved.bullets)} bullets from saved state"]))
