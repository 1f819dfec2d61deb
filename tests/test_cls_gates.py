"""The learned gates on the language model (cls.router = softmax | kwta): keys answer until a sleep
trains the gate on the replay buffer; then the gate routes questions (k-WTA: only its winner is
loaded and run) and documents (only the routed expert gets gradients); the gate is saved with the
engine, carried by bundles, and the bench runs one cls row per router."""

from __future__ import annotations

import pytest
import torch

from engines.base import Budget, DocumentInput, Query, routed
from engines.bundle_state import StateRefused, TensorInfo
from engines.cls.bundle_state import BUNDLE_STATE
from store.metrics_log import MetricsLog
from tests.helpers import open_engram
from tests.test_cls_growth import TOPICS

FAST = {"cls.passes": 1, "cls.batch_tokens": 128, "cls.replay_tokens": 0, "cls.own_replay": 0,
        "cls.probe_tokens": 0, "cls.fisher_tokens": 64, "cls.clone_distill_steps": 0,
        "cls.rehearsal_source": "extract"}  # the gates, not the material: the fast one
ASK_SOUP = "How many roasted turnips go into a bowl of quorra soup?"
AGAIN = ("Loudurk Zestaestox was born in 1946 in the town of Stikecaend, where Loudurk Zestaestox keeps "
         "a lynx named Thielor in a wooden barn.")  # close to the first topic: routed, not grown


@pytest.mark.slow
def test_a_kwta_gate_trained_in_sleep_routes_questions_and_documents(embedder, neocortex) -> None:
    engram = open_engram(embedder, engines="rag,cls", **FAST, **{"cls.router": "kwta"})
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    try:
        for n, text in enumerate(TOPICS):
            engine.learn(DocumentInput(document_id=n + 1, path=f"t{n}.txt", chunks=[text]))
        assert list(engine.experts) == [0, 1, 2]
        before = engine.contribute(Query(text=ASK_SOUP))  # no sleep yet: keys answer, and say so
        assert before.meta["router"] == "keys" and before.meta["routed_share"] > 0
        assert "kwta gate is not trained yet" in before.notes[-1]

        slept = engine.consolidate(Budget(seconds=120, steps=1)).details
        gate = slept["gate"]
        assert gate["trained"] and gate["kind"] == "kwta" and gate["experts"] == [0, 1, 2]
        assert gate["accuracy"] > 0.9 and gate["examples"] == engine.episodes.count()
        assert any(m["phase"] == "gate" for m in MetricsLog(engine.context.data_dir).read())

        asked = engine.contribute(Query(text=ASK_SOUP))
        assert asked.meta["router"] == "kwta" and "router: k-WTA gate" in asked.notes[0]
        found = engine.routing([ASK_SOUP, "How many legs does a spider have?"])
        assert found.slots == [2] and found.by == ["kwta", "none"]  # one winner; unrelated: the base model
        assert float(found.weights[0, 0]) == pytest.approx(float(found.share[0]))

        engine.config = engine.config.model_copy(update={"router": "softmax"})  # the same gate, dense
        dense = engine.routing([ASK_SOUP])
        assert dense.by == ["softmax"] and 2 in dense.slots
        mixture = engine._usable_gate()[0].weights(torch.from_numpy(embedder.embed([ASK_SOUP])), {0, 1, 2})
        assert (mixture > 0).all()  # every expert weighs something; those under 0.1% are not run
        run = {s: float(mixture[0, s]) for s in range(3) if float(mixture[0, s]) >= 1e-3}
        assert dense.slots == sorted(run) and float(dense.weights[0].sum()) == pytest.approx(
            sum(run.values()) * float(dense.share[0]), abs=1e-5)
        engine.config = engine.config.model_copy(update={"router": "kwta"})

        # a document close to the first topic goes where the gate sends it; only that expert trains
        was = {s: engine.pool.expert(s) for s in (0, 1, 2)}
        went = engine.learn(DocumentInput(document_id=9, path="again.txt", chunks=[AGAIN])).details
        assert went["event"] == "route" and went["router"] == "kwta" and went["expert"] == 0
        assert went["reason"].endswith("expert 0 (k-WTA gate)")
        now = {s: engine.pool.expert(s) for s in (0, 1, 2)}
        assert not all(torch.equal(was[0][k], now[0][k]) for k in was[0])
        assert all(torch.equal(was[s][k], now[s][k]) for s in (1, 2) for k in was[s])

        # saved with the engine: a fresh one loads the gate and loads only the winner it routes to
        state = {k: v for k, v in engine.gate_state.items()}
        engine.close()
        fresh = type(engine)(engine.context, engine.config)
        engine = fresh
        fresh.cortex()
        assert fresh.gate_state is not None and all(torch.equal(fresh.gate_state[k], v) for k, v in state.items())
        with neocortex.lock, torch.no_grad(), routed(neocortex, [ASK_SOUP]):
            pass
        assert fresh.pool.slots() == [2]  # the losers were never loaded
        assert all(k in fresh.state_dict() for k in state)

        # a bundle carries it, and its header is checked
        carried = BUNDLE_STATE.learned(fresh, fresh.blobs)
        assert carried is not None and torch.equal(carried["gate.slots"], state["gate.slots"])
    finally:
        engine.close()
        engram.close()


def test_a_bundles_gate_is_checked_before_it_is_read() -> None:
    ok = {"gate.weight": TensorInfo("F32", [3, 384]), "gate.bias": TensorInfo("F32", [3]),
          "gate.slots": TensorInfo("I64", [3])}
    BUNDLE_STATE._check_gate(ok, experts=3, dim=384)
    BUNDLE_STATE._check_gate({}, experts=3, dim=384)  # no gate: keys route until a sleep
    bad = [({**ok, "gate.weight": TensorInfo("F32", [3, 16])}, "gate.weight"),
           ({**ok, "gate.slots": TensorInfo("I64", [5])}, "gate.slots"),  # more than the experts
           ({**ok, "gate.bias": TensorInfo("BOOL", [3])}, "gate.bias"),
           ({k: v for k, v in ok.items() if k != "gate.bias"}, "gate")]
    for tensors, field in bad:
        with pytest.raises(StateRefused) as refused:
            BUNDLE_STATE._check_gate(tensors, experts=3, dim=384)
        assert refused.value.field == field


def test_the_learning_bench_runs_cls_once_per_router() -> None:
    from app.bench.learn import _variants, routed_by, run_learn_bench
    from engines.cls.engine import CLSEngine
    from app.settings import load_settings

    variants = _variants(["rag+cls", "ttt"], False, None, ["keys", "kwta", "softmax"])
    assert variants == [("rag+cls", "rag+cls", {"router": "kwta"}), ("ttt", "ttt", {})]  # its sleep trains the gate
    assert _variants(["cls"], False, None, ["keys"]) == [("cls", "cls", {"router": "keys"})]
    with pytest.raises(ValueError, match="unknown cls router"):
        run_learn_bench(load_settings(), ["cls"], cls_routers=["keys", "moe"], sleep=10)
    with pytest.raises(ValueError, match="needs --sleep"):
        run_learn_bench(load_settings(), ["cls"], cls_routers=["keys", "kwta"])

    engram = open_engram()
    try:
        engine = CLSEngine(engram.engine_context)  # no model loaded: its settings are what is switched
        with routed_by([engine], "softmax"):
            assert engine.config.router == "softmax"
        assert engine.config.router == "keys"
    finally:
        engram.close()
