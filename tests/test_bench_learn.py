"""``engram bench learn`` on the smallest fictional set (3 documents): every engine next to the base model, both
sides measured, a JSON report and a plot the UI finds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench.learn import latest_learn_report, run_learn_bench
from app.settings import load_settings


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three models' worth of scoring: minutes on a busy 2-core machine
def test_bench_learn_all_on_the_smallest_set(neocortex, isolated_dirs) -> None:
    settings = load_settings(cli={"ttt.passes": "1", "ttt.calibration_tokens": "512",
                                  "ttt.batch_tokens": "256", "ttt.rehearsal_paraphrase": "false"}).settings
    lines: list[str] = []
    report = run_learn_bench(settings, ["all"], size=3, free_text=False, speed=False,
                             echo=lines.append, cortex=neocortex, sleep=60)
    labels = [r.label for r in report.runs]
    assert labels == ["base model (closed book)", "rag", "ttt", "ttt +sleep"]  # retrieval does not sleep
    base, rag, ttt, slept = report.runs
    assert report.documents == 3 and report.questions >= 10 and report.general_known > 0
    assert report.heldout_known > 0 and base.forgot.heldout_forgetting_ratio == 0.0
    assert base.forgot.perplexity > 1 and rag.forgot.perplexity_drift == 0.0
    assert rag.after.choice_accuracy > base.after.choice_accuracy  # open book beats closed book
    assert ttt.kind == "weights" and ttt.document_tokens > 0 and ttt.tokens_per_second > 0
    assert ttt.forgot.perplexity == base.forgot.perplexity  # held-out prose is about nothing learned
    assert ttt.forgot.heldout_forgetting_ratio is not None and ttt.forgot.unrouted.heldout_forgetting_ratio is not None
    assert ttt.forgot.unrouted.perplexity != base.forgot.perplexity  # ... but the weights changed
    assert slept.details["sleep"]["steps"] >= 1
    assert ttt.details["config"]["passes"] == 1 and ttt.details["config"]["sleep_open"] == "quiet"
    assert slept.forgot.unrouted.perplexity != ttt.forgot.unrouted.perplexity
    assert slept.learn_seconds == ttt.learn_seconds
    assert any(line.startswith("ttt +sleep") and "+ sleep" in line and "(unrouted: " in line for line in lines)
    assert any(line.startswith("minimum bar for ttt +sleep") for line in lines)
    assert any(line.startswith("  and on the held-out general questions: forgetting") for line in lines)
    found = latest_learn_report(isolated_dirs["data"] / "bench")
    assert found is not None
    latest, plot = found
    assert latest.runs[2].after == ttt.after and plot is not None and plot.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(Path(report.json_path).read_text())["size"] == "3"
    assert neocortex.model.model.layers[-1].mlp.__class__.__name__ != "DualMLP"  # put back
