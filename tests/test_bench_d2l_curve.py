"""``engram bench d2l-curve``: one hypernetwork meta-trained up to each budget in turn, the test
documents learned and asked closed book after each, the base model's scores as the floor, and a
plot of the scores against meta-training time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench.d2l_curve import budgets
from app.bench.learn_sets import load_set


def test_budgets_must_grow_because_the_training_resumes() -> None:
    assert budgets("60, 180,300") == [60.0, 180.0, 300.0]
    for bad in ("", "0,60", "60,60", "300,60", "sixty"):
        with pytest.raises(ValueError):
            budgets(bad)


@pytest.mark.slow
def test_engram_bench_d2l_curve_scores_each_budget_and_plots_them(isolated_dirs, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from app.bench import d2l_curve
    from app.cli import cli

    def first_document(*args, **kwargs):  # three questions about one document keep it in CI's time
        found = load_set(*args, **kwargs)
        kept = found.documents[:1]
        asked = [q for q in found.questions if q.doc_file == kept[0].file_name][:3]
        return found.model_copy(update={"documents": kept, "questions": asked})

    monkeypatch.setattr(d2l_curve, "load_set", first_document)

    out = tmp_path / "curve.json"
    result = CliRunner().invoke(cli, ["bench", "d2l-curve", "--seconds", "4,8", "--set", "templated", "--size", "3",
                                      "--threads", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["documents"] == 1 and report["questions"] >= 1
    first, second = report["points"]
    assert [first["budget_seconds"], second["budget_seconds"]] == [4.0, 8.0]
    assert 1 <= first["steps"] < second["steps"]  # the second budget resumed the first's training
    assert first["trained_seconds"] < second["trained_seconds"]
    for point in (first, second):
        after = point["after"]
        assert after["contains"] is not None and after["exact_match"] is not None and point["learn_seconds"] > 0
    assert report["base"]["contains"] is not None
    saved = Path(report["json_path"])
    assert saved.parent == isolated_dirs["data"] / "bench" and Path(report["plot_path"]).read_bytes()[:4] == b"\x89PNG"
    assert json.loads(saved.read_text())["points"] == report["points"]
    assert "d2l learned score against meta-training time" in result.output
