"""Sleep while idle: when it is due, the job that runs it, what stops it, what it records.

Real store, real worker thread; the engine is retrieval, whose consolidation is instant (the
ttt engine's sleep, stopped the same way, is tested on the real model in test_ttt_engine).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from app.services.checkpoints import CheckpointNotSaved, CheckpointService
from app.jobs.learning import LearnJobs
from app.jobs.sleep import SleepJobs, run_sleep
from engines.base import Budget, ConsolidateReport, Contribution, DocumentInput, Engine, LearnReport, Progress, Query
from store import activity
from store.blobs import BlobStore
from store.jobs import SLEEP
from tests.helpers import open_engram, wait_for


def learned(engram, n: int = 1) -> None:
    """Record ``n`` documents learned, as a finished learn job does."""
    for i in range(n):
        LearnJobs(engram.db, engram.engine).record(
            LearnReport(engine="ttt", path=f"d{i}.txt", seconds=1.0, changed=True), document_id=i + 1)


def asked(engram) -> None:
    engram.conversations.add_question(engram.conversations.create("c").id, "Who drew the map?")


def test_sleep_is_due_after_learning_once_the_person_is_away_and_only_once(embedder) -> None:
    engram = open_engram(embedder, **{"sleep.idle_minutes": 0})
    try:
        sleeper = engram.sleeper
        assert not sleeper.due()  # nothing learned, no pressure
        learned(engram, 2)
        assert activity.learned_since_sleep(engram.db) == 2 and sleeper.due()
        engram.queue.enqueue("ingest", "/x.txt", {"path": "/x.txt"})
        assert not sleeper.due()  # other work comes first
        engram.queue.cancel_pending()

        assert sleeper.check() and activity.sleep_queued(engram.db)
        assert not sleeper.check()  # one at a time
        assert engram.worker.run_once() == 1  # the worker runs it like any job
        last = activity.last_sleep(engram.db)
        assert last is not None and last.reason == "idle" and not last.interrupted
        assert [r["engine"] for r in last.reports] == ["memory", "rag"]  # memory consolidates first, with or without engines
        assert activity.learned_since_sleep(engram.db) == 0 and not sleeper.due()  # the pressure is spent

        learned(engram)
        time.sleep(1.1)  # jobs keep whole seconds: the spell before is told apart a second later
        asked(engram)  # the person was back: a new idle spell begins
        base = sleeper.config
        assert sleeper.due()
        for change in ({"after_documents": 2}, {"idle_minutes": 5}, {"auto": False}):
            sleeper.config = base.model_copy(update=change)
            assert not sleeper.due(), change  # below the pressure asked for, not idle long enough, off
        sleeper.config = base
        assert sleeper.queue_sleep("manual") and not sleeper.queue_sleep("manual")  # one at a time
    finally:
        engram.close()


def test_a_sleep_that_fails_is_not_retried_in_the_same_idle_spell(embedder) -> None:
    engram = open_engram(embedder, **{"sleep.idle_minutes": 0})
    try:
        learned(engram)

        def broken(job, progress) -> None:
            raise RuntimeError("disk full")

        engram.worker.register(SLEEP, broken)
        assert engram.sleeper.check() and engram.worker.run_once() == 1
        assert engram.queue.failures()[0]["error"] == "RuntimeError: disk full"
        assert activity.learned_since_sleep(engram.db) == 1  # still due in principle...
        assert not engram.sleeper.due()  # ...but not retried until the person was back and left again
    finally:
        engram.close()


def test_an_idle_sleep_gives_way_to_a_question_and_any_sleep_to_new_work(embedder) -> None:
    engram = open_engram(embedder)
    try:
        jobs = SleepJobs(engram.db, lambda: engram.engines, lambda: engram.worker.stopping)
        idle, manual = jobs._stop("idle"), jobs._stop("manual")
        assert not idle() and not manual()
        asked(engram)
        assert idle() and not manual()  # a sleep asked for by hand goes on while the person chats
        time.sleep(1.1)  # a new idle sleep, begun after that question (the store's clock keeps seconds here)
        idle = jobs._stop("idle")
        assert not idle()
        engram.person_present()  # a key or a click in the app
        assert idle() and activity.idle_seconds(engram.db) < 1.0
        engram.queue.enqueue("ingest", "/x.txt", {"path": "/x.txt"})
        assert manual()

        learned(engram)
        cut = SleepJobs(engram.db, lambda: engram.engines, lambda: True)  # the app is stopping
        engram.queue.enqueue(SLEEP, SLEEP, {"reason": "idle", "seconds": 5})
        job = engram.queue.claim(SLEEP)[0]
        cut(job, lambda f, m: None)
        last = activity.last_sleep(engram.db)
        assert last is not None and last.interrupted and last.reports == []  # no engine got its turn
        assert activity.learned_since_sleep(engram.db) == 1  # a sleep cut short leaves the pressure
    finally:
        engram.close()


def test_what_counts_as_learned_and_a_record_with_non_numbers(embedder) -> None:
    engram = open_engram(embedder, engines="rag,ace")
    try:
        learned(engram, 2)
        learned(engram, 1)  # document 1 again (say by a second engine): it counts once
        assert activity.learned_since_sleep(engram.db) == 2
        activity.record_sleep(engram.db, "idle", False, [{"engine": "ttt", "details": {"probe_after": float("nan")}}])
        assert activity.last_sleep(engram.db).reports[0]["details"]["probe_after"] is None
        assert activity.learned_since_sleep(engram.db) == 0  # still readable: the whole sleep counted

        ace = engram.engine("ace")
        assert ace.consolidate(Budget(seconds=5, stop=lambda: True)).details["interrupted"]
        assert not ace.consolidate(Budget(seconds=5)).details["interrupted"]
    finally:
        engram.close()


def test_the_running_worker_goes_to_sleep_by_itself_and_the_button_queues_one(embedder) -> None:
    engram = open_engram(embedder, **{"sleep.idle_minutes": 0})
    engram.worker.idle_check_s = 0.1
    try:
        learned(engram)
        engram.start(watch=False)
        episode = wait_for(lambda: activity.last_sleep(engram.db), timeout=30)
        assert episode.reason == "idle" and not episode.interrupted
        # the episode is recorded inside the job, which is marked done just after: wait for that,
        # then let several idle checks pass: the spent pressure must not queue another sleep
        wait_for(lambda: engram.queue.pending_count(SLEEP) == 0, timeout=10)
        time.sleep(10 * engram.worker.idle_check_s)
        assert engram.queue.pending_count(SLEEP) == 0

        engram.sleep_now()  # no pressure needed when asked for by hand
        wait_for(lambda: activity.last_sleep(engram.db).id > episode.id, timeout=30)
        assert activity.last_sleep(engram.db).reason == "manual"
        assert json.loads(engram.db.scalar("SELECT payload FROM episodes WHERE id = ?", (episode.id,)))["reports"]
    finally:
        engram.close()


class Ledger(Engine):
    """A weight-writing engine whose sleep adds one to its one weight: what checkpoints-first
    must save is plain to see (the ttt engine's is checked on the real model in test_ttt_engine)."""

    name = "ledger"
    writes_weights = True

    def __init__(self) -> None:
        self.weight = torch.ones(2)
        self.sleeps = 0

    def learn(self, document: DocumentInput, progress: Progress = lambda f, m: None) -> LearnReport:
        raise NotImplementedError

    def contribute(self, query: Query) -> Contribution:
        raise NotImplementedError

    def consolidate(self, budget: Budget, progress: Progress = lambda f, m: None) -> ConsolidateReport:
        budget.started()
        self.weight += 1
        self.sleeps += 1
        return ConsolidateReport(engine=self.name, seconds=0.0, changed=True)

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight.clone()}

    def load_state_dict(self, state: dict[str, Any], origin: str | None = None) -> None:
        self.weight = state["weight"].clone()

    def stats(self) -> dict[str, Any]:
        return {"documents": 1}


def test_checkpoints_first_the_state_before_a_sleep_is_saved_and_a_failed_save_stops_it(
        embedder, tmp_path: Path) -> None:
    engram = open_engram(embedder)
    ledger = Ledger()
    service = CheckpointService(BlobStore(engram.db, tmp_path), lambda: [ledger])
    quiet = lambda f, m: None  # noqa: E731
    try:
        run_sleep(engram.db, [ledger], 5, "manual", quiet, checkpoints=service)
        assert torch.equal(service.blobs.load_checkpoint("before-sleep-ledger")[1]["weight"], torch.ones(2))
        status = engram.sleeper.status()
        assert status.last.checkpoints == ["before-sleep-ledger"] and status.failed is None
        assert status.summary(str).count("To undo it, load checkpoint before-sleep-ledger.") == 1
        learned(engram)
        assert "(that also drops what was learned after it)" in engram.sleeper.status().summary(str)

        with pytest.raises(ValueError, match="kept for the learned state saved before each sleep"):
            service.save("before-sleep-ledger")  # a person's checkpoint would be replaced by the next sleep
        run_sleep(engram.db, [ledger], 5, "manual", quiet)  # sleep.checkpoint off: nothing saved
        assert activity.last_sleep(engram.db).checkpoints == []
        assert torch.equal(service.blobs.load_checkpoint("before-sleep-ledger")[1]["weight"], torch.ones(2))

        (tmp_path / "checkpoints").rename(tmp_path / "moved")
        (tmp_path / "checkpoints").write_text("a file where the folder should be")  # the save fails
        episodes = activity.last_sleep(engram.db).id
        with pytest.raises(CheckpointNotSaved, match="the sleep did not begin.*sleep.checkpoint false"):
            run_sleep(engram.db, [ledger], 5, "manual", quiet, checkpoints=service)
        assert ledger.sleeps == 2 and torch.equal(ledger.weight, torch.full((2,), 3.0))  # it did not begin
        assert activity.last_sleep(engram.db).id == episodes

        engram.worker.register(SLEEP, SleepJobs(engram.db, lambda: [ledger], lambda: False, service))
        assert engram.sleeper.queue_sleep("manual") and engram.worker.run_once() == 1
        assert "The latest sleep failed: CheckpointNotSaved: the sleep did not begin" in \
            engram.sleeper.status().summary(str)
        time.sleep(1.1)  # jobs keep whole seconds
        run_sleep(engram.db, [ledger], 5, "manual", quiet)
        assert engram.sleeper.status().failed is None  # a sleep recorded since: the failure is old news
    finally:
        engram.close()


def test_with_cls_enabled_idle_sleep_follows_its_pressure_not_the_document_count(embedder) -> None:
    from engines.cls.engine import ExpertInfo
    from store.cls_episodes import ClsEpisodeStore

    engram = open_engram(embedder, engines="rag,cls", **{"sleep.idle_minutes": 0, "cls.sleep_pressure": 0.5})
    try:
        sleeper, cls, events = engram.sleeper, engram.engine("cls"), ClsEpisodeStore(engram.db)
        learned(engram)
        assert activity.learned_since_sleep(engram.db) == 1
        # learned, no pressure recorded yet (a data folder from before pressures): the count decides
        assert sleeper.due()

        # the engine's real state: a new expert for a document nothing covered, one consolidated
        cls.experts = {0: ExpertInfo(), 1: ExpertInfo(consolidated=True)}
        events.log("grow", "the first expert", 0, {"document_id": 1, "novelty": 1.0, "gate_entropy": 0.0})
        reading = cls.record_pressure()
        assert (reading.saturation, reading.novelty, reading.forgetting) == (1 / 16, 1.0, 0.0)
        assert sleeper.due()  # 1.06 >= 0.5

        # a kept sleep consolidated it; its probe measured some forgetting: pressure is low again
        cls.experts[0].consolidated = True
        events.log("sleep", "kept", None, {"forgetting": 0.125, "drift": 0.001})
        reading = cls.record_pressure()
        assert (reading.saturation, reading.novelty, reading.forgetting) == (0.0, 0.0, 0.125)
        assert activity.learned_since_sleep(engram.db) == 1 and not sleeper.due()  # the count alone would sleep
        assert "Sleep pressure of cls: 0.12 (threshold 0.5)." in sleeper.status().summary(str)

        # a document close to an expert: some novelty, one unconsolidated expert; a lower threshold sleeps
        cls.experts[0].consolidated = False
        events.log("route", "novelty 0.30 <= 0.4: expert 0", 0, {"novelty": 0.3, "gate_entropy": 0.69})
        reading = cls.record_pressure()
        assert reading.total == pytest.approx(1 / 16 + 0.3 + 0.125) and not sleeper.due()
        engram.settings.cls.sleep_pressure = 0.45
        assert sleeper.due()
        assert [round(r.total, 4) for r in engram.sleeper.pressure_log.history("cls")] == [1.0625, 0.125, 0.4875]
    finally:
        engram.close()

    # another engine that learns documents without pressure keeps today's count
    engram = open_engram(embedder, engines="rag,cls,d2l", **{"sleep.idle_minutes": 0})
    try:
        assert engram.pressure_policy().model_dump() == {"thresholds": {"cls": 0.5}, "others_learn": True}
        learned(engram)
        assert engram.sleeper.due()
    finally:
        engram.close()
