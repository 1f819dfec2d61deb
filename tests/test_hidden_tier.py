"""The hidden-state knowledge tier (engines/hidden): states stored and removed with their chunks,
a reward that raises a retrieved passage's made-up name, nothing changed when it is off, one search
per answer shared with rag, and states of weights that changed since left out until filled again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engines.base import Budget, ConsolidateReport, Passage, Query
from engines.cls import lm
from engines.cls.config import CLSConfig
from engines.hidden import fingerprint as fingerprint_module
from engines.hidden.fingerprint import WeightFingerprint
from models.dual_mlp import decoder_layers, install, uninstall
from models.hidden_reward import modulate, reward_vector, select, top_rewards
from store import activity
from store.chunk_states import ChunkStateStore
from store.jobs import LEARN, REFRESH
from tests.helpers import open_engram

DOC = ("# The Ferrow protocol\n\nThe Ferrow protocol was designed by Zorvek Quillanby in 2016. "
       "It moves sealed parcels between the orbital depots of Vellmar.\n")
QUESTION = "Who designed the Ferrow protocol?"
NAME = " Zorvek"


def test_the_reward_follows_surprisal_and_weight_and_adds_to_logits() -> None:
    head = torch.eye(4) * 5.0  # token v is predicted by a state pointing along axis v
    states = torch.stack([torch.eye(4)[0], torch.eye(4)[1]])
    actions = torch.tensor([0, 2])  # state 0 took the token it predicts; state 1 took a surprising one
    reward = reward_vector(states, actions, torch.tensor([0.5, 0.5]), head)
    assert reward[2] == 1.0 and 0 < reward[0] < 0.1 and reward[1] == reward[3] == 0
    idx, w = select(states, torch.tensor([0.0, 1.0, 0.0, 0.0]), top=1, temperature=0.1)
    assert idx.tolist() == [1] and w.tolist() == [1.0]
    bias = top_rewards(reward, tokens=1, strength=3.0)
    assert bias == {2: 3.0}
    assert modulate(torch.zeros(4), bias).tolist() == [0.0, 0.0, 3.0, 0.0]


def test_a_query_searches_once_for_every_engine_that_asks_for_no_more() -> None:
    calls: list[tuple[str, int]] = []

    def retrieve(text: str, k: int) -> list[Passage]:
        calls.append((text, k))
        return [Passage(chunk_id=i, document_id=1, path="a.md", line_start=1, line_end=1, score=0.5,
                        text=f"chunk {i}") for i in range(k)]

    query = Query(text="who?")
    first = query.search(retrieve, "who?", 8)
    assert [p.chunk_id for p in query.search(retrieve, "who?", 4)] == [p.chunk_id for p in first[:4]]
    assert query.search(retrieve, "who?", 8) == first and calls == [("who?", 8)]
    query.search(retrieve, "who?", 12)  # deeper than searched: searched again
    query.search(retrieve, "and when?", 4)
    Query(text="who?").search(retrieve, "who?", 4)  # another question: its own search
    assert calls == [("who?", 8), ("who?", 12), ("and when?", 4), ("who?", 4)]


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64)).requires_grad_(False)


def test_the_weights_fingerprint_changes_with_every_change_of_weights_and_comes_back_with_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, fingerprint = _tiny_llama(), WeightFingerprint()
    original = fingerprint(model)
    assert WeightFingerprint()(_tiny_llama()) == original  # same weights, another model (process): same
    hashed: list[int] = []
    digest = fingerprint_module.digest
    monkeypatch.setattr(fingerprint_module, "digest", lambda t: hashed.append(1) or digest(t))

    weight = model.model.layers[3].mlp.down_proj.weight  # an optimizer step, as training takes one
    saved = weight.detach().clone()
    weight.requires_grad_(True)
    model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.square().mean().backward()
    torch.optim.Adam([weight], lr=1e-3).step()
    weight.requires_grad_(False)
    stepped = fingerprint(model)
    assert stepped != original and len(hashed) == 1  # only the tensor written was hashed again
    with torch.no_grad():
        weight.copy_(saved)
    assert fingerprint(model) == original

    duals = install(model, [2, 3])  # ttt's DualMLPs: at alpha 1 the forward is the same, still counted
    installed = fingerprint(model)
    for dual in duals:
        dual.alpha = 0.5  # the learned delta now counts: a number, not a tensor, changed
    assert len({original, stepped, installed, fingerprint(model)}) == 4
    uninstall(model)
    assert fingerprint(model) == original


def test_the_fingerprint_covers_what_a_plain_forward_runs_the_consolidated_adapter_not_an_expert() -> None:
    model, fingerprint, ids = _tiny_llama(), WeightFingerprint(), torch.tensor([[1, 2, 3, 4]])
    base = fingerprint(model)
    pool = lm.install(model, CLSConfig())  # cls's wrapping: a consolidated adapter every forward adds
    installed = fingerprint(model)
    plain = model(input_ids=ids).logits
    pool.add(0)  # a new expert, trained, and a second grown from it, as cls grows
    with torch.no_grad():
        for p in pool.parameters(0):
            p.add_(0.5)
    pool.clone(0, 1, noise=0.1)
    assert torch.equal(model(input_ids=ids).logits, plain)  # a plain forward does not run them
    assert fingerprint(model) == installed != base
    with pool.routing(torch.ones(1, 2), [0, 1]):
        assert not torch.equal(model(input_ids=ids).logits, plain)  # a routed one does
    pool.drop(1)
    assert fingerprint(model) == installed

    with torch.no_grad():  # the consolidated adapter trained (its B was zero): every forward changes
        pool.parameters(None)[1].add_(0.01)
    assert not torch.equal(model(input_ids=ids).logits, plain)
    consolidated = fingerprint(model)
    assert consolidated != installed

    dual, = install(model, [2])  # ttt in another layer: one neuron's rows written, as learning does
    installed_ttt = fingerprint(model)
    rows = torch.tensor([5])
    dual.load_learned({"ids": rows, "gate": dual.gate[rows] * 1.5, "up": dual.up[rows], "down": dual.down[rows]})
    assert len({base, installed, consolidated, installed_ttt, fingerprint(model)}) == 5


def _engram(embedder, neocortex, tmp_path: Path, engines: str, **settings):
    folder = tmp_path / "docs"
    folder.mkdir(parents=True)
    (folder / "ferrow.md").write_text(DOC)
    engram = open_engram(embedder, engines=engines, data_dir=tmp_path / "data", **settings)
    engram.adopt_neocortex(neocortex)
    engram.ingest([folder])
    engram.run_pending(learn=True)
    return engram, str(folder / "ferrow.md")


@pytest.mark.slow
def test_states_are_filled_written_by_the_learn_job_and_leave_with_their_document(
        embedder, neocortex, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ferrow.md").write_text(DOC)
    engram = open_engram(embedder, engines="rag,hidden")
    engram.adopt_neocortex(neocortex)
    try:
        engram.ingest([folder])
        engram.run_pending()  # indexed, its learn job not run yet: a document from before the tier
        store = ChunkStateStore(engram.db)
        first = engram.docs.get(str(folder / "ferrow.md")).id
        weights = engram.engine("hidden").weights(neocortex)
        assert store.of_document(first) == 0 and store.missing_documents(neocortex.model_name, weights) == [first]
        seen: list[float] = []
        assert engram.engine("hidden").fill(lambda f, m: seen.append(f))["documents"] == 1
        assert seen[-1] == 1.0 and seen == sorted(seen)
        chunks = store.chunks_of(first)
        assert chunks and store.of_document(first) == len(chunks)
        (states, ids), = store.get([chunks[0][0]], neocortex.model_name, weights).values()
        assert ids.tolist() == neocortex.tokenizer(chunks[0][1], add_special_tokens=False)["input_ids"]
        assert states.shape == (len(ids), neocortex.model.config.hidden_size) and str(states.dtype) == "float16"

        (folder / "vellmar.md").write_text("# Vellmar\n\nThe Vellmar Observatory keeps a cat named Parsec.\n")
        engram.ingest([folder])
        engram.run_pending(learn=True)  # the learn job writes the new document's states
        second = engram.docs.get(str(folder / "vellmar.md")).id
        assert store.of_document(second) == len(store.chunks_of(second)) > 0

        engram.forget_document(str(folder / "ferrow.md"))
        assert store.of_document(first) == 0 and store.summary().documents == 1
    finally:
        engram.close()


def _name_logit(neocortex, plan, bias: dict[int, float] | None) -> tuple[float, int]:
    """The made-up name's first token: its logit at the answer's first step and its rank there."""
    text = neocortex.tokenizer.apply_chat_template([m.model_dump() for m in plan.messages],
                                                   add_generation_prompt=True, tokenize=False)
    ids = neocortex.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = neocortex.model(input_ids=ids).logits[0, -1]
    logits = modulate(logits, bias or {})
    token = neocortex.tokenizer(NAME, add_special_tokens=False)["input_ids"][0]
    return float(logits[token]), int((logits > logits[token]).sum())


@pytest.mark.slow
def test_the_tier_raises_a_retrieved_made_up_name_and_off_changes_nothing(
        embedder, neocortex, llama, tmp_path: Path) -> None:
    off, _ = _engram(embedder, neocortex, tmp_path / "off", "rag")
    on, _ = _engram(embedder, neocortex, tmp_path / "on", "rag,hidden")
    try:
        plans = {}
        for name, engram in (("off", off), ("on", on)):
            contributions = engram.chat.contributions(Query(text=QUESTION))
            plans[name] = engram.chat.prompt(QUESTION, contributions, llama, [])
        (plan_off, bias_off, _), (plan_on, bias_on, notes_on) = plans["off"], plans["on"]
        assert bias_off is None and plan_on.messages == plan_off.messages
        token = neocortex.tokenizer(NAME, add_special_tokens=False)["input_ids"][0]
        assert bias_on and bias_on.get(token, 0) > 0, (bias_on, notes_on)
        before, rank_before = _name_logit(neocortex, plan_off, bias_off)
        after, rank_after = _name_logit(neocortex, plan_on, bias_on)
        assert after > before and rank_after < rank_before

        on.settings.hidden.strength = 0.0  # the setting off: the same bias as without the tier
        assert on.chat.prompt(QUESTION, on.chat.contributions(Query(text=QUESTION)), llama, [])[1] is None
    finally:
        off.close()
        on.close()


@pytest.mark.slow
def test_with_the_tier_off_the_question_path_never_loads_the_torch_model(embedder, llama, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ferrow.md").write_text(DOC)
    for engines, strength in (("rag", 4.0), ("rag,hidden", 0.0)):
        engram = open_engram(embedder, engines=engines, **{"hidden.strength": strength})
        try:
            engram.ingest([folder])
            engram.run_pending()  # indexing only: a learn job would load it, on the worker
            engram.chat.prompt(QUESTION, engram.chat.contributions(Query(text=QUESTION)), llama, [])
            assert engram._neocortex is None
        finally:
            engram.close()


@pytest.mark.slow
def test_one_answer_searches_once_and_states_of_changed_weights_wait_for_a_fill(
        embedder, neocortex, tmp_path: Path) -> None:
    engram, path = _engram(embedder, neocortex, tmp_path, "rag,hidden", critic="off")
    hidden, store = engram.engine("hidden"), ChunkStateStore(engram.db)
    search, searched = engram.engine_context.retrieve, []

    def counted(text: str, k: int) -> list[Passage]:
        searched.append(text)
        return search(text, k)

    engram.engine_context.retrieve = counted  # the engines' retriever: the app's real search, counted
    weight = neocortex.model.model.layers[-1].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        done = [e for e in engram.chat.ask(QUESTION, max_tokens=16) if e.kind == "done"][0].message
        cited = [c.chunk_id for c in done.citations]
        assert searched == [QUESTION] and cited
        used = done.meta["engines"]["hidden"]
        assert used["chunks"] == cited and used["stale"] == [] and used["tokens"] > 0  # rag's passages

        with torch.no_grad():  # a real change of the weights the states were computed with
            weight.mul_(1.05)
        changed = hidden.contribute(Query(text=QUESTION))
        assert not changed.logit_bias and changed.meta["stale"] == cited, changed
        assert any("other weights" in n for n in changed.notes)
        document = engram.docs.get(path).id
        assert store.missing_documents(neocortex.model_name, hidden.weights(neocortex)) == [document]
        assert hidden.consolidate(Budget(seconds=60)).details["chunks"] == len(store.chunks_of(document))
        refilled = hidden.contribute(Query(text=QUESTION))
        assert refilled.logit_bias and refilled.meta["stale"] == [] and refilled.meta["chunks"] == cited
        with torch.no_grad():
            weight.copy_(saved)  # the weights back as they were: the states filled since are stale
        assert store.stale(cited, neocortex.model_name, hidden.weights(neocortex)) == cited
    finally:
        with torch.no_grad():
            weight.copy_(saved)
        engram.close()


@pytest.mark.slow
def test_once_the_weights_change_the_idle_worker_refreshes_the_stale_states(
        embedder, neocortex, tmp_path: Path) -> None:
    """A ttt or cls learn changes the weights and every earlier document's states go stale; they
    were left out of answers until the next sleep. Now the idle worker refreshes them, gives way
    to other work, and its upkeep does not count as the person's activity (sleep still comes)."""
    engram, path = _engram(embedder, neocortex, tmp_path, "rag,hidden", critic="off",
                           **{"rag.sentence_rerank": 0})  # no window fill: the states are the only refresh
    hidden, store, worker = engram.engine("hidden"), ChunkStateStore(engram.db), engram.worker
    document = engram.docs.get(path).id
    weight = neocortex.model.model.layers[-1].mlp.down_proj.weight
    saved = weight.detach().clone()

    def stale() -> list[int]:
        return store.missing_documents(neocortex.model_name, hidden.weights(neocortex))

    try:
        assert stale() == [] and not worker.on_idle()  # all current: nothing queued
        with torch.no_grad():  # as a document learned into the weights changes them
            weight.mul_(1.05)
        assert stale() == [document]
        engram.queue.enqueue(LEARN, "other", {"document_id": 999, "engine": "hidden"})  # work waits
        assert not worker.on_idle()  # nothing is queued over other work
        worker.drain(kinds=[LEARN])
        assert worker.on_idle() and not worker.on_idle()  # queued once
        engram.queue.enqueue(LEARN, "other", {"document_id": 999, "engine": "hidden"})  # arrives meanwhile
        worker.drain(kinds=[REFRESH])
        assert stale() == [document]  # gave way between documents
        worker.drain(kinds=[LEARN])
        person = activity.last_active(engram.db)
        time.sleep(1.1)  # jobs keep whole seconds
        assert worker.on_idle()  # queued again once idle
        worker.drain(kinds=[REFRESH])
        assert stale() == [] and not worker.on_idle()
        assert hidden.contribute(Query(text=QUESTION)).meta["stale"] == []
        assert activity.last_active(engram.db) == person  # upkeep: not the person's activity
    finally:
        with torch.no_grad():
            weight.copy_(saved)
        engram.close()


def _learned_ttt_state(engine, neocortex) -> dict:
    """A learned ttt state without training: one neuron's rows of the last learning layer
    changed, and the learned delta given half the weight, as after a document."""
    state = engine.state_dict()
    last = state["layers"][-1]
    dual = decoder_layers(neocortex.model)[last].mlp
    rows = torch.tensor([7])
    written = {"ids": rows, "gate": dual.gate[rows] * 1.5, "up": dual.up[rows], "down": dual.down[rows] * 2}
    return {**state, **{f"layer{last}.{k}": v for k, v in written.items()}, "documents": 1, "revision": 1,
            "alpha": 0.5}


@pytest.mark.slow
def test_hidden_fill_in_a_fresh_process_computes_with_the_learned_weights_the_app_answers_with(
        embedder, neocortex, tmp_path: Path) -> None:
    data, engines = tmp_path / "data", "rag,ttt,hidden"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ferrow.md").write_text(DOC)
    engram = open_engram(embedder, engines=engines, data_dir=data)
    engram.adopt_neocortex(neocortex)
    ttt = engram.engine("ttt")
    try:
        engram.ingest([folder])
        engram.run_pending()  # indexed only: its states come from the fill below
        ttt.load_state_dict(_learned_ttt_state(ttt, neocortex))  # saved as the live state
    finally:
        ttt.close()  # the session's model as a fresh process loads it: the original weights
        engram.close()
    base = WeightFingerprint()(neocortex.model)

    # `engram hidden fill` in its own process, its model read from the dequantized copy already made
    (data / "cache" / "torch").mkdir(parents=True)
    (data / "cache" / "torch" / neocortex.folder.name).symlink_to(neocortex.folder)
    env = {**os.environ, "ENGRAM_DATA_DIR": str(data), "ENGRAM_ENGINES": engines}
    done = subprocess.run([sys.executable, "-m", "app.cli", "hidden", "fill"], env=env, capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and "Filled 1 document(s)" in done.stdout, (done.stdout, done.stderr)

    app = open_engram(embedder, engines=engines, data_dir=data)  # the running app, answering
    app.adopt_neocortex(neocortex)
    try:
        hidden = {c.engine: c for c in app.chat.contributions(Query(text=QUESTION))}["hidden"]
        weights = app.engine("hidden").weights(neocortex)
        assert weights != base  # ttt's learned rows are in the weights the app answers with
        assert ChunkStateStore(app.db).missing_documents(neocortex.model_name, weights) == []
        assert hidden.meta["stale"] == [] and hidden.meta["chunks"] and hidden.logit_bias, hidden.notes
    finally:
        app.engine("ttt").close()
        app.close()


def test_sleep_and_a_documents_learning_run_the_tier_after_the_engines_that_change_the_weights(
        embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    engram = open_engram(embedder, engines="rag,hidden,ace,ttt")  # the tier listed before ttt
    order: list[str] = []
    try:
        assert engram.ingestor.learners == ["ttt", "hidden"]
        for engine in engram.engines:  # what each sleep does is its own: here only the order is seen
            monkeypatch.setattr(engine, "consolidate", lambda budget, progress=None, name=engine.name: (
                order.append(name), ConsolidateReport(engine=name, seconds=0.0, changed=False))[1])
        engram.sleep(seconds=1)
        assert order == ["rag", "ace", "ttt", "hidden"]
    finally:
        engram.close()
