"""Bench: the latest learning benchmark — what each engine learned against what it forgot.

The figures come from ``engram bench learn`` (the report and plot under the data folder's
``bench/``); running the bench is left to the command line because it takes minutes to hours.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from app.core import Engram
from ui.errors import friendly
from ui.formatting import local_time
from ui.tab import Tab

if TYPE_CHECKING:
    from app.core import Forgot, LearnBenchReport

COLUMNS = ["Run", "Kind", "Answers right", "Exact", "Looped", "Choice before", "Choice after",
           "Forgot (free text)", "Forgot (choice)", "Perplexity drift", "Unrouted drift / forgetting",
           "Learn time", "Tokens/s"]
EMPTY = ("<div class='engram-card engram-muted'>No learning benchmark has run on this computer yet. "
         "Run <code>engram bench learn --engine all</code> in a terminal (it takes a while on a "
         "CPU); its table and plot then show here.</div>")


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def run_rows(report: LearnBenchReport) -> list[list[Any]]:
    return [[run.label, run.kind, _share(run.after.contains), _share(run.after.exact_match),
             "" if run.after.loops is None else str(run.after.loops),
             f"{run.before.choice_accuracy:.3f}", f"{run.after.choice_accuracy:.3f}",
             _share(run.forgot.free_text_forgetting), _forgetting(run.forgot),
             f"{100 * run.forgot.perplexity_drift:+.2f}%", _unrouted(run.forgot),
             f"{run.learn_seconds:.0f} s" if run.learn_seconds else "",
             f"{run.tokens_per_second:.0f}" if run.tokens_per_second else ""] for run in report.runs]


def _forgetting(f: Forgot) -> str:
    """The bench's general questions, then the held-out ones (reports that have them)."""
    heldout = f.heldout_forgetting_ratio
    return f"{f.forgetting_ratio:.3f}" + (f" (held-out {heldout:.3f})" if heldout is not None else "")


def _unrouted(forgot: Forgot) -> str:
    """Drift and forgetting with the learned weights applied to every answer (routing engines)."""
    f = forgot.unrouted
    return f"{100 * f.perplexity_drift:+.2f}% / {_forgetting(f)}" if f is not None else ""


def summary_html(report: LearnBenchReport) -> str:
    speed = "".join(f"<li>{escape(s.label)}: a {s.tokens}-token document learned in {s.seconds:.1f} s "
                    f"({s.tokens_per_second:.0f} tokens/s)</li>" for s in report.speed)
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return (f"<div class='engram-card'>Latest run {escape(local_time(report.created_at))}: the "
            f"<strong>{escape(report.set)}</strong> fictional set <strong>{escape(report.size)}</strong> "
            f"({report.documents} documents, {report.questions} questions) on {escape(report.model)} "
            f"({escape(report.device)}). <em>Answers right</em> is the share of written answers that "
            "contain the right answer (<em>exact</em>: that are it), <em>looped</em> how many began "
            "repeating themselves; <em>choice</em> is 4-way answer choice by likelihood (0.25 is "
            "chance). <em>Forgot</em> is the share of general questions it answered right before and "
            "no longer does, in written answers and by choice (in brackets: held-out general "
            "questions no default was chosen on), and the perplexity drift on held-out general "
            "text; <em>unrouted</em> is the same with the learned weights applied to every answer."
            f"{f'<ul>{speed}</ul>' if speed else ''}{f'<ul>{notes}</ul>' if notes else ''}</div>")


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    summary = gr.HTML()
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, visible=False,
                         elem_id="engram-bench-runs")
    plot = gr.Image(show_label=False, type="pil", interactive=False, visible=False,
                    elem_id="engram-bench-plot")

    def view() -> tuple[Any, Any, Any]:
        found = engram.latest_learn_report()
        if found is None:
            return EMPTY, gr.update(visible=False), gr.update(visible=False)
        report, image = found
        return (summary_html(report), gr.update(value=run_rows(report), visible=True),
                gr.update(value=Image.open(image) if image else None, visible=image is not None))

    blocks.load(friendly(view), None, [summary, table, plot])
    tab.select(friendly(view), None, [summary, table, plot])


TAB = Tab("Bench", build)
