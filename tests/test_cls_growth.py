"""CLS growth on the real embedded model: a document whose passages each sit close to a different
expert is not novel, yet no one expert covers it, so the routing gate's entropy grows a new expert
(logged with its reason); every grown clone is distilled from its parent on the new document,
with its steps and KL logged, and the KL falls."""

from __future__ import annotations

import math

import pytest

from engines.base import DocumentInput
from store.cls_episodes import ClsEpisodeStore
from store.metrics_log import MetricsLog
from tests.helpers import open_engram

TOPICS = [
    ("Loudurk Zestaestox was born in 1946 in the town of Stikecaend. Loudurk Zestaestox keeps a lynx "
     "named Thielor in a wooden barn."),
    ("The freighter Ombrevane carries copper ore from the port of Kalvessa every winter. Her captain "
     "logs the tides twice a day."),
    ("A bowl of quorra soup needs three roasted turnips and a spoon of smoked salt. Simmer the soup "
     "for forty minutes before serving."),
]
MIXED = " ".join(t.split(". ")[0] + "." for t in TOPICS)  # one sentence of each topic
FAST = {"cls.passes": 1, "cls.batch_tokens": 128, "cls.replay_tokens": 0, "cls.own_replay": 0,
        "cls.probe_tokens": 0, "cls.fisher_tokens": 64,
        "cls.rehearsal_source": "extract"}  # growth, not the material: the fast one


@pytest.mark.slow
def test_gate_entropy_grows_a_distilled_clone_with_its_reason_logged(embedder, neocortex) -> None:
    engram = open_engram(embedder, engines="rag,cls", **FAST)
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    try:
        reports = [engine.learn(DocumentInput(document_id=n + 1, path=f"t{n}.txt", chunks=[text]))
                   for n, text in enumerate(TOPICS)]
        assert [r.details["event"] for r in reports] == ["grow"] * 3 and len(engine.experts) == 3
        assert all(r.details["grown_by"] == "novelty" for r in reports[1:])

        mixed = engine.learn(DocumentInput(document_id=9, path="mixed.txt", chunks=[MIXED])).details
        assert mixed["novelty"] < engine.config.novelty  # every passage is close to some expert
        assert mixed["gate_entropy"] == pytest.approx(math.log(3), abs=1e-3)  # ... each to another one
        assert mixed["event"] == "grow" and mixed["grown_by"] == "gate_entropy" and mixed["expert"] == 3
        assert mixed["reason"].startswith(f"gate entropy 1.10 > {engine.config.gate_entropy}: cloned from expert ")

        grown = ClsEpisodeStore(engram.db).events(20)[-1]
        assert grown.kind == "grow" and grown.slot == 3 and grown.reason == mixed["reason"]
        assert grown.figures["distill_steps"] == engine.config.clone_distill_steps == 4
        assert "distilled 4 steps (KL to it" in grown.reason
        for details in (reports[1].details, reports[2].details, mixed):  # every clone, distilled
            assert details["distill_steps"] == 4
            assert 0 < details["kl_after"] < details["kl_before"]
        cloned = [m for m in MetricsLog(engine.context.data_dir).read() if m["phase"] == "clone"]
        assert len(cloned) == 12 and {m["expert"] for m in cloned} == {1, 2, 3}
    finally:
        engine.close()
        engram.close()


@pytest.mark.slow
def test_without_noise_a_clone_is_its_parent_exactly(embedder, neocortex) -> None:
    engram = open_engram(embedder, engines="rag,cls", **FAST, **{"cls.clone_noise": 0.0})
    engram.adopt_neocortex(neocortex)
    engine = engram.engine("cls")
    try:
        for n, text in enumerate(TOPICS[:2]):
            details = engine.learn(DocumentInput(document_id=n + 1, path=f"t{n}.txt", chunks=[text])).details
        assert details["grown_by"] == "novelty" and details["kl_before"] == 0.0
    finally:
        engine.close()
        engram.close()
