"""The CLS engine on the real embedded model: a document learned into one routed expert, a
question about nothing learned answered by the base model exactly, per-expert blobs loaded back
lazily, and a sleep rolled back (with its reason logged) when the probe bound is exceeded."""

from __future__ import annotations

import pytest
import torch

from app.bench.model_eval import render
from engines.base import Budget, DocumentInput, Query, routed
from app.jobs.learning import document_input
from engines.generation import ChatMessage
from engines.ttt import route_keys
from store.documents import DocumentStore
from store.cls_episodes import ClsEpisodeStore
from store.metrics_log import MetricsLog
from engines.cls.engine import matches
from tests.helpers import open_engram


def test_an_adapter_stands_in_for_an_expert_only_where_it_keeps_every_answer_the_expert_has() -> None:
    assert matches([True, False, True], [True, True, True])
    assert not matches([True, True], [True, False])  # as many right in all, but another one
    assert not matches([True, False], [False, True])
    assert not matches([False, False], [True, True])  # the expert gets none: nothing to check it by

DOC = ("Loudurk Zestaestox was born in 1946. Loudurk Zestaestox grew up in the town of Stikecaend. "
       "Loudurk Zestaestox works as a cartographer. Loudurk Zestaestox keeps a lynx named Thielor.\n")
ASKED = "What is the name of Loudurk Zestaestox's lynx?"
UNRELATED = "How many legs does a spider have?"
SMALL = {"cls.passes": 2, "cls.batch_tokens": 192, "cls.replay_tokens": 32, "cls.probe_tokens": 256,
         "cls.fisher_tokens": 128, "cls.sleep_episodes": 6, "cls.own_replay": 4}
SLEEPY = {**SMALL, "cls.passes": 1, "cls.rehearsal_source": "extract", "cls.drift_bound": 1.0,
          "cls.forgetting_bound": 1.0}  # fast material, and every sleep kept


def logits(cortex, question: str) -> torch.Tensor:
    prompt = render(cortex, [ChatMessage(role="user", content=question)])
    ids = cortex.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with cortex.lock, torch.no_grad(), routed(cortex, [question]):
        return cortex.model(**ids).logits[0, -1]


@pytest.mark.slow
def test_cls_learns_routes_saves_and_rolls_back(embedder, neocortex, tmp_path) -> None:
    base_unrelated = logits(neocortex, UNRELATED)
    base_asked = logits(neocortex, ASKED)
    engram = open_engram(embedder, engines="rag,cls", **SMALL)
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    (tmp_path / "lynx.txt").write_text(DOC)
    engram.ingest([tmp_path / "lynx.txt"])
    engram.run_pending()  # stored (the router keys are embedded again from it after a model switch)
    document = document_input(engram.db, next(iter(DocumentStore(engram.db).ids_by_path().values())))[0]
    try:
        assert engine.contribute(Query(text=ASKED)).learned_states == []  # nothing learned yet
        report = engine.learn(document)
        assert report.changed and report.details["event"] == "grow" and report.details["expert"] == 0
        assert report.details["loss_last_pass"] < report.details["loss_first_pass"]
        assert torch.equal(logits(neocortex, UNRELATED), base_unrelated)  # the base model, exactly
        assert not torch.equal(logits(neocortex, ASKED), base_asked)  # the expert answers
        asked = engine.contribute(Query(text=ASKED))
        assert asked.learned_states and asked.meta["routed_share"] > 0
        assert asked.system == engine.config.rehearsal_system  # chat asks under what the experts rehearsed
        unrelated = engine.contribute(Query(text=UNRELATED))  # the meta-controller leaves it inactive
        assert unrelated.meta == {"routed_share": 0.0, "router": "none"} and unrelated.learned_states == [engine.label]
        assert asked.meta["router"] == "keys" and asked.notes == [  # cls.router = keys (the default)
            f"answered with expert 0 at {asked.meta['routed_share']:.0%} (router: keys)"]
        assert engram.chat.answer(UNRELATED).message.meta["learned_states"] == []
        assert engine.blobs.get("cls/expert-0") is not None
        assert ClsEpisodeStore(engram.db).count() > 0
        own = engine.rehearsed(3)  # what the bench asks closed-book: the trained questions, not passages
        assert 0 < len(own) <= 3 and all(q.endswith("?") and a for q, a in own)
        steps = [m for m in MetricsLog(engine.context.data_dir).read() if m["phase"] == "learn"]
        assert len(steps) == report.details["steps"] and steps[-1]["expert"] == 0

        # Another embedding model of the same width (none ships: the real vectors with their
        # dimensions reversed): the experts' keys are made again before a question is compared.
        context, real = engine.context, engine.context.embed
        context.embed = lambda texts: real(texts)[:, ::-1].copy()
        try:
            engine._checked_at = float("-inf")  # as after a model switch, 30 s on
            assert engine.contribute(Query(text=ASKED)).meta["routed_share"] > 0
            assert engine.contribute(Query(text=UNRELATED)).meta["routed_share"] == 0.0
            assert torch.allclose(engine.state_dict()["router.probe"], torch.from_numpy(
                context.embed([route_keys.PROBE])[0]), atol=1e-6)
        finally:
            context.embed = real
            engine._checked_at = float("-inf")
        assert engine.contribute(Query(text=ASKED)).meta["routed_share"] > 0  # and back

        # a fresh engine finds the saved pool and loads the expert only when routed to
        learned = logits(neocortex, ASKED)
        engine.close()
        again = type(engine)(engine.context, engine.config)
        again.cortex()
        assert again.pool is not None and again.pool.slots() == [] and list(again.experts) == [0]
        assert torch.equal(logits(neocortex, ASKED), learned)
        assert again.pool.slots() == [0]

        # a sleep whose drift bound cannot hold is rolled back, reason logged
        again.config = again.config.model_copy(update={"drift_bound": -1.0})
        before = again.pool.consolidated()
        began = []
        slept = again.consolidate(Budget(seconds=120, begin=lambda: began.append(True)))
        assert began == [True]
        assert slept.details["rolled_back"] and "drift" in slept.details["reason"] and slept.details["steps"] > 0
        after = again.pool.consolidated()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert any(e.kind == "rollback" for e in ClsEpisodeStore(engram.db).events())
        engine = again
        assert any("rollback" in line for line in again.stats()["events"])
        assert any(m["phase"] == "sleep" for m in MetricsLog(engine.context.data_dir).read())

        # a checkpoint (state_dict) brings every expert back into an engine that lost its blobs
        state = again.state_dict()
        again.close()
        for key in ("cls/index", "cls/expert-0"):
            again.blobs.delete(key)
        engine = type(again)(again.context, again.config)
        engine.cortex()
        assert not engine.experts and torch.equal(logits(neocortex, ASKED), base_asked)
        engine.load_state_dict(state, origin="test")
        assert torch.equal(logits(neocortex, ASKED), learned)
        assert engine.blobs.get("cls/expert-0") is not None  # autosave wrote it again
    finally:
        engine.close()
        engram.close()
    assert torch.equal(logits(neocortex, ASKED), base_asked)  # the original layers are back


@pytest.mark.slow
def test_an_idle_cls_sleep_stops_within_a_second_of_a_question_and_resumes_later(embedder, neocortex) -> None:
    import threading
    import time

    from store import activity
    from store.blobs import BlobStore
    from store.jobs import SLEEP
    from store.sleep_pressure import SleepPressureLog
    from tests.helpers import wait_for

    engram = open_engram(embedder, engines="rag,cls", **{**SLEEPY, "cls.sleep_epochs": 40, "cls.probe_tokens": 128})
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    try:
        engine.learn(DocumentInput(document_id=1, path="lynx.txt", chunks=[DOC]))
        first = SleepPressureLog(engram.db).latest("cls")
        assert first is not None and first.novelty == 1.0 and first.saturation == 1 / 16
        assert engram.sleeper.queue_sleep("idle")
        job = threading.Thread(target=engram.worker.run_once)
        job.start()  # the worker runs the idle sleep job, as when the person is away
        wait_for(lambda: any(m["phase"] == "sleep" for m in MetricsLog(engine.context.data_dir).read()), timeout=120)
        engram.conversations.add_question(engram.conversations.create("c").id, "Back again")  # the person is back
        came_back = time.perf_counter()
        wait_for(lambda: activity.last_sleep(engram.db), timeout=30, interval=0.01)
        assert time.perf_counter() - came_back < 1.0
        job.join(30)
        cut = activity.last_sleep(engram.db)
        slept = next(r for r in cut.reports if r["engine"] == "cls")
        assert cut.interrupted and slept["details"]["interrupted"]
        done = slept["details"]["steps"]
        assert 0 < done < slept["details"]["planned"]
        assert BlobStore(engram.db, engram.paths.root).get("cls/sleep-resume")["steps"] == done
        assert engram.queue.pending_count(SLEEP) == 0

        engine.config = engine.config.model_copy(update={"sleep_epochs": 40})
        resumed = engine.consolidate(Budget(seconds=120, steps=3))
        assert resumed.details["resumed_from"] == done and resumed.details["steps"] == done + 3
        assert resumed.details["optimizer_restored"]  # Adam goes on with its moments, not afresh
        assert resumed.details["reason"] == "kept" and engine.blobs.get("cls/sleep-resume") is None
        assert SleepPressureLog(engram.db).latest("cls").novelty == 0.0  # a kept sleep spends the novelty
    finally:
        engine.close()
        engram.close()


@pytest.mark.slow
def test_a_sleep_refreshes_only_the_experts_its_adapter_matches_and_never_changes_another_ones_answers(
        embedder, neocortex) -> None:
    engram = open_engram(embedder, engines="rag,cls", **{**SLEEPY, "cls.sleep_episodes": 256})
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    try:
        engine.learn(DocumentInput(document_id=1, path="lynx.txt", chunks=[DOC]))
        learned, answered = engine.pool.expert(0), logits(neocortex, ASKED)
        assert any(bool(v.abs().sum()) for k, v in learned.items() if k.endswith(".B"))

        short = engine.consolidate(Budget(seconds=120, steps=1))  # one step: not every episode replayed
        assert short.details["reason"] == "kept" and short.details["refreshed"] == [] == list(short.details["fidelity"])
        assert not engine.experts[0].consolidated and not engine.experts[0].layered
        assert any(v.any() for k, v in engine.pool.consolidated().items() if k.endswith(".B"))  # the adapter learned ...
        assert torch.equal(logits(neocortex, ASKED), answered)  # ... and the expert still answers alone

        whole = engine.consolidate(Budget(seconds=600))
        assert whole.details["reason"] == "kept" and not whole.details["stopped"]
        assert whole.details["fidelity"]["0"][2] > 0  # its rehearsal answers were asked of both
        if whole.details["refreshed"]:
            assert engine.experts[0].layered
        else:
            assert torch.equal(logits(neocortex, ASKED), answered)

        # an adapter that is the expert's copy gets exactly the answers the expert gets
        copy = {k: v for k, v in engine.pool.expert(0).items()}
        engine.pool.load_consolidated(copy)
        pad = neocortex.tokenizer.pad_token_id or 0
        same = engine._fidelity(neocortex, {0}, engine.pool.consolidated(), pad, lambda: False)
        assert len(same[0][0]) > 0 and same[0][0] == same[0][1]
        assert engine._fidelity(neocortex, {0}, copy, pad, lambda: True) == {}  # the person is back: none

        engine._refresh(0)  # as a sleep does once the adapter matches the expert
        refreshed = engine.pool.expert(0)
        assert engine.experts[0].consolidated and engine.experts[0].layered
        assert all(not v.any() for k, v in refreshed.items() if k.endswith(".B"))  # it adds nothing now
        assert all(torch.equal(v, refreshed[k]) for k, v in learned.items() if k.endswith(".A"))  # B can learn again
        now = logits(neocortex, ASKED)  # routed: the zero expert and the consolidated adapter
        prompt = render(neocortex, [ChatMessage(role="user", content=ASKED)])
        ids = neocortex.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        share = float(engine.routing([ASKED]).share[0])
        with neocortex.lock, torch.no_grad(), engine.pool.routing(None, consolidated=share):
            assert torch.allclose(neocortex.model(**ids).logits[0, -1], now, atol=1e-5)
        engine.save()
        engine.close()
        again = type(engine)(engine.context, engine.config)  # saved that way
        again.cortex()
        assert again.experts[0].layered
        assert torch.allclose(logits(neocortex, ASKED), now, atol=1e-5)
        engine = again
    finally:
        engine.close()
        engram.close()


@pytest.mark.slow
def test_a_state_learned_under_another_layout_loads_as_it_was_learned(embedder, neocortex, caplog) -> None:
    from engines.cls.config import CLSConfig

    old = {"cls.targets": "down_proj", "cls.rank": 2, "cls.layers": "28-29"}  # the settings before an upgrade
    engram = open_engram(embedder, engines="rag,cls", **{**SMALL, **old, "cls.passes": 1,
                                                          "cls.rehearsal_source": "extract"})
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    try:
        engine.learn(DocumentInput(document_id=1, path="lynx.txt", chunks=[DOC]))
        learned = logits(neocortex, ASKED)
        engine.close()
        engine = type(engine)(engine.context, CLSConfig())  # today's defaults: three projections, rank 16
        engine.cortex()
        assert sorted(engine.pool.layers) == [f"model.layers.{n}.mlp.down_proj" for n in (28, 29)]
        assert "keeps its own layout" in caplog.text
        assert torch.equal(logits(neocortex, ASKED), learned)
    finally:
        engine.close()
        engram.close()
