"""The stream mode of the learning bench: documents over simulated days, a sleep between days,
accuracy on every day so far after each day, and the CLS arm's experts and events."""

from __future__ import annotations

import json

import pytest

from app.bench.learn_sets import load_set
from app.bench.learn_stream import StreamDay, forgetting_figures, run_stream_bench, split_days
from app.settings import load_settings


def test_days_split_the_documents_in_order_and_refuse_more_days_than_documents() -> None:
    tiny = load_set("natural", "tiny", 0)  # 8 documents
    names = [d.file_name for d in tiny.documents]
    assert split_days(tiny, 3) == [names[0:3], names[3:5], names[5:8]]
    assert split_days(tiny, 2, limit=2) == [[names[0]], [names[1]]]
    with pytest.raises(ValueError, match="1 to 2 days"):
        split_days(tiny, 3, limit=2)


def test_forgetting_is_the_drop_from_the_best_and_transfer_from_right_after_learning() -> None:
    days = [StreamDay(day=1, documents=["a"], learn_seconds=1, accuracy=[0.5], seen_accuracy=0.5, drift=0),
            StreamDay(day=2, documents=["b"], learn_seconds=1, accuracy=[0.75, 0.5], seen_accuracy=0.6, drift=0),
            StreamDay(day=3, documents=["c"], learn_seconds=1, accuracy=[0.25, 0.5, 1.0], seen_accuracy=0.6,
                      drift=0)]
    forgetting, transfer = forgetting_figures(days)
    assert forgetting == pytest.approx(((0.75 - 0.25) + 0.0) / 2)
    assert transfer == pytest.approx(((0.25 - 0.5) + 0.0) / 2)


@pytest.mark.slow
def test_the_cls_arm_streams_two_days_and_writes_its_json(neocortex, tmp_path) -> None:
    settings = load_settings(cli={"cls.passes": "1", "cls.batch_tokens": "128", "cls.replay_tokens": "0",
                                  "cls.probe_tokens": "64", "cls.fisher_tokens": "64", "cls.sleep_episodes": "4",
                                  "cls.own_replay": "0", "cls.clone_distill_steps": "1",
                                  "cls.rehearsal_source": "extract"}).settings  # the stream, not the material
    lines: list[str] = []
    report = run_stream_bench(settings, ["cls"], 2, set_name="templated", size="tiny", limit=2, sleep=3,
                              echo=lines.append, cortex=neocortex, drift_chars=1000)
    saved = json.loads(next((settings.data_dir / "bench").glob("learn-stream-*.json")).read_text())
    assert {"days", "documents", "questions", "base_accuracy", "base_perplexity", "arms"} <= set(saved)
    arm = saved["arms"]["cls"]
    assert {"final_accuracy", "forgetting", "backward_transfer", "grown", "pruned", "days"} <= set(arm)
    assert report.documents == 2 and len(arm["days"]) == 2
    first, second = arm["days"]
    assert len(first["accuracy"]) == 1 and len(second["accuracy"]) == 2
    assert first["events"][0] == "grow: the first expert" and first["sleep"] is not None
    assert any(e.startswith(("sleep: kept", "rollback: ")) for e in first["events"])
    assert second["sleep"] is None  # no night after the last day
    assert sum(e["documents"] for e in second["experts"]) == 2 and sum(e["routed"] for e in second["experts"]) > 0
    assert any(line.startswith("| cls | ") for line in lines)
