"""TTT-E2E on the real embedded model: a document learned through the job queue into the
neocortex's MLP rows, per-step progress, chat answering with the learned state (and saying so),
checkpoints that save, reset and restore exactly what was learned."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.utils import logging as transformers_logging

from app.bench.model_eval import greedy_answers, option_logprobs, render
from engines.base import Budget, DocumentInput, Query
from engines.ttt import route_keys
from engines.ttt.calibration import background_rates
from engines.ttt.persistence import LIVE_KEY
from engines.generation import ChatMessage
from engines.ttt.trainer import chat_piece, collate, frozen_prefix, frozen_prefixes, labelled_loss, text_pieces
from models.dual_mlp import original
from store import activity
from store.documents import DocumentStore
from tests.helpers import open_engram

DOC = ("Loudurk Zestaestox was born in 1946. Loudurk Zestaestox grew up in the town of Stikecaend. "
       "Loudurk Zestaestox works as a cartographer. Loudurk Zestaestox keeps a lynx named Thielor.\n")
QUESTION = "What is the name of Loudurk Zestaestox's lynx?"
OPTIONS = ["Hezos", "Studrond", "Suson", "Thielor"]
SMALL = {"ttt.passes": 3, "ttt.calibration_tokens": 512, "ttt.gate_top_k": 32,
         "ttt.batch_tokens": 192, "ttt.replay_tokens": 32, "answer_max_tokens": 16}


def ttt_engram(embedder, neocortex, **overrides):
    """An Engram learning with ttt into the session's model, and its ttt engine."""
    engram = open_engram(embedder, engines="rag,ttt", **{**SMALL, **overrides})
    engram.adopt_neocortex(neocortex)
    return engram, engram.engine("ttt")


def scores(cortex, question: str, options: list[str], routed: bool = True) -> list[float]:
    """Each option's log-likelihood after ``question`` asked in chat, closed book (routed by the
    question as chat routes it, or with the whole learned delta)."""
    prompt = render(cortex, [ChatMessage(role="user", content=question)])
    return option_logprobs(cortex, [prompt], [options], queries=[question] if routed else None)[0]


def answer_score(cortex) -> float:
    """How much the right option beats the best wrong one (log-likelihood), closed book."""
    found = scores(cortex, QUESTION, OPTIONS, routed=False)
    return found[3] - max(found[:3])


def docs_folder(tmp_path: Path, **texts: str) -> Path:
    """A folder holding ``name.txt`` for each text."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text)
    return folder


@pytest.mark.slow
def test_the_loss_from_the_first_learning_layer_equals_the_models_own(neocortex) -> None:
    tok = neocortex.tokenizer
    pieces = [chat_piece(tok, QUESTION, "Thielor"), chat_piece(tok, "Who draws maps?", "Loudurk"),
              *text_pieces(tok, DOC, 24, "document", limit=24)]  # two rows share their opening, one not
    batch = collate(pieces, tok.pad_token_id or 0, "cpu")
    with torch.no_grad():
        expected = neocortex.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    labels=batch["labels"]).loss
        whole = labelled_loss(neocortex.model, frozen_prefix(neocortex.model, batch, 22), 22)
        (regrouped,) = frozen_prefixes(neocortex.model, neocortex.lock, [batch], 22)
        shared = labelled_loss(neocortex.model, regrouped, 22)
    torch.testing.assert_close(whole, expected)
    torch.testing.assert_close(shared, expected)


@pytest.mark.slow
def test_cached_forwards_use_the_installed_transformers_name_for_the_cache(neocortex, monkeypatch) -> None:
    tok = neocortex.tokenizer
    batch = collate([chat_piece(tok, QUESTION, "Thielor"), chat_piece(tok, "Who draws maps?", "Loudurk")],
                    tok.pad_token_id or 0, "cpu")
    logged: list[str] = []
    monkeypatch.setattr(transformers_logging.get_logger("transformers.utils.generic"), "warning_once",
                        logged.append, raising=False)  # an instance attribute: not cached "once"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # an old name warns, then breaks on a later upgrade
        list(frozen_prefixes(neocortex.model, neocortex.lock, [batch], 22))  # a generator: run it
        answer_score(neocortex)
    assert logged == []


@pytest.mark.slow
def test_a_document_is_learned_into_weights_and_chat_answers_with_them(
        embedder, neocortex, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ENGRAM_TTT_REHEARSAL_SOURCE")  # the default material, as a person gets it
    engram, engine = ttt_engram(embedder, neocortex)
    assert engine.config.rehearsal_source == "facts"
    try:
        before = answer_score(neocortex)
        folder = docs_folder(tmp_path, loudurk=DOC)
        engram.ingest([folder])
        engram.run_pending()
        assert engine.contribute(Query(text=QUESTION)).learned_states == []  # nothing learned yet
        messages: list[str] = []
        report = engram.queue.report
        monkeypatch.setattr(engram.queue, "report",
                            lambda job_id, f, m: (messages.append(m), report(job_id, f, m))[1])
        engram.run_pending(learn=True)

        steps = [m for m in messages if m.startswith("step ")]
        assert len(steps) >= 3 and steps[-1].startswith(f"step {len(steps)}/{len(steps)} loss ")
        stats = engine.stats()
        assert stats["documents"] == 1 and 0 < max(stats["neurons_touched"].values()) <= 32
        cfg = engine.config  # every changed neuron is one that general use rarely wakes
        counts, tokens = background_rates(
            engine.blobs, neocortex, engine._duals, engine._layer_ids, engine.context.background(),
            cfg.fire_fraction, cfg.calibration_tokens, lambda _: None,
            questions=engine._background_question_pieces(neocortex))
        assert tokens > cfg.calibration_tokens  # the prose and as many tokens of chat questions
        rates = counts / tokens
        for j, dual in enumerate(engine._duals):
            assert (rates[j, dual.touched_ids()] <= cfg.gate_max_background * cfg.fire_fraction).all()
        after = answer_score(neocortex)
        assert after > before + 0.5, (before, after)  # the fact is now more likely than the decoys

        done = engram.chat.answer(QUESTION)
        meta = done.message.meta
        assert meta["backend"] == neocortex.name and meta["learned_states"] == ["ttt rev 1: 1 documents"]
        state = engram.answering_state()
        assert state.backend == "torch" and [s.documents for s in state.learned] == [1]

        engram.checkpoints.save("one")
        assert [r.name for r in engram.checkpoints.list()] == ["one"]
        engine.reset()
        assert answer_score(neocortex) == pytest.approx(before, abs=1e-4)  # the original again
        assert engram.chat.answer(QUESTION).message.meta["learned_states"] == []
        assert engram.answering_state().learned == []
        engram.checkpoints.load("one")
        assert answer_score(neocortex) == pytest.approx(after, abs=1e-4)
        assert "from checkpoint 'one'" in engine.state_label
        assert engram.answering_state().learned[0].origin == "one"
        engram.checkpoints.delete("one")
        assert engram.checkpoints.list() == []
    finally:
        engine.close()
        engram.close()


GENERAL = "What is the capital of France?"


@pytest.mark.slow
def test_answers_get_the_learned_weights_as_far_as_the_question_is_about_a_learned_document(
        embedder, neocortex, tmp_path: Path) -> None:
    # Routing by the question alone: with the controller off the episodic tier would put the
    # earlier answers' questions in the prompt too (tests/test_memory_tiers.py covers that).
    engram, engine = ttt_engram(embedder, neocortex, **{"ttt.passes": 1, "memory.episodic": "false"})
    folder = docs_folder(tmp_path, loudurk=DOC)
    engram.ingest([folder])
    engram.run_pending(learn=True)
    capitals = ["Rome", "Berlin", "Paris", "Madrid"]
    try:
        assert engine.stats()["router_keys"] == 4  # one per sentence
        with original(engine._duals):
            known = scores(neocortex, GENERAL, capitals)
            fresh = scores(neocortex, QUESTION, OPTIONS)
        assert scores(neocortex, GENERAL, capitals) == known  # nothing learned is about France
        assert scores(neocortex, GENERAL, capitals, routed=False) != known  # the delta reaches it unrouted
        about = scores(neocortex, QUESTION, OPTIONS)
        assert about == pytest.approx(scores(neocortex, QUESTION, OPTIONS, routed=False), abs=1e-4)
        assert about != fresh
        prompts = [render(neocortex, [ChatMessage(role="user", content=q)]) for q in (GENERAL, QUESTION)]
        together = option_logprobs(neocortex, prompts, [capitals, OPTIONS], queries=[GENERAL, QUESTION])
        assert together[0] == pytest.approx(known, abs=1e-4) and together[1] == pytest.approx(about, abs=1e-4)
        with original(engine._duals):
            plain = greedy_answers(neocortex, prompts[:1], max_new_tokens=8)
        assert greedy_answers(neocortex, prompts, max_new_tokens=8, queries=[GENERAL, QUESTION])[0] == plain[0]
        engine.config.route = False  # off: every answer gets the whole delta
        assert scores(neocortex, GENERAL, capitals) != known and engine.stats()["router_keys"] == 4
        engine.config.route = True

        asked: list[list[str]] = []
        route = neocortex.router
        neocortex.router = lambda queries: (asked.append(list(queries)), route(queries))[1]
        try:
            # The controller: a question routed none of the learned weights goes to the chat runtime.
            meta = engram.chat.answer(GENERAL).message.meta
            assert meta["backend"] == "llamacpp" and meta["learned_states"] == [] and asked == []
            assert meta["controller"]["skipped_learned"] == [engine.state_label]
            meta = engram.chat.answer(QUESTION).message.meta
            assert meta["backend"] == neocortex.name and meta["controller"]["learned"] == [engine.state_label]
            asked.clear()
            engram.settings.controller = "off"  # every answer through the neocortex, as before
            engram.chat.answer(GENERAL)  # chat through the neocortex routes by the user's question
        finally:
            neocortex.router = route
            engram.settings.controller = "rules"
        assert asked == [[GENERAL]]
        assert engine.contribute(Query(text=GENERAL)).notes == ["answered with 0% of the weights learned from 1 documents"]
        assert engine.contribute(Query(text=QUESTION)).notes == ["answered with 100% of the weights learned from 1 documents"]
        assert engine.contribute(Query(text=QUESTION)).system == engine.config.rehearsal_system  # chat asks under it
        follow_up = Query(text="And what does he do for a living?",
                          history=[ChatMessage(role="user", content=QUESTION), ChatMessage(role="assistant", content="Thielor")])
        note = engine.contribute(follow_up).notes[0]  # routed with the question it follows
        assert int(note.split("answered with ")[1].split("%")[0]) >= 90, note

        state = engine.state_dict()
        assert state["router.keys"].shape == (4, embedder.dim) and state["router.owners"].tolist() == [
            engram.docs.get(str(folder / "loudurk.txt")).id] * 4
        engine.load_state_dict({k: v for k, v in state.items() if not k.startswith("router.")})
        assert engine.stats()["router_keys"] == 4  # learned before routing: keys embedded from the store
        assert scores(neocortex, GENERAL, capitals) == known
        engine.close()  # start-up with a live state whose keys are unreadable: embedded again
        engine.blobs.put(LIVE_KEY, "state", {**state, "router.owners": torch.tensor([1])})
        engine.cortex()
        assert engine.stats()["router_keys"] == 4 and engine.documents == 1  # the weights are kept
        assert scores(neocortex, GENERAL, capitals) == known

        # Another embedding model of the same width (no second one ships: the real vectors with
        # their dimensions reversed): the keys are made again before a question is compared.
        context, real = engine.routing.context, engine.routing.context.embed
        context.embed = lambda texts: real(texts)[:, ::-1].copy()
        try:
            engine.routing._checked_at = float("-inf")  # as after a model switch, 30 s on
            assert engine.contribute(Query(text=QUESTION)).meta["routed_share"] == 1.0
            assert torch.allclose(engine.state_dict()["router.probe"], torch.from_numpy(
                context.embed([route_keys.PROBE])[0]), atol=1e-6)
        finally:
            context.embed = real
            engine.routing._checked_at = float("-inf")
        assert engine.contribute(Query(text=QUESTION)).meta["routed_share"] == 1.0  # and back

        (folder / "loudurk.txt").unlink()  # a document that leaves takes its keys along
        engram.ingest([folder])
        assert engine.stats()["router_keys"] == 0
        assert engine.blobs.get(LIVE_KEY)["router.keys"].shape[0] == 0  # and saved
        assert scores(neocortex, QUESTION, OPTIONS) == fresh
    finally:
        engine.close()
        engram.close()
    assert neocortex.router is None  # closed: the next engine installs its own


OTHER = ("Mirelle Daskoth was born in 1958. Mirelle Daskoth grew up in the town of Pahounund. "
         "Mirelle Daskoth works as a beekeeper.\n")


def pool(engine) -> list[list]:
    return engine.state_dict()["recall"]["pairs"]


@pytest.mark.slow
def test_later_documents_rehearse_earlier_pairs_and_a_changed_document_replaces_its_own(
        embedder, neocortex, tmp_path: Path) -> None:
    engram, engine = ttt_engram(embedder, neocortex, **{"ttt.passes": 1})
    folder = docs_folder(tmp_path, a=DOC, b=OTHER)
    engram.ingest([folder])
    engram.run_pending()  # stored, not learned: the engine is driven by hand below
    a, b = (engram.docs.get(str(folder / name)).id for name in ("a.txt", "b.txt"))
    try:
        assert engine.learn(DocumentInput(document_id=a, path="a.txt", chunks=[DOC])).details["recalled_pairs"] == 0
        assert [a, "Loudurk Zestaestox keeps a lynx named what?", "Thielor"] in pool(engine)
        assert {e[0] for e in pool(engine)} == {a}

        second = engine.learn(DocumentInput(document_id=b, path="b.txt", chunks=[OTHER]))
        assert second.details["recalled_pairs"] == 4  # four per new pair, at most the 4 pairs there are
        assert {e[0] for e in pool(engine)} == {a, b}

        again = engine.learn(DocumentInput(document_id=a, path="a.txt", chunks=[DOC.replace("Thielor", "Hezos")]))
        assert again.details["recalled_pairs"] == 3  # only b's pairs: not its own old ones
        answers = {e[2] for e in pool(engine) if e[0] == a}
        assert "Hezos" in answers and "Thielor" not in answers and len(pool(engine)) == 7

        state = engine.state_dict()
        engine.reset()
        assert pool(engine) == []
        original_score = answer_score(neocortex)
        last = max(engine.stats()["layers"])
        for bad in ({"recall": {"seen": 7, "pairs": [[a, "only two"]]}},
                    {f"layer{last}.ids": torch.tensor([10**6])}, {"alpha": "high"},
                    {"router.owners": torch.tensor([a])}):
            with pytest.raises(ValueError):
                engine.load_state_dict({**state, **bad})
            assert pool(engine) == [] and engine.documents == 0  # a bad state changes nothing
            assert answer_score(neocortex) == original_score  # no layer's rows were loaded
        engine.load_state_dict(state)
        assert pool(engine) == state["recall"]["pairs"] and engine.documents == 3

        (folder / "b.txt").unlink()  # the document leaves the store: its pairs are not rehearsed again
        engram.ingest([folder])
        assert {e[0] for e in pool(engine)} == {a} and set(engine.router.owners.tolist()) == {a}
        assert {e[0] for e in engine.blobs.get(LIVE_KEY)["recall"]["pairs"]} == {a}  # and saved
        engine.load_state_dict(state)  # a checkpoint from before: b is gone from the store
        assert {e[0] for e in pool(engine)} == {a}

        learned_score = answer_score(neocortex)
        engine.close()  # start-up with a live state whose recall pool is unreadable
        engine.blobs.put(LIVE_KEY, "state", {**state, "recall": {"seen": 7, "pairs": "garbled"}})
        assert pool(engine) == [] and engine.documents == 3  # the pool is lost, the weights are not
        assert answer_score(neocortex) == learned_score
    finally:
        engine.close()
        engram.close()


@pytest.mark.slow
def test_sleep_rehearses_every_pair_in_the_rows_documents_changed_and_keeps_what_was_learned(
        embedder, neocortex, tmp_path: Path) -> None:
    engram, engine = ttt_engram(embedder, neocortex, **{"ttt.passes": 1, "ttt.sleep_open": "changed"})
    try:
        idle = engine.consolidate(Budget(seconds=60))
        assert not idle.changed and idle.details["reason"] == "nothing learned yet"
        engine.learn(DocumentInput(document_id=1, path="a.txt", chunks=[DOC]))
        engine.learn(DocumentInput(document_id=2, path="b.txt", chunks=[OTHER]))
        learned = answer_score(neocortex)
        rows = [(dual.touched.clone(), dual.gate.clone(), dual.down.clone()) for dual in engine._duals]
        revision = engine.revision
        messages: list[str] = []

        report = engine.consolidate(Budget(seconds=600), lambda f, m: messages.append(m))

        d = report.details
        assert report.changed and d["pairs"] == len(pool(engine)) == 7 and d["batches"] >= 2
        assert d["steps"] == d["planned"] == engine.config.sleep_epochs * d["batches"]  # every pair, each epoch
        assert d["epochs_done"] == engine.config.sleep_epochs
        assert messages[0].startswith(f"sleep step 1/{d['steps']} loss ") and "held" in messages[0]
        assert d["loss_last_epoch"] < d["loss_first_epoch"]  # the pairs are rehearsed, not just seen
        for dual, (touched, gate, down) in zip(engine._duals, rows):
            assert torch.equal(dual.touched, touched)  # sleep opens only rows a document changed
            assert torch.equal(dual.gate[~touched], gate[~touched]) and torch.equal(dual.down[~touched], down[~touched])
        assert any(not torch.equal(dual.down, down) for dual, (_, _, down) in zip(engine._duals, rows))
        assert engine.revision == revision + 1 and engine.blobs.meta(LIVE_KEY)["revision"] == revision + 1
        assert answer_score(neocortex) > learned  # the first document's fact, rehearsed, is surer
        short = engine.consolidate(Budget(seconds=600, steps=1))
        assert short.details["steps"] == short.details["planned"] == 1  # the budget is kept
        seen: list[str] = []
        cut = engine.consolidate(Budget(seconds=600, stop=lambda: len(seen) >= 2), lambda f, m: seen.append(m))
        assert cut.details["steps"] == 2 < cut.details["planned"] and cut.details["interrupted"]
        assert cut.changed and not short.details["interrupted"]  # stopped when asked, keeping its steps
        assert d["probe_after"] <= max(d["probe_before"], d["probe_original"]) * (1 + engine.config.sleep_probe_bound)
        assert d["probe_original"] != d["probe_before"]  # measured on the original model, not the learned one
        stopped = engine.consolidate(Budget(seconds=0.001))
        assert stopped.details["steps"] == 0 < stopped.details["planned"] and not stopped.changed
        assert stopped.details["epochs_done"] == 0 and stopped.details["loss_first_epoch"] is None

        rows = [dual.down.clone() for dual in engine._duals]

        def other_process(fraction: float, message: str) -> None:  # saves a learned state meanwhile
            if message.startswith("sleep step 1/"):
                engine.blobs.put(LIVE_KEY, "state", engine.blobs.get(LIVE_KEY),
                                 meta={**engine.blobs.meta(LIVE_KEY), "revision": 99, "token": "theirs"})

        raced = engine.consolidate(Budget(seconds=600, steps=2), other_process)
        assert not raced.changed and "another Engram process" in raced.details["reason"]
        assert all(torch.equal(dual.down, down) for dual, down in zip(engine._duals, rows))
        assert engine.blobs.meta(LIVE_KEY)["revision"] == 99  # the other process's state stays

        alphas = [dual.alpha for dual in engine._duals]
        cortex = engine.cortex()
        probe = engine._probe(cortex)
        as_original = engine._perplexity(cortex, probe, as_original=True)
        assert [dual.alpha for dual in engine._duals] == alphas  # the learned model is back
        engine.reset()
        assert engine._perplexity(cortex, probe) == pytest.approx(as_original, rel=1e-5)
    finally:
        engine.close()
        engram.close()


@pytest.mark.slow
def test_a_sleep_told_to_open_the_quiet_neurons_trains_them_too_and_never_a_busy_one(
        embedder, neocortex) -> None:
    engram, engine = ttt_engram(embedder, neocortex, **{"ttt.passes": 1, "ttt.sleep_open": "quiet"})
    try:
        engine.learn(DocumentInput(document_id=1, path="a.txt", chunks=[DOC]))
        rows = [(dual.touched.clone(), dual.gate.clone(), dual.up.clone(), dual.down.clone())
                for dual in engine._duals]
        counts, tokens = engine._background_rates(neocortex, lambda f: None)
        allowed = engine._quiet(counts, tokens)
        opened = [touched | quiet for (touched, *_), quiet in zip(rows, allowed)]

        report = engine.consolidate(Budget(seconds=600, steps=2))

        assert report.changed and report.details["neurons_open"] == sum(int(o.sum()) for o in opened)
        assert report.details["retried"] == []  # kept with every quiet row open
        assert report.details["neurons_open"] > sum(int(touched.sum()) for touched, *_ in rows)
        for dual, (touched, gate, up, down), open_ in zip(engine._duals, rows, opened):
            busy = ~open_  # neurons general use runs through: never opened, never changed
            assert busy.any() and not dual.touched[busy].any()
            assert torch.equal(dual.gate[busy], gate[busy]) and torch.equal(dual.up[busy], up[busy])
            assert torch.equal(dual.down[busy], down[busy])
        assert any((dual.touched & ~touched).any() for dual, (touched, *_) in zip(engine._duals, rows))
        limit = engine.config.gate_max_background * engine.config.fire_fraction
        for n, dual in enumerate(engine._duals):  # every row the sleep changed is quiet in general use
            assert (counts[n][dual.touched & ~rows[n][0]].double() / tokens <= limit).all()
    finally:
        engine.close()
        engram.close()


@pytest.mark.slow
def test_a_sleep_saves_a_checkpoint_first_a_harmful_one_keeps_nothing_and_a_load_stops_one(
        embedder, neocortex) -> None:
    engram, engine = ttt_engram(embedder, neocortex, **{"ttt.passes": 1})
    try:
        stored = DocumentStore(engram.db).replace("a.txt", None, "h", len(DOC), 0.0, [], np.zeros((0, 1)))[0]
        engine.learn(DocumentInput(document_id=stored, path="a.txt", chunks=[DOC]))  # a load keeps its pairs
        rows = [dual.down.clone() for dual in engine._duals]
        held, save = [], engram.checkpoints.save_before_sleep
        engram.checkpoints.save_before_sleep = lambda e: (held.append(engine._training.locked()), save(e))[1]
        assert engram.sleep_now() and engram.worker.run_once() == 1  # the sleep job, as when idle
        assert held == [True]  # saved under the sleep's training lock: no load comes in between
        last = activity.last_sleep(engram.db)
        assert last is not None and last.checkpoints == ["before-sleep-ttt"]
        assert next(r for r in last.reports if r["engine"] == "ttt")["changed"]
        assert not all(torch.equal(dual.down, down) for dual, down in zip(engine._duals, rows))
        assert "To undo it, load checkpoint before-sleep-ttt." in engram.sleeper.status().summary(str)
        engram.checkpoints.load("before-sleep-ttt")  # undoes the sleep
        assert all(torch.equal(dual.down, down) for dual, down in zip(engine._duals, rows))

        calm = engine.config
        engine.config = calm.model_copy(update={"sleep_lr": 0.5, "sleep_open": "changed"})  # steps far too large
        wild = engine.consolidate(Budget(seconds=600, steps=2))
        assert not wild.changed and wild.details["reason"].startswith("rolled back")
        d = wild.details
        assert d["probe_after"] > max(d["probe_before"], d["probe_original"]) * (1 + calm.sleep_probe_bound)
        assert all(torch.equal(dual.down, down) for dual, down in zip(engine._duals, rows))  # nothing kept
        assert d["retried"] == []  # the changed rows alone: nothing narrower to try

        engine.config = calm.model_copy(update={"sleep_lr": 0.5, "sleep_open": "quiet"})
        messages: list[str] = []
        wider = engine.consolidate(Budget(seconds=600, steps=2), lambda f, m: messages.append(m))
        assert not wider.changed and len(wider.details["retried"]) == 1  # every quiet row, then the changed ones
        assert sum(m.startswith("sleep step 1/") for m in messages) == 2
        assert any("again with only the" in m for m in messages)
        assert all(torch.equal(dual.down, down) for dual, down in zip(engine._duals, rows))

        engine.config = calm.model_copy(update={"sleep_epochs": 50})
        state, slept, stepping = engine.state_dict(), [], threading.Event()
        sleeper = threading.Thread(target=lambda: slept.append(engine.consolidate(
            Budget(seconds=600), lambda f, m: stepping.set() if m.startswith("sleep step") else None)))
        sleeper.start()
        assert stepping.wait(120)
        engine.load_state_dict(state)  # a checkpoint load does not wait for the whole sleep
        sleeper.join(120)
        assert slept[0].details["interrupted"] and slept[0].details["steps"] < slept[0].details["planned"]
    finally:
        engine.close()
        engram.close()
