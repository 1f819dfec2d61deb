"""The Memory tab in a real headless chromium, over a data folder holding CLS events and sleep
pressure written through the store's own API (what the CLS engine writes as it learns and sleeps)."""

from __future__ import annotations

import pytest

from store.cls_episodes import ClsEpisodeStore
from store.sleep_pressure import PressureReading, SleepPressureLog
from tests.browser import App, no_error_badge, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def reading(saturation: float, novelty: float, forgetting: float, experts: int, fresh: int) -> PressureReading:
    return PressureReading(engine="cls", saturation=saturation, novelty=novelty, forgetting=forgetting,
                           figures={"experts": experts, "unconsolidated": fresh, "capacity": 16, "documents": 1,
                                    "threshold": 0.5})


def days_of_cls(engram) -> None:
    """Two documents, a kept sleep, a third document, a rolled-back sleep, a pruned expert and a
    sleep cut short, each followed by the pressure the engine records."""
    events, pressure = ClsEpisodeStore(engram.db), SleepPressureLog(engram.db)
    events.log("grow", "the first expert", 0, {"document_id": 1, "novelty": 1.0, "gate_entropy": 0.0})
    pressure.record(reading(1 / 16, 1.0, 0.0, 1, 1))
    events.log("route", "novelty 0.31 <= 0.4: expert 0", 0, {"document_id": 2, "novelty": 0.31, "gate_entropy": 0.69})
    pressure.record(reading(1 / 16, 0.655, 0.0, 1, 1))
    events.log("sleep", "kept: drift 0.004, forgetting 0.0", None,
               {"drift": 0.004, "forgetting": 0.0, "perplexity_before": 14.02, "perplexity_after": 14.08, "steps": 12})
    pressure.record(reading(0.0, 0.0, 0.0, 1, 0))
    events.log("grow", "novelty 0.72 > 0.4: cloned from expert 0", 1,
               {"document_id": 3, "novelty": 0.72, "gate_entropy": 0.0})
    pressure.record(reading(1 / 16, 0.72, 0.0, 2, 1))
    events.log("rollback", "perplexity drift 0.0350 > bound 0.02", None,
               {"drift": 0.035, "forgetting": 0.125, "perplexity_before": 14.08, "perplexity_after": 14.57, "steps": 9})
    events.log("prune", "not used in 30.0 days", 0)
    pressure.record(reading(1 / 16, 0.72, 0.125, 1, 1))
    events.log("interrupted", "the person came back after step 3 of 40: resumed at the next sleep", None,
               {"steps": 3, "planned": 40})


def test_memory_tab_plots_the_experts_pressure_and_sleeps_or_says_how_to_enable(page, embedder, llama) -> None:
    from playwright.sync_api import expect

    app = App(embedder, llama, engines="rag,cls")
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Memory").click()
        state = page.locator("#engram-memory-state")
        expect(state).to_contain_text("No document has been learned into an expert yet")
        expect(page.locator("#engram-memory-plot")).to_be_hidden()

        from store import activity
        from tests.helpers import wait_for

        wait_for(lambda: app.engram.state.get(activity.UI_INPUT))  # the click was the person being here
        days_of_cls(app.engram)
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("tab", name="Memory").click()
        expect(state).to_contain_text("3 document(s) learned into experts, 3 sleep(s).")
        expect(state).to_contain_text("Sleep pressure now 0.91 = saturation 0.06 + novelty 0.72 + forgetting 0.12")
        expect(state).to_contain_text("1 of 16 experts in use")
        expect(page.locator("#engram-memory-plot img")).to_be_visible()
        sleeps = page.locator("#engram-memory-sleeps")
        for text in ("kept", "+0.40%", "14.02 → 14.08", "rolled back", "+3.50%", "0.125",
                     "perplexity drift 0.0350 > bound 0.02", "cut short"):
            expect(sleeps).to_contain_text(text)
        events = page.locator("#engram-memory-events")
        expect(events).to_contain_text("not used in 30.0 days")
        expect(events).to_contain_text("cloned from expert 0")
        no_error_badge(page)
        assert "Traceback" not in page.content()
        shot(page, "ui-memory.png")

        app.engram.settings.engines = ["rag"]  # no CLS engine: one sentence, no plot, no tables
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("tab", name="Memory").click()
        expect(state).to_have_text("The Memory tab shows the CLS engine's experts and sleeps; to turn it on, "
                                   "add cls to engines in Settings (rag,cls).")
        expect(page.locator("#engram-memory-plot")).to_be_hidden()
        expect(sleeps).to_be_hidden()
        expect(events).to_be_hidden()
    finally:
        app.close()
