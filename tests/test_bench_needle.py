"""``engram bench needle``: needles planted in ordinary prose, one vault each, asked back three
ways (closed book, in context, from the d2l adapter) per document length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.bench.needle import needle_set


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_each_document_holds_its_own_needle_in_filler_of_the_length_asked(neocortex) -> None:
    chosen = needle_set(neocortex, [64, 512], trials=2, seed=3)
    assert [d.file_name for d in chosen.documents] == ["needle-00064-0.txt", "needle-00064-1.txt",
                                                       "needle-00512-0.txt", "needle-00512-1.txt"]
    vaults = set()
    for document, question in zip(chosen.documents, chosen.questions):
        vault = question.question.removeprefix("What is the access code of the ").removesuffix(" vault?")
        vaults.add(vault)
        assert f"The access code of the {vault} vault is {question.answer}." in document.text
        assert question.answer not in question.question and question.doc_file == document.file_name
        tokens = len(neocortex.tokenizer(document.text)["input_ids"])
        assert tokens >= int(document.file_name[7:12])
    assert len(vaults) == 4 and len({q.answer for q in chosen.questions}) == 4
    assert needle_set(neocortex, [64], 1, seed=3).documents[0] == chosen.documents[0]  # seeded


@pytest.mark.slow
def test_engram_bench_needle_reports_every_arm_per_length(isolated_dirs, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from app.cli import cli

    out = tmp_path / "needle.json"
    result = CliRunner().invoke(cli, ["bench", "needle", "--lengths", "48", "--trials", "1", "--threads", "1",
                                      "--d2l-train-seconds", "15", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["hypernetwork_steps"] >= 1 and [r["tokens"] for r in report["rows"]] == [48]
    row = report["rows"][0]
    assert row["fits"] and row["documents"] == 1 and row["base"] == 0.0
    assert row["in_context"] == 1.0  # a short document in the prompt: the model reads the number back
    assert 0 < row["learn_seconds"]
    assert "Needle recall" in result.output and "in context" in result.output
