"""Sleep: every enabled engine's offline work (consolidation), run while the person is away.

Sleep is due when something was learned since the last whole sleep (sleep pressure: documents,
feedback events, or facts stated in chat, ``sleep.after_documents``) and nothing has happened for ``sleep.idle_minutes``:
no question asked, no other work queued or running. The worker's idle hook then queues one
durable ``sleep`` job, which runs like any other job. It gives way as soon as new work is queued
or the app stops, and an idle sleep also when a question is asked: each engine keeps the steps
it took. A sleep cut short leaves the pressure as it was, so the next idle spell sleeps again;
a sleep is queued at most once per idle spell, so one that fails is not retried in a loop.

An engine that measures its own sleep pressure (``sleeps_by_pressure``: CLS, from its experts'
saturation, the novelty of what arrived and the forgetting its probes measured) replaces the
document count: while one is enabled, idle sleep waits until an engine's latest recorded pressure
reaches its ``sleep_pressure`` threshold, unless another enabled engine learns documents without
pressure, which keeps the document count as before.

Before the engines, with or without any weight-writing engine, sleep consolidates memory
(``app/memory``): the turns are embedded for recall, and the facts the person stated or
corrected in chat become retrievable knowledge; its report goes among the engines' as "memory".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Literal

from pydantic import BaseModel

from app.services.checkpoints import CheckpointService
from app.settings import SleepConfig
from engines.base import Budget, ConsolidateReport, Engine, Progress
from store import activity
from store.activity import SleepEpisode
from store.database import Database
from store.sleep_pressure import PressureReading, SleepPressureLog
from store.jobs import SLEEP, Job, JobQueue

log = logging.getLogger(__name__)

Reason = Literal["idle", "manual"]


Memory = Callable[[], ConsolidateReport]
"""Consolidates memory in sleep (``app/memory/consolidation.py``) and reports as an engine would."""

Before = Callable[[Engine, Progress], None]
"""Called by a weight-writing engine's sleep once it holds its state, before it changes it."""


def sleep_engines(engines: list[Engine], seconds: float, progress: Progress,
                  stop: Callable[[], bool] | None = None, before: Before | None = None) -> list[ConsolidateReport]:
    """Each engine's ``consolidate`` in turn, ``seconds`` each, until ``stop()`` says so; an
    engine that reads the weights (``reads_weights``) after those that change them."""
    engines = sorted(engines, key=lambda e: e.reads_weights)
    reports = []
    for n, engine in enumerate(engines):
        if stop is not None and stop():
            break

        def shown(fraction: float, message: str, n: int = n, name: str = engine.name) -> None:
            progress((n + fraction) / len(engines), f"{name}: {message}")

        begin = None if before is None or not engine.writes_weights else partial(before, engine, shown)
        reports.append(engine.consolidate(Budget(seconds=seconds, stop=stop, begin=begin), shown))
    return reports


def interrupted(reports: list[ConsolidateReport], engines: int) -> bool:
    """Whether a sleep was cut short: an engine did not get its turn, or stopped when asked."""
    return len(reports) < engines or any(r.details.get("interrupted") for r in reports)


def run_sleep(db: Database, engines: list[Engine], seconds: float, reason: Reason, progress: Progress,
              stop: Callable[[], bool] | None = None,
              checkpoints: CheckpointService | None = None,
              memory: Memory | None = None) -> list[ConsolidateReport]:
    """One sleep, recorded as an episode (whether cut short, memory's and each engine's report,
    and the checkpoints of the learned state before it when ``checkpoints`` is given: checkpoints
    first, so that a sleep can be undone; a sleep whose checkpoint cannot be saved does not begin)."""
    saved: list[str] = []

    def save(engine: Engine, shown: Progress) -> None:
        assert checkpoints is not None
        shown(0.0, "saving the learned state before sleep")
        saved.append(checkpoints.save_before_sleep(engine))

    first = consolidate_memory(memory, progress) if memory is not None and not (stop and stop()) else []
    reports = sleep_engines(engines, seconds, progress, stop, save if checkpoints is not None else None)
    cut = interrupted(reports, len(engines))
    reports = first + reports
    activity.record_sleep(db, reason, cut, [r.model_dump() for r in reports], saved)
    log.info("%s sleep %s: %s", reason, "cut short" if cut else "done",
             ", ".join(f"{r.engine} {'changed' if r.changed else 'unchanged'}" for r in reports))
    return reports


class PressurePolicy(BaseModel):
    """Which enabled engines decide sleep by their own pressure (name: threshold), and whether
    another enabled engine learns documents without one (it keeps the document count)."""

    thresholds: dict[str, float] = {}
    others_learn: bool = False


class PressureNow(BaseModel):
    """An engine's latest recorded pressure beside its threshold (None: nothing recorded yet)."""

    engine: str
    threshold: float
    reading: PressureReading | None = None

    @property
    def high(self) -> bool:
        return self.reading is not None and self.reading.total >= self.threshold


def consolidate_memory(memory: Memory, progress: Progress) -> list[ConsolidateReport]:
    """Memory's consolidation; a failure is reported and logged, and the engines sleep anyway."""
    progress(0.0, "memory: consolidating what was said in chat")
    try:
        return [memory()]
    except Exception as exc:  # noqa: BLE001 - the engines' sleep must not depend on it
        log.exception("memory consolidation failed")
        return [ConsolidateReport(engine="memory", seconds=0.0, changed=False, details={"error": str(exc)})]


class SleepJobs:
    """The worker's handler for ``sleep`` jobs."""

    def __init__(self, db: Database, engines: Callable[[], list[Engine]], stopping: Callable[[], bool],
                 checkpoints: CheckpointService | None = None, memory: Memory | None = None) -> None:
        self.db = db
        self.memory = memory
        self.engines = engines
        self.stopping = stopping
        self.checkpoints = checkpoints  # None: no checkpoint before a sleep (sleep.checkpoint off)

    def __call__(self, job: Job, progress: Progress) -> None:
        reason: Reason = "manual" if job.payload.get("reason") == "manual" else "idle"
        seconds = float(job.payload.get("seconds", SleepConfig().seconds))
        run_sleep(self.db, self.engines(), seconds, reason, progress, self._stop(reason), self.checkpoints,
                  self.memory)

    def _stop(self, reason: Reason) -> Callable[[], bool]:
        """New work or the app stopping ends any sleep; a question ends an idle one (a sleep asked
        for by hand goes on while the person chats: answers come between its steps)."""
        started = activity.now(self.db)

        def stop() -> bool:
            if self.stopping() or activity.work_waiting(self.db):
                return True
            if reason == "manual":
                return False
            last = activity.last_active(self.db)
            return last is not None and last >= started
        return stop


class SleepStatus(BaseModel):
    """What the app shows about sleep."""

    config: SleepConfig
    learned_since: int  # documents and feedback events since the last whole sleep
    queued: bool  # a sleep is waiting or running
    last: SleepEpisode | None
    learned_after_last: int = 0  # documents and feedback events since the last sleep, whole or not
    failed: str | None = None  # why the latest sleep failed, when no sleep was recorded since
    pressures: list[PressureNow] = []  # engines that decide sleep by their own pressure
    facts_said: int = 0  # facts stated or corrected in chat since the last whole sleep

    def summary(self, when: Callable[[str], str]) -> str:
        """One plain sentence each: the last sleep (its time written by ``when``), the pressure,
        and when the next one comes."""
        cfg, last = self.config, self.last
        if self.queued:
            now = "A sleep is queued or running."
        elif last is None:
            now = "Engram has not slept yet."
        else:
            how = ("cut short by new work or the person being back" if last.interrupted
                   else "done" if last.changed else "done, nothing changed")
            now = f"Last sleep: {when(last.ts)} ({'by hand' if last.reason == 'manual' else 'while idle'}, {how})."
            if last.changed and last.checkpoints:
                now += (f" To undo it, load checkpoint {' and '.join(last.checkpoints)}"
                        + (" (that also drops what was learned after it)" if self.learned_after_last else "") + ".")
        if self.failed and not self.queued:
            now += f" The latest sleep failed: {self.failed}"
        what = ("something new was learned" if cfg.after_documents == 1
                else f"{cfg.after_documents} documents or feedback events were learned")
        if self.pressures:
            what = "the sleep pressure reaches its threshold"
            now += " " + " ".join(
                f"Sleep pressure of {p.engine}: "
                + (f"{p.reading.total:.2f}" if p.reading else "none yet") + f" (threshold {p.threshold:g})."
                for p in self.pressures)
        plan = (f"Sleeps by itself after {cfg.idle_minutes:g} idle minutes once {what}." if cfg.auto
                else "Sleeping by itself is off (sleep.auto).")
        said = f" {self.facts_said} fact(s) said in chat wait to be kept." if self.facts_said else ""
        return f"{now} {self.learned_since} learned since the last whole sleep.{said} {plan}"


class SleepScheduler:
    """Decides, when the worker has nothing to do, whether to queue a sleep."""

    def __init__(self, config: SleepConfig, db: Database, queue: JobQueue,
                 policy: Callable[[], PressurePolicy] = PressurePolicy,
                 facts_said: Callable[[], int] | None = None) -> None:
        self.config = config
        self.db = db
        self.queue = queue
        self.policy = policy
        self.pressure_log = SleepPressureLog(db)
        self.facts_said = facts_said  # facts stated in chat since the last whole sleep: pressure too
        self.awake_since = activity.now(db)  # opening the app counts as the person being here

    def due(self) -> bool:
        cfg, db = self.config, self.db
        if not cfg.auto or activity.sleep_queued(db) or activity.work_waiting(db):
            return False
        idle = activity.idle_seconds(db)  # None: nothing ever happened
        awake = (activity.now(db) - self.awake_since) * 86400.0
        idle = awake if idle is None else min(idle, awake)
        if idle < cfg.idle_minutes * 60:
            return False
        tried = activity.seconds_since_sleep_queued(db)
        if tried is not None and tried < idle + 1.0:  # tried in this idle spell (jobs keep whole seconds)
            return False
        return self.pressed()

    def pressed(self) -> bool:
        """Whether there is enough to sleep on: an engine's pressure at its threshold, or enough
        learned (documents and feedback counted where no engine with pressure is enabled, or
        another learns without one; facts said in chat always, since memory has no pressure)."""
        policy = self.policy()
        pressures = self.pressures(policy)
        if any(p.high for p in pressures):
            return True
        # No engine with pressure, another learning without one, or one that has recorded none yet
        # (a data folder from before pressures existed): what was learned is counted as before.
        counted = not policy.thresholds or policy.others_learn or any(p.reading is None for p in pressures)
        learned = activity.learned_since_sleep(self.db) if counted else 0
        return learned + self._facts_said() >= self.config.after_documents

    def pressures(self, policy: PressurePolicy | None = None) -> list[PressureNow]:
        policy = policy or self.policy()
        return [PressureNow(engine=name, threshold=threshold, reading=self.pressure_log.latest(name))
                for name, threshold in policy.thresholds.items()]

    def _facts_said(self) -> int:
        return self.facts_said() if self.facts_said is not None else 0

    def check(self) -> bool:
        """Queue a sleep if one is due; returns whether it did."""
        if not self.due():
            return False
        self.queue_sleep("idle")
        log.info("idle for %.0f minutes, enough to sleep on: going to sleep", self.config.idle_minutes)
        return True

    def status(self) -> SleepStatus:
        last = activity.last_sleep(self.db)
        return SleepStatus(config=self.config, learned_since=activity.learned_since_sleep(self.db),
                           facts_said=self._facts_said(),
                           queued=activity.sleep_queued(self.db), last=last,
                           learned_after_last=activity.learned_after(self.db, last.id) if last else 0,
                           failed=activity.sleep_failure(self.db), pressures=self.pressures())

    def queue_sleep(self, reason: Reason) -> bool:
        """Queue a sleep unless one is waiting or running; returns whether it did."""
        if activity.sleep_queued(self.db):
            return False
        self.queue.enqueue(SLEEP, SLEEP, {"reason": reason, "seconds": self.config.seconds})
        return True
