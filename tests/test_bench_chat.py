"""`engram bench chat` end to end at a tiny size (the figures themselves are the bench's business)."""

from __future__ import annotations

import pytest

from app.bench.chat import run_chat_bench
from app.settings import load_settings


@pytest.mark.slow
def test_chat_bench_runs_and_reports_every_part() -> None:
    lines: list[str] = []
    report = run_chat_bench(load_settings().settings, questions=2, chunks=400, runs=1,
                            echo=lines.append)
    assert report.speed.raw_tokens_per_s > 0 and report.speed.engram_tokens_per_s > 0
    assert report.isolation.isolated and report.isolation.isolated_tokens_per_s > 0
    assert report.isolation.process_start_s is not None
    assert report.retrieval.chunks >= 400 and report.retrieval.contribute_p50_ms > 0
    assert [a.logit_bias for a in report.accuracy] == [False, True]
    assert all(a.questions == 2 for a in report.accuracy)
    assert any("tokens/s" in line and "ratio" in line for line in lines)
    assert any(line.startswith("isolation") and "own process" in line for line in lines)
