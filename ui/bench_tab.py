"""Bench: run the benchmarks from the app and see their reports, and their history as a plot.

Runs, stops and history live in ``engram.bench_runs`` (``app/services/bench_runs.py``): each bench
is the ``engram bench ...`` command in its own process, one at a time. This tab starts and stops
them, polls their live log while one runs, and renders reports as tables and plots. The learning
bench's latest report also shows in full (``engram bench learn`` writes it, from here or a terminal).
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from app.core import BENCHES, BenchRun, BenchStatus, Engram
from ui.errors import friendly, noted
from ui.formatting import local_time
from ui.plots import bench_history_figure
from ui.tab import Tab

if TYPE_CHECKING:
    from app.core import Forgot, LearnBenchReport

POLL_S = 1.0
LOG_SHOWN = 60
REPORT_COLUMNS = ["Figure", "Value", "Target"]
HISTORY_COLUMNS = ["Started", "Bench", "Size", "Result", "Took", "Headline"]
RESULT = {"done": "done", "failed": "failed", "stopped": "stopped", "running": "running"}
COLUMNS = ["Run", "Kind", "Answers right", "Exact", "Looped", "Choice before", "Choice after",
           "Forgot (free text)", "Forgot (choice)", "Perplexity drift", "Unrouted drift / forgetting",
           "Learn time", "Tokens/s"]
EMPTY = ("<div class='engram-card engram-muted'>No learning benchmark has run on this computer yet. "
         "Run the Learning bench above, or <code>engram bench learn --engine all</code> in a terminal "
         "(it takes a while on a CPU); its table and plot then show here.</div>")


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


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def about_html(bench: str) -> str:
    spec = BENCHES[bench]
    sizes = ", ".join(f"{escape(size)} about {_seconds(s)}" for size, s in spec.typical_s.items())
    return (f"<div class='engram-muted'>{escape(spec.about)} Headline: {escape(spec.headline_label)}. "
            f"Typical time on a 2-core CPU: {sizes}.</div>")


def status_html(status: BenchStatus) -> str:
    """The live card: what runs, for how long, how far (by the last run's time), or how it ended."""
    run = status.run
    if run is None:
        return ("<div class='engram-card engram-muted' id='engram-bench-idle'>No bench has run since "
                "Engram started. Pick one and press Run: it runs in its own process, one at a time, "
                "and Stop ends it.</div>")
    title = BENCHES[run.bench].title
    if status.state == "running":
        if status.fraction is not None and status.expected_s:
            width = f"{100 * status.fraction:.0f}%"
            over = status.elapsed_s > status.expected_s
            detail = (f"{_seconds(status.elapsed_s)} so far; "
                      + (f"longer than the {_seconds(status.expected_s)} it usually takes"
                         if over else f"usually about {_seconds(status.expected_s)}"))
        else:
            width, detail = "0%", f"{_seconds(status.elapsed_s)} so far"
        return (f"<div class='engram-card'><div class='engram-progress-head'><span class='state'>"
                f"Running the {escape(title)} bench ({escape(run.size)})</span><span>{escape(detail)}</span>"
                f"</div><div class='engram-bar'><div style='width:{width}'></div></div></div>")
    took = _seconds(run.seconds)
    if status.state == "done":
        headline = "" if run.headline is None else f": {escape(run.headline_label)} {run.headline:.3f}"
        return (f"<div class='engram-card'><span class='state'>The {escape(title)} bench ({escape(run.size)}) "
                f"finished in {took}</span>{headline}. Its report is below.</div>")
    if status.state == "stopped":
        return (f"<div class='engram-card'>The {escape(title)} bench ({escape(run.size)}) was stopped "
                f"after {took}; nothing was measured.</div>")
    return (f"<div class='engram-card engram-warning' role='alert'>The {escape(title)} bench "
            f"({escape(run.size)}) failed after {took}. {escape(run.error or '')}</div>")


def log_text(status: BenchStatus) -> str:
    return "\n".join(status.log[-LOG_SHOWN:])


def report_view(engram: Engram, bench: str) -> tuple[str, Any]:
    """The latest finished run of ``bench``: a line about it and its figures as a table."""
    run = engram.bench_runs.latest(bench)
    title = BENCHES[bench].title
    if run is None:
        return (f"<div class='engram-card engram-muted'>No {escape(title)} bench has finished from this "
                "app yet.</div>", gr.update(visible=False))
    headline = "" if run.headline is None else f" {escape(run.headline_label)}: <strong>{run.headline:.3f}</strong>."
    summary = (f"<div class='engram-card'>{escape(title)} bench, size {escape(run.size)}, started "
               f"{escape(local_time(run.started_at))}, took {_seconds(run.seconds)}.{headline}</div>")
    rows = [[f.name, f.value, f.target] for f in run.figures]
    return summary, gr.update(value=rows, visible=True)


def history_rows(runs: list[BenchRun]) -> list[list[str]]:
    return [[local_time(r.started_at), BENCHES[r.bench].title if r.bench in BENCHES else r.bench, r.size,
             RESULT.get(r.state, r.state), _seconds(r.seconds),
             "" if r.headline is None else f"{r.headline:.3f}"] for r in reversed(runs)]


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    runs = engram.bench_runs
    first = next(iter(BENCHES))
    gr.HTML("<div class='engram-muted'>Each bench measures Engram on this computer against the raw "
            "parts it is built from, and keeps its report. One runs at a time, in its own process: "
            "Stop ends it at once, and the app keeps working while it runs.</div>")
    with gr.Row(equal_height=False):
        bench = gr.Dropdown([(spec.title, name) for name, spec in BENCHES.items()], value=first,
                            label="Bench", elem_id="engram-bench-pick", scale=2)
        size = gr.Radio(list(BENCHES[first].sizes), value=BENCHES[first].first_size, label="Size",
                        elem_id="engram-bench-size", scale=3)
        run_button = gr.Button("Run", variant="primary", elem_id="engram-bench-run", scale=1)
        stop_button = gr.Button("Stop", variant="stop", interactive=False, elem_id="engram-bench-stop", scale=1)
    note = gr.HTML(elem_id="engram-bench-note")
    about = gr.HTML(about_html(first))
    live = gr.HTML(elem_id="engram-bench-status")
    log = gr.Textbox(label="Log", lines=8, max_lines=8, interactive=False, autoscroll=True,
                     elem_id="engram-bench-log")
    gr.Markdown("### Latest report")
    report_summary = gr.HTML(elem_id="engram-bench-report-summary")
    report_table = gr.Dataframe(headers=REPORT_COLUMNS, interactive=False, wrap=True, visible=False,
                                elem_id="engram-bench-report")
    gr.Markdown("### History")
    history_plot = gr.Plot(show_label=False, format="png", visible=False, elem_id="engram-bench-history-plot")
    history_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, visible=False,
                                 elem_id="engram-bench-history")
    gr.Markdown("### Learning bench: the latest report in full")
    summary = gr.HTML()
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, visible=False,
                         elem_id="engram-bench-runs")
    plot = gr.Image(show_label=False, type="pil", interactive=False, visible=False,
                    elem_id="engram-bench-plot")
    timer = gr.Timer(POLL_S, active=False)
    was_running = gr.State(False)

    def controls(running: bool) -> list[Any]:
        """Run and the pickers are off while a bench runs; Stop only then."""
        return [gr.update(interactive=not running), gr.update(interactive=running),
                gr.update(interactive=not running), gr.update(interactive=not running)]

    def learn_view() -> list[Any]:
        found = engram.latest_learn_report()
        if found is None:
            return [EMPTY, gr.update(visible=False), gr.update(visible=False)]
        report, image = found
        return [summary_html(report), gr.update(value=run_rows(report), visible=True),
                gr.update(value=Image.open(image) if image else None, visible=image is not None)]

    def reports(name: str) -> list[Any]:
        history = runs.history()
        figure = bench_history_figure(history)
        return [*report_view(engram, name),
                gr.update(value=figure, visible=figure is not None),
                gr.update(value=history_rows(history), visible=bool(history)), *learn_view()]

    live_outputs = [live, log, run_button, stop_button, bench, size, timer, was_running]
    report_outputs = [report_summary, report_table, history_plot, history_table, summary, table, plot]

    def live_view() -> list[Any]:
        status = runs.status()
        running = status.state == "running"
        return [status_html(status), log_text(status), *controls(running), gr.Timer(active=running), running]

    def everything(name: str | None) -> list[Any]:
        status = runs.status()
        if status.state == "running" and status.run is not None:
            name = status.run.bench  # show what runs, whatever was picked
        name = name if name in BENCHES else first
        return [*live_view(), *reports(name), gr.update(value=name) if name else gr.skip()]

    def on_tick(name: str, before: bool) -> list[Any]:
        view = live_view()
        if before and not view[-1]:  # it just ended: its report and the history
            ended = runs.status().run
            name = ended.bench if ended else name
            return [*view, *reports(name), gr.update(value=name)]
        return [*view, *[gr.skip()] * (len(report_outputs) + 1)]

    def on_pick(name: str) -> list[Any]:
        spec = BENCHES[name]
        return [gr.update(choices=list(spec.sizes), value=spec.first_size), about_html(name),
                *report_view(engram, name)]

    @noted(0, 1 + len(live_outputs))
    def on_run(name: str, chosen: str | None) -> list[Any]:
        if not name:
            raise gr.Error("Pick a bench first.")
        if not chosen:
            raise gr.Error("Pick a size first.")
        runs.start(name, chosen)
        return ["", *live_view()]

    @noted(0, 1 + len(live_outputs))
    def on_stop() -> list[Any]:
        if not runs.stop():
            raise gr.Error("No bench is running.")
        return ["", *live_view()]

    load_outputs = [*live_outputs, *report_outputs, bench]
    blocks.load(friendly(everything), bench, load_outputs)
    tab.select(friendly(everything), bench, load_outputs)
    timer.tick(friendly(on_tick), [bench, was_running], load_outputs, show_progress="hidden")
    bench.input(friendly(on_pick), bench, [size, about, report_summary, report_table])
    run_button.click(on_run, [bench, size], [note, *live_outputs])
    stop_button.click(on_stop, None, [note, *live_outputs]).then(
        friendly(everything), bench, load_outputs, show_progress="hidden")


TAB = Tab("Bench", build)
