"""One Reflect-Curate step on an answered question, and how its deltas are kept or refused.

Given an episode (question, answer, the bullets it used, its sources, its outcome) and cases to
replay, a step:

1. reflects (Reflector role), unless the answer was right and used no bullet: nothing to learn
   (a role whose output does not parse or whose prompt does not fit is a rejected delta too);
2. commits the reflection's helpful/harmful tags as a delta of counters (observations: unguarded);
3. for a failed answer, curates (Curator role) and tries the proposed delta;
4. prunes bullets whose counters now prove them harmful, as another delta.

Trying a delta means merging it deterministically (``merge.py``; invalid or empty: rejected with
the reason), then replaying the cases with and without it (``guard.py``) and committing it only
when the answers are not worse. Every delta is logged in the store with its source episode and
figures, accepted or not; nothing is ever half-applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from engines.ace import guard
from engines.ace.config import AceConfig
from engines.ace.curator import Curator
from engines.ace.generator import Generator
from engines.ace.guard import GuardReport, ReplayCase
from engines.ace.merge import DeltaRejected, merge, prune_operations
from engines.ace.playbook import BulletTag, Delta, DeltaSource, Playbook
from engines.ace.reflector import Outcome, Reflection, Reflector
from engines.ace.rules import Evidence
from engines.generation import PromptTooLong, Runtime, StructuredOutputError
from store.playbooks import PlaybookConflict, PlaybookStore

log = logging.getLogger(__name__)

DeltaKind = Literal["tags", "curate", "prune", "edit"]


class Episode(BaseModel):
    """An answered question to learn from."""

    question: str
    answer: str
    outcome: Outcome
    used_ids: list[int] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    episode_id: int | None = None


class DeltaOutcome(BaseModel):
    kind: DeltaKind
    accepted: bool
    delta_id: int | None = None
    reason: str | None = None
    changes: list[str] = Field(default_factory=list)
    guard: GuardReport | None = None


class CycleReport(BaseModel):
    reflection: Reflection | None = None
    reflect_rounds: int = 0
    lesson_problem: str | None = None
    deltas: list[DeltaOutcome] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(d.accepted for d in self.deltas)

    def summary(self) -> str:
        if not self.deltas:
            return "nothing to learn"
        return "; ".join(f"{d.kind}: " + (", ".join(d.changes) if d.accepted else f"rejected ({d.reason})")
                         for d in self.deltas)


class Cycle:
    def __init__(self, store: PlaybookStore, generator: Generator, config: AceConfig,
                 agent: Callable[[], Runtime], vectors: Callable[[list[str]], np.ndarray]) -> None:
        self.store = store
        self.generator = generator
        self.config = config
        self.agent = agent
        self.vectors = vectors

    @property
    def name(self) -> str:
        return self.config.playbook

    def replay(self, playbook: Playbook, question: str) -> str:
        return self.generator.answer(playbook, question, self.config.guard_max_tokens).answer

    # --- one step ----------------------------------------------------------------------------
    def run(self, episode: Episode, cases: list[ReplayCase], source: DeltaSource) -> CycleReport:
        report = CycleReport()
        playbook = self.store.load(self.name)
        used = [b for b in (playbook.get(i) for i in episode.used_ids) if b is not None]
        failed = episode.outcome.succeeded is False
        if not failed and not used:
            return report
        started = time.perf_counter()
        reflector = Reflector(self.agent(), self.config.reflect_rounds, self.config.agent_temperature)
        try:
            result = reflector.reflect(episode.question, episode.answer, episode.outcome, used,
                                       episode.sources)
        except (StructuredOutputError, PromptTooLong) as exc:
            delta = Delta(source=source, episode_id=episode.episode_id)
            report.deltas.append(self.refuse(delta, "curate", f"the Reflector failed: {exc}"))
            return report
        report.seconds["reflect"] = round(time.perf_counter() - started, 3)
        report.reflection, report.reflect_rounds = result.reflection, result.rounds
        log.debug("reflection after %d round(s) in %.1f s: %s", result.rounds, result.seconds,
                  result.reflection.model_dump_json())
        report.lesson_problem = result.lesson_problem
        tags = [t for t in result.reflection.tags if t.tag != "neutral"]
        if tags:
            report.deltas.append(self.tag(tags, source, episode.episode_id))
        if failed:
            report.deltas.append(self.curate(episode, result.reflection, result.lesson_problem,
                                             cases, source, report))
        pruned = self.prune(cases, source, episode.episode_id)
        if pruned:
            report.deltas.append(pruned)
        report.seconds["total"] = round(time.perf_counter() - started, 3)
        return report

    def tag(self, tags: list[BulletTag], source: DeltaSource, episode_id: int | None) -> DeltaOutcome:
        return self.attempt(Delta(tags=tags, source=source, episode_id=episode_id), "tags")

    def curate(self, episode: Episode, reflection: Reflection, lesson_problem: str | None,
               cases: list[ReplayCase], source: DeltaSource, report: CycleReport) -> DeltaOutcome:
        figures = {"reflection": reflection.model_dump(), "rounds": report.reflect_rounds}
        if lesson_problem:
            delta = Delta(source=source, episode_id=episode.episode_id)
            reason = f"no usable lesson after {report.reflect_rounds} round(s): {lesson_problem}"
            return self.refuse(delta, "curate", reason, figures)
        started = time.perf_counter()
        curator = Curator(self.agent(), self.vectors, self.config.max_operations,
                          self.config.agent_temperature)
        try:
            proposal = curator.curate(self.store.load(self.name), reflection)
        except (StructuredOutputError, PromptTooLong) as exc:
            delta = Delta(source=source, episode_id=episode.episode_id)
            return self.refuse(delta, "curate", f"the Curator failed: {exc}", figures)
        report.seconds["curate"] = round(time.perf_counter() - started, 3)
        log.debug("curator proposed in %.1f s: %s", proposal.seconds,
                  [o.describe() for o in proposal.operations])
        delta = Delta(operations=proposal.operations, source=source, episode_id=episode.episode_id)
        if not proposal.operations:
            return self.refuse(delta, "curate", "the Curator proposed no change", figures)
        evidence = Evidence(question=episode.question, answer=episode.answer,
                            reference=episode.outcome.right_answer or "", sources=episode.sources)
        started = time.perf_counter()
        outcome = self.attempt(delta, "curate", cases=cases, evidence=evidence, figures=figures)
        report.seconds["guard"] = round(time.perf_counter() - started, 3)
        return outcome

    def prune(self, cases: list[ReplayCase], source: DeltaSource,
              episode_id: int | None) -> DeltaOutcome | None:
        operations = prune_operations(self.store.load(self.name), self.config.prune_margin)
        if not operations:
            return None
        delta = Delta(operations=operations, source=source, episode_id=episode_id,
                      note="prune: tagged harmful more often than helpful")
        return self.attempt(delta, "prune", cases=cases)

    # --- keeping or refusing a delta ---------------------------------------------------------
    def refuse(self, delta: Delta, kind: DeltaKind, reason: str, figures: dict | None = None,
               report: GuardReport | None = None) -> DeltaOutcome:
        version = self.store.load(self.name).version
        delta_id = self.store.reject(self.name, version, delta.record(reason=reason, figures=figures or {}))
        log.info("playbook %s: %s delta %d rejected: %s", self.name, kind, delta_id, reason)
        return DeltaOutcome(kind=kind, accepted=False, delta_id=delta_id, reason=reason, guard=report)

    def attempt(self, delta: Delta, kind: DeltaKind, cases: list[ReplayCase] | None = None,
                evidence: Evidence | None = None, figures: dict | None = None,
                similarity: bool = True) -> DeltaOutcome:
        """Merge ``delta``; with ``cases``, keep it only if replaying them is not worse."""
        figures = dict(figures or {})
        playbook = self.store.load(self.name)
        try:
            merged = merge(playbook, delta, self.vectors if similarity else None,
                           dedup_similarity=self.config.dedup_similarity,
                           max_bullets=self.config.max_bullets, evidence=evidence)
        except DeltaRejected as exc:
            return self.refuse(delta, kind, str(exc), figures)
        if merged.skipped:
            figures["skipped"] = merged.skipped
        checked = None
        if cases:
            checked = guard.check(cases, lambda q: self.replay(playbook, q),
                                  lambda q: self.replay(merged.playbook, q), self.config.guard_min_gain)
            figures["guard"] = checked.model_dump()
            if not checked.accepted:
                return self.refuse(delta, kind, checked.summary(), figures, checked)
        try:
            delta_id = self.store.commit(merged.playbook, delta.record(
                changes=merged.changes, figures=figures,
                reason=checked.summary() if checked else None))
        except PlaybookConflict as exc:
            return self.refuse(delta, kind, str(exc), figures, checked)
        log.info("playbook %s v%d: %s delta %d kept: %s%s", self.name, merged.playbook.version, kind,
                 delta_id, ", ".join(merged.changes), f" ({checked.summary()})" if checked else "")
        return DeltaOutcome(kind=kind, accepted=True, delta_id=delta_id, changes=merged.changes,
                            guard=checked)
