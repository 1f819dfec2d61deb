"""The Bench tab in a real headless chromium: it runs the smallest bench to completion while its
log and progress update, and shows the report as a table and the history as a plot.

Same fixtures as tests/test_ui.py (Debian chromium, never `playwright install`).
"""

from __future__ import annotations

import re

import pytest

from tests.browser import App, no_error_badge, shot, usable

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_bench_tab_runs_the_smallest_bench_and_plots_its_history(page, embedder, llama) -> None:  # noqa: F811
    from playwright.sync_api import expect

    app = App(embedder, llama)
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Bench").click()
        status = page.locator("#engram-bench-status")
        expect(status).to_contain_text("No bench has run since Engram started")
        expect(page.locator("#engram-bench-history-plot")).to_be_hidden()
        run, stop = page.locator("#engram-bench-run"), page.locator("#engram-bench-stop")
        expect(stop).to_be_disabled()
        expect(page.locator("#engram-bench-pick input")).to_have_value("Ingest")
        expect(page.locator("#engram-bench-size input[value='tiny']")).to_be_checked()

        run.click()
        # While it runs: the live card and log update, Run and the pickers are off, Stop is on.
        expect(status).to_contain_text("Running the Ingest bench (tiny)")
        expect(stop).to_be_enabled()
        expect(run).to_be_disabled()
        expect(page.locator("#engram-bench-pick input")).to_be_disabled()
        expect(page.locator("#engram-bench-log textarea")).to_have_value(re.compile("Generated 5 files"),
                                                                          timeout=60_000)
        assert app.engram.bench_runs.running

        # It ends by itself: the report as a table, the history as a plot, the controls back.
        expect(status).to_contain_text("finished in", timeout=240_000)
        expect(status).to_contain_text("ingest speed / raw embedding speed")
        report = page.locator("#engram-bench-report")
        expect(report).to_contain_text("ratio to raw")
        expect(report).to_contain_text("recall@10 at 1,000 vectors")
        expect(page.locator("#engram-bench-history-plot img")).to_be_visible()
        expect(page.locator("#engram-bench-history")).to_contain_text("done")
        usable(run)
        expect(stop).to_be_disabled()
        no_error_badge(page)
        assert "Traceback" not in page.content()
        assert [r.state for r in app.engram.bench_runs.history()] == ["done"]
        shot(page, "ui-bench-run.png")

        # After a reload the report and the plot are still there (read back from the data folder).
        page.reload()
        page.get_by_role("tab", name="Bench").click()
        expect(page.locator("#engram-bench-report")).to_contain_text("ratio to raw")
        expect(page.locator("#engram-bench-history-plot img")).to_be_visible()
    finally:
        app.close()
