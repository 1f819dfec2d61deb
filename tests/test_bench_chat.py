"""`engram bench chat` end to end at a tiny size (the figures themselves are the bench's business)."""

from __future__ import annotations

import pytest

from app.bench.chat import exact_match, run_chat_bench
from app.settings import load_settings


def test_exact_match_accepts_a_short_sentence_ending_in_the_answer() -> None:
    assert exact_match("1989", "1989") and exact_match("He was born in 1989.", "1989")
    assert not exact_match("1989 or maybe 1990, it is hard to say from these sources", "1989")
    assert not exact_match("The answer is 1988.", "1989")


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
