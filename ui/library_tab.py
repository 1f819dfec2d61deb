"""Library: live learning progress, watched folders, and every document with its status."""

from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from app.core import STATUSES, DocumentPage, Engram, ListedDocument, Progress
from ui.errors import friendly, noted
from ui.formatting import human_size, local_time
from ui.tab import Tab

PAGE_SIZE = 50
POLL_S = 1.0
COLUMNS = ["Document", "Status", "Chunks", "Size", "Updated", "Folder", "Problem"]
WIDTHS = ["20%", "10%", "7%", "8%", "13%", "20%", "22%"]
STATUS_LABEL = {"learned": "learned", "learning": "learning", "pending": "pending", "error": "error",
                "ignored": "forgotten"}
FILTER_NAMES = {"learned": "Learned", "learning": "Learning", "pending": "Pending", "error": "Errors",
                "ignored": "Forgotten"}


# --- rendering ---------------------------------------------------------------------------------
def job_label(kind: str, key: str | None) -> str:
    """``ingest /a/b.txt`` -> ``b.txt``; ``learn rag:/a/b.txt`` -> ``rag: b.txt``."""
    if not key:
        return kind
    engine, sep, path = key.partition(":") if kind != "ingest" else ("", "", key)
    return f"{engine}: {Path(path).name}" if sep else Path(key).name


def progress_html(p: Progress, page: DocumentPage) -> str:
    counts = page.counts
    if p.paused and p.active:
        state, detail = "Paused", f"{p.pending} waiting · resume to carry on"
    elif p.active:
        state, detail = "Learning your documents", f"{p.finished} of {p.total} done"
    else:
        errors = f" · {counts['error']} could not be read" if counts["error"] else ""
        state, detail = ("Paused" if p.paused else "Up to date"), f"{counts['learned']} learned{errors}"
    share = 100 * p.finished / p.total if p.total and (p.active or p.paused) else (100 if counts["learned"] else 0)
    now = ""
    if p.running_jobs and not p.paused:
        job = p.running_jobs[0]
        step = f" · {job.message}" if job.message else ""
        pct = f" {job.progress:.0%}" if job.progress is not None else ""
        now = f"Now: {escape(job_label(job.kind, job.key))}{escape(pct)}{escape(step)}"
    bar_class = "engram-bar paused" if p.paused else "engram-bar"
    return (f"<div class='engram-card' id='engram-progress'><div class='engram-progress-head'>"
            f"<span class='state'>{escape(state)}</span><span class='engram-muted'>{escape(detail)}</span>"
            f"</div><div class='{bar_class}'><div style='width:{share:.1f}%'></div></div>"
            f"<div class='engram-current engram-muted'>{now or '&nbsp;'}</div></div>")


def folders_html(engram: Engram) -> str:
    folders = engram.watched_folders()
    if not folders:
        return "<p class='engram-muted'>No watched folders.</p>"
    items = []
    for f in folders:
        badge = "<span class='engram-badge'>drop folder</span>" if f.is_default else ""
        missing = "" if Path(f.path).is_dir() else " <span class='engram-warning'>missing</span>"
        n = f.documents
        items.append(f"<li><span class='path'>{escape(f.path)}{badge}{missing}</span>"
                     f"<span class='engram-muted'>{n} document{'s' if n != 1 else ''}</span></li>")
    return f"<ul class='engram-folders'>{''.join(items)}</ul>"


def empty_html(engram: Engram) -> str:
    drop = escape(str(engram.settings.effective_drop_folder))
    return ("<div class='engram-empty engram-card'><strong>No documents yet.</strong><br>"
            f"Drop files into <code>{drop}</code>, use <em>Add files</em>, or watch a folder above: "
            "Engram learns them as they arrive.</div>")


def table_rows(items: list[ListedDocument]) -> list[list[Any]]:
    return [[Path(d.path).name, STATUS_LABEL[d.status], d.chunks or "", human_size(d.size),
             local_time(d.updated_at), str(Path(d.path).parent), d.error or ""]
            for d in items]


def filter_choices(page: DocumentPage) -> list[tuple[str, str]]:
    total = sum(page.counts.values())
    return [(f"All ({total})", "all")] + [
        (f"{FILTER_NAMES[s]} ({page.counts[s]})", s) for s in STATUSES if page.counts[s] or s == "error"]


def page_label(page: DocumentPage) -> str:
    if not page.total:
        return "<span class='engram-muted'>No documents match.</span>"
    last = min(page.offset + page.limit, page.total)
    return f"<span class='engram-muted'>{page.offset + 1}–{last} of {page.total}</span>"


# --- the tab -----------------------------------------------------------------------------------
def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    offset = gr.State(0)
    shown = gr.State([])  # paths of the rows on screen, in order
    selected = gr.State(None)  # path of the selected document
    signature = gr.State(None)  # what the table showed last, to redraw only on change

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            progress = gr.HTML(elem_id="engram-progress-box")
        with gr.Column(scale=1, min_width=180):
            pause_button = gr.Button("Pause learning", size="sm", elem_id="engram-pause")
            add_files = gr.UploadButton("Add files…", file_count="multiple", size="sm", variant="primary",
                                        elem_id="engram-add-files")

    with gr.Accordion("Watched folders", open=True):
        folders = gr.HTML()
        with gr.Row(equal_height=True):
            folder_path = gr.Textbox(show_label=False, placeholder="Full path of a folder to watch, e.g. ~/Documents/notes",
                                     scale=5, elem_id="engram-folder-path", container=False,
                                     elem_classes="engram-input")
            add_folder = gr.Button("Watch folder", variant="primary", scale=1, min_width=140, size="md")
        with gr.Row(equal_height=True):
            gr.HTML("<span>Stop watching</span>", elem_classes="engram-label", scale=0, min_width=110)
            remove_choice = gr.Dropdown(show_label=False, choices=[], scale=5, label="Stop watching",
                                        container=False, elem_id="engram-remove-folder",
                                        elem_classes="engram-input")
            remove_folder = gr.Button("Remove…", scale=1, min_width=140, size="md", interactive=False)
        folder_note = gr.HTML(elem_id="engram-folder-note")
        with gr.Group(visible=False) as confirm_box:
            confirm_text = gr.HTML()
            with gr.Row():
                confirm_remove = gr.Button("Yes, stop watching and forget", variant="stop", size="sm")
                cancel_remove = gr.Button("Cancel", size="sm")

    gr.HTML("<h3 style='margin:12px 0 0'>Documents</h3>")
    with gr.Row(equal_height=True):
        search = gr.Textbox(show_label=False, placeholder="Filter by name or path", scale=3, container=False,
                            elem_classes="engram-input")
        status_filter = gr.Radio(choices=[("All", "all")], value="all", show_label=False, scale=5)
    empty = gr.HTML(visible=False, elem_id="engram-library-empty")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, max_height=480,
                         column_widths=WIDTHS,
                         elem_id="engram-documents")
    with gr.Row(equal_height=True):
        prev_page = gr.Button("◀ Previous", size="sm", scale=0, min_width=110, interactive=False)
        pages = gr.HTML()
        next_page = gr.Button("Next ▶", size="sm", scale=0, min_width=110, interactive=False)
    with gr.Row(equal_height=True):
        selection = gr.HTML("<span class='engram-muted'>Select a document to re-index or forget it.</span>",
                            elem_classes="engram-selected")
        reindex = gr.Button("Re-index", size="sm", interactive=False, scale=0, min_width=130)
        forget = gr.Button("Forget", size="sm", variant="stop", interactive=False, scale=0, min_width=130)

    def current_page(status: str, text: str, start: int) -> DocumentPage:
        page = engram.document_page(None if status == "all" else status, text or "", PAGE_SIZE, start)
        if page.total and start >= page.total:  # the page emptied (documents forgotten): go back
            page = engram.document_page(None if status == "all" else status, text or "", PAGE_SIZE,
                                        max(0, (page.total - 1) // PAGE_SIZE * PAGE_SIZE))
        return page

    def documents_view(page: DocumentPage, sig: Any) -> tuple[Any, ...]:
        """table, empty state, pager with its two buttons (usable only where there is a page to
        turn to), filter, paths on screen, offset, signature."""
        nothing = sum(page.counts.values()) == 0
        return (gr.update(value=table_rows(page.items), visible=not nothing),
                gr.update(value=empty_html(engram), visible=nothing),
                page_label(page), gr.update(interactive=page.offset > 0),
                gr.update(interactive=page.offset + page.limit < page.total),
                gr.update(choices=filter_choices(page)),
                [d.path for d in page.items], page.offset, sig)

    def folder_view() -> tuple[Any, Any]:
        removable = [f.path for f in engram.watched_folders() if not f.is_default]
        return folders_html(engram), gr.update(choices=removable, value=None,
                                               interactive=bool(removable),
                                               label="Stop watching")

    def pause_label() -> str:
        return "Resume learning" if engram.paused else "Pause learning"

    def status_view(page: DocumentPage) -> tuple[str, str]:
        return progress_html(engram.job_progress(), page), pause_label()

    def refresh(status: str, text: str, start: int, force: bool = False, last: Any = None) -> tuple[Any, ...]:
        """progress, pause label, folders, then the documents' outputs (see documents_view);
        folders and documents are sent only when they changed since ``last``."""
        page = current_page(status, text, start)
        folder_list = folders_html(engram)
        sig = [page.model_dump_json(), status, text, folder_list]
        if not force and sig == last:
            return (*status_view(page), *(gr.skip(),) * (1 + len(doc_outputs)))
        return (*status_view(page), folder_list, *documents_view(page, sig))

    doc_outputs = [table, empty, pages, prev_page, next_page, status_filter, shown, offset, signature]

    @friendly
    def on_load(status: str, text: str) -> tuple[Any, ...]:
        progress_box, pause, _, *docs = refresh(status, text, 0, force=True)
        return (progress_box, pause, *folder_view(), *docs)

    @friendly
    def on_tick(status: str, text: str, start: int, last: Any) -> tuple[Any, ...]:
        return refresh(status, text, start, last=last)

    @friendly
    def toggle_pause() -> str:
        engram.resume() if engram.paused else engram.pause()
        return pause_label()

    @noted(3, 4)
    def on_add_folder(path: str) -> tuple[Any, ...]:
        raw = (path or "").strip()
        if not raw:
            raise gr.Error("Type the full path of a folder to watch.")
        folder = Path(raw).expanduser()
        if not folder.is_absolute():
            raise gr.Error(f"Give the full path (starting with / or ~), not '{raw}'.")
        if not folder.is_dir():
            raise gr.Error(f"There is no folder at {folder}.")
        if engram.watched_folder(folder):
            gr.Info(f"Already watching {folder}.")
            return (gr.skip(), *folder_view(), "")
        row, report = engram.add_folder(folder)
        gr.Info(f"Watching {row.path}: {report.files} documents found, {report.queued} queued to learn.")
        return ("", *folder_view(), "")

    @noted(2, 3)
    def ask_remove(path: str | None) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Pick a folder to stop watching.")
        folder = engram.watched_folder(path)
        n = folder.documents if folder else 0
        text = (f"<p>Stop watching <code>{escape(path)}</code> and forget its {n} "
                f"document{'s' if n != 1 else ''}? The files stay on disk.</p>")
        return gr.update(visible=True), text, ""

    @noted(3, 4)
    def do_remove(path: str | None) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Pick a folder to stop watching.")
        forgotten = engram.remove_folder(Path(path))
        gr.Info(f"Stopped watching {path}; forgot {forgotten} documents.")
        return (gr.update(visible=False), *folder_view(), "")

    @friendly
    def on_upload(files: list[str] | None) -> None:
        if not files:
            return
        results = engram.add_files([(Path(f), Path(f).name) for f in files])
        added = [r.name for r in results if r.path]
        if added:
            gr.Info(f"Added {', '.join(added)} to the drop folder; learning now.")
        for r in results:
            if r.refused:
                gr.Warning(f"Skipped {r.name}: {r.refused}.")

    @friendly
    def refilter(status: str, text: str) -> tuple[Any, ...]:
        return (*refresh(status, text, 0, force=True)[3:], None, *selection_view(None))

    @friendly
    def turn(status: str, text: str, start: int, step: int) -> tuple[Any, ...]:
        return refresh(status, text, max(0, start + step * PAGE_SIZE), force=True)[3:]

    def selection_view(path: str | None) -> tuple[Any, Any, Any]:
        if path is None:
            return ("<span class='engram-muted'>Select a document to re-index or forget it.</span>",
                    gr.update(interactive=False, value="Re-index"), gr.update(interactive=False))
        found = engram.document_page(text=path, limit=5).items
        doc = next((d for d in found if d.path == path), None)
        if doc is None:
            return selection_view(None)
        problem = f"<br><span class='engram-warning'>{escape(doc.error)}</span>" if doc.error else ""
        label = f"<strong>{escape(Path(path).name)}</strong> · {STATUS_LABEL[doc.status]}<br>" \
                f"<code>{escape(path)}</code>{problem}"
        return (label, gr.update(interactive=doc.status != "pending",
                                 value="Learn again" if doc.status == "ignored" else "Re-index"),
                gr.update(interactive=doc.id is not None))

    @friendly
    def on_select(event: gr.SelectData, paths: list[str]) -> tuple[Any, ...]:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        path = paths[row] if 0 <= row < len(paths) else None
        return (path, *selection_view(path))

    @friendly
    def on_reindex(path: str | None) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Select a document first.")
        engram.reindex_document(path)
        gr.Info(f"{Path(path).name} is queued to be read again.")
        return selection_view(path)

    @friendly
    def on_forget(path: str | None) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Select a document first.")
        engram.forget_document(path)
        gr.Info(f"Forgot {Path(path).name}. The file stays on disk and is ignored until you choose "
                "Learn again.")
        return selection_view(path)

    filters = [status_filter, search]
    blocks.load(on_load, filters, [progress, pause_button, folders, remove_choice, *doc_outputs])
    gr.Timer(POLL_S).tick(on_tick, [*filters, offset, signature], [progress, pause_button, folders, *doc_outputs],
                          show_progress="hidden", queue=False)
    pause_button.click(toggle_pause, None, pause_button)
    add_files.upload(on_upload, add_files, None)
    add_folder.click(on_add_folder, folder_path, [folder_path, folders, remove_choice, folder_note])
    folder_path.submit(on_add_folder, folder_path, [folder_path, folders, remove_choice, folder_note])
    remove_folder.click(ask_remove, remove_choice, [confirm_box, confirm_text, folder_note])
    confirm_remove.click(do_remove, remove_choice, [confirm_box, folders, remove_choice, folder_note])
    cancel_remove.click(lambda: gr.update(visible=False), None, confirm_box)
    remove_choice.change(lambda path: gr.update(interactive=bool(path)), remove_choice, remove_folder)
    selection_outputs = [selection, reindex, forget]
    status_filter.input(refilter, filters, [*doc_outputs, selected, *selection_outputs])
    search.input(refilter, filters, [*doc_outputs, selected, *selection_outputs])
    prev_page.click(lambda s, t, o: turn(s, t, o, -1), [*filters, offset], doc_outputs)
    next_page.click(lambda s, t, o: turn(s, t, o, 1), [*filters, offset], doc_outputs)
    table.select(on_select, shown, [selected, *selection_outputs])
    reindex.click(on_reindex, selected, selection_outputs)
    forget.click(on_forget, selected, selection_outputs)


TAB = Tab("Library", build)
