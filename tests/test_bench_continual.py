"""``engram bench continual``: digits in five tasks, the four arms, the JSON shape, and that the
numbers mean something (naive finetuning forgets; CLS holds what it learned)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from app.cli import cli


def test_continual_bench_json_shape_and_sanity(tmp_path) -> None:
    out = tmp_path / "continual.json"
    result = CliRunner().invoke(cli, ["bench", "continual", "--seeds", "0", "--threads", "1",
                                      "--json-out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "class-incremental" in result.output
    assert ("PASS" in result.output) or ("MISS" in result.output)
    report = json.loads(out.read_text())
    for arm in ("cls", "naive", "ewc", "replay"):
        numbers = report["arms"][arm]
        assert 0.0 <= numbers["average_accuracy"] <= 1.0
        assert -1.0 <= numbers["backward_transfer"] <= 1.0
    naive, cls_arm = report["arms"]["naive"], report["arms"]["cls"]
    assert naive["backward_transfer"] < -0.5  # sequential finetuning with a shared head forgets
    assert cls_arm["average_accuracy"] > naive["average_accuracy"]
    assert cls_arm["backward_transfer"] > naive["backward_transfer"]
    assert len(report["arms"]["cls"]["matrix"]) == 5 and len(report["tasks"]) == 5
