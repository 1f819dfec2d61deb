"""Weights: what Engram has learned into its model's weights, named checkpoints of it, and sleep.

Loading a checkpoint replaces what the engine holds now, so the tab asks first and says how to
keep the current state (save it under a name). Deleting asks too. Sleep (consolidation) starts by
itself when the person is away after learning; "Sleep now" queues one at once.
"""

from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from app.core import Engram
from ui.errors import friendly, noted
from ui.formatting import backend_title, human_size, local_time, short_model
from ui.plots import weights_figure
from ui.tab import Tab

COLUMNS = ["Checkpoint", "Engine", "Saved", "Documents", "Size"]
LEARNED_COLUMNS = ["Document", "Engine", "Learned", "Seconds"]
SLEEP_COLUMNS = ["Slept", "Outcome", "Why"]


def state_html(engram: Engram) -> str:
    state = engram.answering_state()
    if not state.learned:
        return (f"<div class='engram-card'>Answers come from <strong>{escape(short_model(state.model))}</strong> "
                f"(run by {escape(backend_title(state.backend))}) as it was trained: nothing is learned into "
                "its weights yet. With learning into weights on, Engram also trains the model on each "
                "new document, so it can answer without looking it up (slow on a CPU). To turn it on, "
                "add <code>ttt</code> to <em>engines</em> in Settings (<code>rag,ttt</code>).</div>")
    parts = "".join(
        f"<li><strong>{escape(s.engine)}</strong>: {s.documents} document{'s' if s.documents != 1 else ''}"
        f"{f' (from checkpoint {escape(s.origin)})' if s.origin else ''}</li>" for s in state.learned)
    return (f"<div class='engram-card'>Answers come from <strong>{escape(short_model(state.model))}</strong> "
            f"(run by {escape(backend_title(state.backend))}) with learned weights:<ul>{parts}</ul></div>")


def sleep_html(engram: Engram) -> str:
    text = engram.sleeper.status().summary(local_time)
    return f"<div class='engram-card' id='engram-sleep-state'>{escape(text)}</div>"


def history_view(engram: Engram) -> tuple[Any, Any, Any, Any]:
    """The plot and the two tables of what went into the weights (newest rows first); hidden
    until something did."""
    history = engram.weights_history()
    figure = weights_figure(history)
    learned = [[Path(e.path).name, e.engine, local_time(e.ts), f"{e.seconds:.1f}"]
               for e in reversed(history.learned)]
    slept = [[local_time(s.ts), s.outcome, s.why] for s in reversed(history.sleeps)]
    return (gr.update(value=figure, visible=figure is not None),
            gr.update(value=learned, visible=bool(learned)), gr.update(value=slept, visible=bool(slept)),
            gr.update(visible=figure is None))


def rows(engram: Engram) -> list[list[Any]]:
    return [[c.name, c.engine, local_time(c.created_at), c.meta.get("documents", ""), human_size(c.size_bytes)]
            for c in engram.checkpoints.list()]


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    pending = gr.State(None)  # ("load" | "delete", name) awaiting confirmation
    state = gr.HTML(elem_id="engram-weights-state")
    with gr.Accordion("Learned over time", open=True, elem_id="engram-weights-history"):
        plot = gr.Plot(show_label=False, format="png", visible=False, elem_id="engram-weights-plot")
        nothing_yet = gr.HTML("<p class='engram-muted'>Nothing has been learned into the weights yet: "
                              "documents and sleeps show here as they happen.</p>")
        with gr.Row(equal_height=False):
            learned_table = gr.Dataframe(headers=LEARNED_COLUMNS, interactive=False, wrap=True, max_height=300,
                                         visible=False, label="Documents learned into the weights",
                                         elem_id="engram-weights-learned", scale=3)
            sleep_table = gr.Dataframe(headers=SLEEP_COLUMNS, interactive=False, wrap=True, max_height=300,
                                       visible=False, label="Sleeps", elem_id="engram-weights-sleeps", scale=2)
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="engram-checkpoints")
    empty = gr.HTML(visible=False)
    with gr.Row(equal_height=True):
        name = gr.Textbox(show_label=False, placeholder="Checkpoint name, e.g. before-trip", scale=3,
                          elem_id="engram-checkpoint-name", container=False, elem_classes="engram-input")
        save = gr.Button("Save current weights", variant="primary", scale=1, min_width=190, size="md")
        load = gr.Button("Load…", scale=1, min_width=120, size="md")
        delete = gr.Button("Delete…", variant="stop", scale=1, min_width=120, size="md")
    with gr.Row(equal_height=True):
        slept = gr.HTML()
        sleep = gr.Button("Sleep now", scale=0, elem_id="engram-sleep-now")
    with gr.Group(visible=False) as confirm_box:
        confirm_text = gr.HTML()
        with gr.Row():
            confirm = gr.Button("Yes, do it", variant="stop", size="sm", elem_id="engram-weights-confirm")
            cancel = gr.Button("Cancel", size="sm")

    def view() -> tuple[Any, ...]:
        listed = rows(engram)
        note = ("<div class='engram-card engram-muted'>No checkpoints yet. Save the current weights "
                "under a name to come back to them later.</div>")
        return (state_html(engram), gr.update(value=listed, visible=bool(listed)),
                gr.update(value=note, visible=not listed), sleep_html(engram), *history_view(engram))

    outputs = [state, table, empty, slept, plot, learned_table, sleep_table, nothing_yet]

    def chosen(raw: str) -> str:
        text = (raw or "").strip()
        if not text:
            raise gr.Error("Type a checkpoint name (or pick one in the table).")
        return text

    @friendly
    def on_select(evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return engram.checkpoints.list()[row].name

    @friendly
    def on_sleep() -> tuple[Any, ...]:
        if engram.sleep_now():
            gr.Info("Sleep queued: each engine consolidates what it learned; answers still come meanwhile.")
        else:
            gr.Info("A sleep is already queued or running.")
        return view()

    @friendly
    def on_save(raw: str) -> tuple[Any, ...]:
        row = engram.checkpoints.save(chosen(raw))
        gr.Info(f"Saved checkpoint {row.name}.")
        return view()

    @friendly
    def ask(kind: str, raw: str) -> tuple[Any, ...]:
        target = chosen(raw)
        if target not in {c.name for c in engram.checkpoints.list()}:
            raise gr.Error(f"There is no checkpoint named {target}.")
        text = (f"<p>Load checkpoint <strong>{escape(target)}</strong>? What the engine learned since "
                "its last checkpoint is replaced: save it first to keep it.</p>" if kind == "load" else
                f"<p>Delete checkpoint <strong>{escape(target)}</strong>? This cannot be undone.</p>")
        return (kind, target), gr.update(visible=True), text

    @friendly
    def on_confirm(action: tuple[str, str] | None) -> tuple[Any, ...]:
        if not action:
            raise gr.Error("Nothing to confirm.")
        kind, target = action
        if kind == "load":
            engram.checkpoints.load(target)
            gr.Info(f"Loaded checkpoint {target}: answers now use it.")
        else:
            engram.checkpoints.delete(target)
            gr.Info(f"Deleted checkpoint {target}.")
        return (None, gr.update(visible=False), *view())

    blocks.load(friendly(view), None, outputs)
    tab.select(friendly(view), None, outputs)
    table.select(on_select, None, name)
    save.click(on_save, name, outputs)
    sleep.click(on_sleep, None, outputs)
    name.submit(on_save, name, outputs)
    load.click(lambda raw: ask("load", raw), name, [pending, confirm_box, confirm_text])
    delete.click(lambda raw: ask("delete", raw), name, [pending, confirm_box, confirm_text])
    confirm.click(on_confirm, pending, [pending, confirm_box, *outputs])
    cancel.click(lambda: (None, gr.update(visible=False)), None, [pending, confirm_box])
    bundle_row(engram)


def import_summary(report: Any) -> str:
    """What an import did, in a sentence or two (the notes say what is left to do)."""
    parts = [f"Imported playbooks: {', '.join(report.playbooks) or 'none'}; learned weights: "
             f"{', '.join(report.engines) or 'none'}."]
    if report.replaced:
        parts.append(f"Replaced {', '.join(report.replaced)}; what was here is saved as {report.backup}.")
    parts += [f"{note[0].upper()}{note[1:]}." for note in report.notes]
    return "<div class='engram-card'>" + " ".join(escape(p) for p in parts) + "</div>"


def export_summary(report: Any) -> str:
    """What an export holds, and in plain words what it could not take (never left out silently)."""
    text = (f"Bundle ready ({human_size(report.bytes)}): {len(report.playbooks)} playbook(s), learned "
            f"weights of {', '.join(report.engines) or 'no engine'}, {report.documents} document(s) listed.")
    warning = report.warning()
    if warning:
        text += f" Warning: {warning}."
    return f"<div class='engram-card'>{escape(text)}</div>"


def bundle_row(engram: Engram) -> None:
    """Export everything learned as one file, or import one (``engram bundle`` in the app):
    choosing a file with "Import bundle…" imports it at once. A refused import says why beside
    the row and changes nothing; without "Replace" it refuses when a playbook of the same name
    or learned weights are here already."""
    with gr.Group(elem_id="engram-bundles"):
        with gr.Row(equal_height=True):
            documents = gr.Checkbox(label="With the documents", value=False, scale=1,
                                    elem_id="engram-bundle-documents")
            export = gr.Button("Export bundle", scale=1, elem_id="engram-bundle-export")
            download = gr.DownloadButton("Download bundle", visible=False, scale=1,
                                         elem_id="engram-bundle-download")
            replace = gr.Checkbox(label="Replace what is here", value=False, scale=1,
                                  elem_id="engram-bundle-replace")
            upload = gr.UploadButton("Import bundle…", file_types=[".zip"], type="filepath", scale=1,
                                     elem_id="engram-bundle-import")
        note = gr.HTML(elem_id="engram-bundle-note")

    @noted(0, 2)
    def on_export(with_documents: bool) -> tuple[Any, Any]:
        report = engram.bundles.export(engram.bundles.new_export_path(), with_documents=with_documents)
        return export_summary(report), gr.update(value=report.path, visible=True)

    @noted(0, 2)
    def on_import(path: str | None, replacing: bool) -> tuple[str, Any]:
        if not path:
            raise gr.Error("Choose a bundle file (.zip) to import.")
        return import_summary(engram.bundles.import_bundle(path, replace=replacing)), gr.skip()

    export.click(on_export, documents, [note, download])
    upload.upload(on_import, [upload, replace], [note, upload])


TAB = Tab("Weights", build)
