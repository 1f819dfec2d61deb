"""What went into the weights over time, as the Weights tab shows it: documents the weight-writing
engines learned (read from the real episode log the learn jobs write) and each sleep's outcome."""

from __future__ import annotations

import importlib

import pytest

from app.jobs.learning import LearnJobs
from engines.base import LearnReport
from engines.registry import engine_class, registered
from store import activity
from tests.helpers import open_engram, wait_for
from tests.browser import App

ROLLED_BACK = ("rolled back: background prose's perplexity rose from 22.510 to 23.010, more than 2.0% "
               "above both that and the original model's 22.400")


def record_history(engram) -> None:
    """Three documents as the learn jobs record them (one by retrieval only, one that changed
    nothing), then a kept sleep, a rolled-back one and one cut short."""
    jobs = LearnJobs(engram.db, engram.engine)
    jobs.record(LearnReport(engine="ttt", path="/notes/ferry.txt", seconds=41.5, tokens=900, changed=True), 1)
    jobs.record(LearnReport(engine="rag", path="/notes/ferry.txt", seconds=0.2, changed=True), 1)
    jobs.record(LearnReport(engine="ttt", path="/notes/tides.md", seconds=38.0, changed=True), 2)
    jobs.record(LearnReport(engine="ttt", path="/notes/empty.md", seconds=0.1, changed=False), 3)
    activity.record_sleep(engram.db, "idle", False, [{"engine": "ttt", "changed": True, "details": {}},
                                                    {"engine": "rag", "changed": False}])
    activity.record_sleep(engram.db, "manual", False,
                          [{"engine": "ttt", "changed": False, "details": {"reason": ROLLED_BACK}}])
    activity.record_sleep(engram.db, "idle", True, [])


def test_documents_learned_into_weights_and_each_sleeps_outcome(embedder) -> None:
    from ui.plots import weights_figure

    engram = open_engram(embedder)
    try:
        assert engram.weights_history().learned == [] and weights_figure(engram.weights_history()) is None
        record_history(engram)
        history = engram.weights_history()
        assert [(e.engine, e.path, e.seconds) for e in history.learned] == [
            ("ttt", "/notes/ferry.txt", 41.5), ("ttt", "/notes/tides.md", 38.0)]
        assert [(s.outcome, s.why) for s in history.sleeps] == [
            ("kept", ""), ("rolled back", ROLLED_BACK), ("cut short", "new work or a question came")]
        figure = weights_figure(history)
        labels = figure.axes[0].get_legend_handles_labels()[1]
        assert labels == ["documents learned", "sleep: kept", "sleep: rolled back", "sleep: cut short"]
    finally:
        engram.close()


@pytest.mark.parametrize("name", sorted(registered()))
def test_the_registry_says_which_engines_write_weights_as_their_classes_do(name: str) -> None:
    importlib.import_module(registered()[name].engine.partition(":")[0])
    assert registered()[name].writes_weights == engine_class(name).writes_weights


@pytest.mark.browser
@pytest.mark.slow
def test_the_weights_tab_plots_what_was_learned_and_the_sleeps(page, embedder, llama) -> None:
    from playwright.sync_api import expect

    app = App(embedder, llama)
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Weights").click()
        expect(page.get_by_text("Nothing has been learned into the weights yet")).to_be_visible()
        expect(page.locator("#engram-weights-plot")).to_be_hidden()
        record_history(app.engram)
        wait_for(lambda: len(app.engram.weights_history().sleeps) == 3)
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("tab", name="Weights").click()
        expect(page.locator("#engram-weights-plot img")).to_be_visible()
        learned = page.locator("#engram-weights-learned")
        expect(learned.locator("[role=row]", has_text="tides.md")).to_contain_text("ttt")
        expect(learned).not_to_contain_text("empty.md")
        sleeps = page.locator("#engram-weights-sleeps")
        expect(sleeps.locator("[role=row]", has_text="rolled back")).to_contain_text("perplexity rose")
        expect(sleeps).to_contain_text("cut short")
        expect(page.get_by_text("Nothing has been learned into the weights yet")).to_be_hidden()
    finally:
        app.close()
