"""`engram bench ace` end to end at the smallest size (the figures are the bench's business)."""

from __future__ import annotations

import pytest

from app.bench.ace import run_ace_bench
from app.settings import load_settings


@pytest.mark.slow
def test_ace_bench_runs_and_reports_every_part() -> None:
    lines: list[str] = []
    report = run_ace_bench(load_settings().settings, n_train=1, n_test=1, echo=lines.append)
    assert (report.train_questions, report.test_questions, report.epochs) == (1, 1, 1)
    assert len(report.steps) == 1 and report.answer_s > 0
    assert report.test_after.all >= 0 and report.bullets == len(report.bullet_texts)
    text = "\n".join(lines)
    for part in ("empty playbook:", "hand-written units:", "after 1 epoch(s):", "playbook:",
                 "Generate-Reflect-Curate cycle:"):
        assert part in text
