"""Memory: what the CLS engine's two-speed memory did over time. Its experts against the pool's
capacity, how new each document was and how its passages spread over the experts (gate entropy),
growth and pruning with their reasons, the sleep pressure and its parts, and each sleep's result
(kept, rolled back or cut short, with the probe's figures). Plots first, then the tables.
"""

from html import escape
from typing import Any

import gradio as gr

from app.core import Engram, MemoryHistory
from ui.errors import friendly
from ui.formatting import local_time
from ui.plots import memory_figure
from ui.tab import Tab

SLEEP_COLUMNS = ["Slept", "Outcome", "Drift", "Forgetting", "Perplexity", "Steps", "Why"]
EVENT_COLUMNS = ["When", "Event", "Expert", "Why"]
OFF = ("The Memory tab shows the CLS engine's experts and sleeps; to turn it on, add cls to "
       "engines in Settings (rag,cls).")


def state_html(history: MemoryHistory) -> str:
    if not history.enabled:
        return f"<div class='engram-card'>{escape(OFF)}</div>"
    if history.empty:
        return ("<div class='engram-card'>No document has been learned into an expert yet: experts, "
                "sleep pressure and sleeps show here as they happen.</div>")
    text = f"{len(history.routed)} document(s) learned into experts, {len(history.sleeps)} sleep(s)."
    if history.pressure:
        now = history.pressure[-1]
        text += (f" Sleep pressure now {now.total:.2f} = saturation {now.saturation:.2f} + novelty "
                 f"{now.novelty:.2f} + forgetting {now.forgetting:.2f} (an idle sleep starts at "
                 f"{history.threshold:g}); {now.figures.get('experts', 0)} of {now.figures.get('capacity', 0)} "
                 f"experts in use, {now.figures.get('unconsolidated', 0)} not yet consolidated.")
    return f"<div class='engram-card'>{escape(text)}</div>"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"


def sleep_rows(history: MemoryHistory) -> list[list[Any]]:
    rows = []
    for s in reversed(history.sleeps):
        ppl = ("" if s.perplexity_before is None or s.perplexity_after is None
               else f"{s.perplexity_before:.2f} → {s.perplexity_after:.2f}")
        forgetting = "" if s.forgetting is None else f"{s.forgetting:.3f}"
        rows.append([local_time(s.ts), s.outcome, _percent(s.drift), forgetting, ppl,
                     "" if s.steps is None else s.steps, s.reason])
    return rows


def event_rows(history: MemoryHistory) -> list[list[Any]]:
    return [[local_time(c.ts), c.kind, "" if c.slot is None else c.slot, c.reason] for c in reversed(history.pool)]


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    state = gr.HTML(elem_id="engram-memory-state")
    plot = gr.Plot(show_label=False, format="png", visible=False, elem_id="engram-memory-plot")
    with gr.Row(equal_height=False):
        sleeps = gr.Dataframe(headers=SLEEP_COLUMNS, interactive=False, wrap=True, max_height=320, visible=False,
                              label="Sleeps", elem_id="engram-memory-sleeps", scale=3)
        events = gr.Dataframe(headers=EVENT_COLUMNS, interactive=False, wrap=True, max_height=320, visible=False,
                              label="Experts grown and recycled", elem_id="engram-memory-events", scale=2)

    def view() -> tuple[Any, ...]:
        history = engram.memory_history()
        figure = memory_figure(history) if history.enabled else None
        slept, changed = sleep_rows(history), event_rows(history)
        return (state_html(history), gr.update(value=figure, visible=figure is not None),
                gr.update(value=slept, visible=bool(slept)), gr.update(value=changed, visible=bool(changed)))

    outputs = [state, plot, sleeps, events]
    blocks.load(friendly(view), None, outputs)
    tab.select(friendly(view), None, outputs)


TAB = Tab("Memory", build)
