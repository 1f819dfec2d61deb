"""Concurrent chat while files pour in: every answer arrives, nothing deadlocks, the store stays
consistent (the full-size figures come from `engram bench load`)."""

from __future__ import annotations

import pytest

from app.bench.load import run_load_bench
from app.settings import load_settings


@pytest.mark.slow
def test_concurrent_chat_during_ingest() -> None:
    lines: list[str] = []
    report = run_load_bench(load_settings().settings, files=300, chats=6, deadline_s=600,
                            echo=lines.append)
    assert report.chat_ok == 6 and report.chat_errors == []
    assert not report.deadlocked and report.consistent
    assert any("PASS" in line for line in lines)
