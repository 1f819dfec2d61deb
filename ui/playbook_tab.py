"""Playbook: the strategies Engram puts into its prompts, with their helpful/harmful counters.

A thin layer over ``app.services.playbooks.PlaybookService``: every change here is a new version, so
deleting a bullet or restoring an old version can itself be undone by restoring again.
"""

import tempfile
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from app.core import Engram, Playbook, PlaybookFileError
from ui.errors import friendly
from ui.formatting import local_time
from ui.tab import Tab

BULLET_COLUMNS = ["Id", "Section", "Bullet", "Helpful", "Harmful"]
HISTORY_COLUMNS = ["When", "Source", "Kept", "What changed (or why not)"]
HISTORY_ROWS = 50


def status_html(engram: Engram) -> str:
    s = engram.settings
    if "ace" in s.engines:
        state = (f"The playbook is on: answers follow the rules in <strong>{escape(s.ace.playbook)}"
                 "</strong>, and your ratings and corrections add to them.")
    else:
        state = ("The playbook is off. With it on, Engram turns your ratings and corrections into "
                 "short rules that later answers follow. To turn it on, add <code>ace</code> to "
                 "<em>engines</em> in Settings (<code>rag,ace</code>).")
    return f"<div class='engram-card'>{state}</div>"


def bullet_rows(playbook: Playbook) -> list[list[Any]]:
    return [[b.id, b.section, b.content, b.helpful, b.harmful] for b in playbook.bullets]


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    service = engram.playbooks
    pending = gr.State(None)  # ("delete", bullet id) or ("restore", version) awaiting confirmation

    status = gr.HTML()
    with gr.Row(equal_height=True):
        name = gr.Dropdown(label="Playbook", choices=[], allow_custom_value=True, scale=3,
                           elem_id="engram-playbook-name")
        version_note = gr.HTML(elem_classes="engram-muted")
    empty = gr.HTML(visible=False, elem_id="engram-playbook-empty")
    table = gr.Dataframe(headers=BULLET_COLUMNS, interactive=False, wrap=True, max_height=420,
                         column_widths=["7%", "13%", "60%", "10%", "10%"], elem_id="engram-bullets")
    with gr.Row(equal_height=True):
        bullet_id = gr.Number(label="Bullet number (pick one in the table)", value=None, precision=0,
                              minimum=1, scale=1, elem_id="engram-bullet-id")
        text = gr.Textbox(label="Bullet text", scale=5, elem_id="engram-bullet-text",
                          placeholder="A short rule for answers, e.g. “Give every price with its currency.”")
    with gr.Row():
        # Editing and deleting act on a picked bullet: disabled until one is picked.
        save_edit = gr.Button("Save edit", size="sm", interactive=False)
        add_new = gr.Button("Add as a new bullet", size="sm", variant="primary")
        delete = gr.Button("Delete bullet…", size="sm", variant="stop", interactive=False)
    with gr.Group(visible=False) as confirm_box:
        confirm_text = gr.HTML()
        with gr.Row():
            confirm = gr.Button("Yes, do it", variant="stop", size="sm", elem_id="engram-playbook-confirm")
            cancel = gr.Button("Cancel", size="sm")

    with gr.Accordion("Versions and history", open=False):
        with gr.Row(equal_height=True):
            version = gr.Dropdown(label="Version", choices=[], scale=3, elem_id="engram-playbook-version")
            restore = gr.Button("Restore this version…", size="md", scale=1)
        history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, max_height=360,
                               column_widths=["16%", "12%", "8%", "64%"])

    with gr.Accordion("Export and import", open=False):
        with gr.Row(equal_height=True):
            download = gr.DownloadButton("Download this playbook", size="sm", elem_id="engram-playbook-download")
            upload = gr.UploadButton("Upload a playbook file…", file_types=[".json"], size="sm",
                                     elem_id="engram-playbook-upload")
        with gr.Row(equal_height=True):
            import_name = gr.Textbox(label="Import under the name (empty: the name in the file)", scale=3)
            replace = gr.Checkbox(label="Replace a playbook of that name (its history is kept)", scale=2)
        import_report = gr.HTML()

    def names() -> list[str]:
        known = [p.name for p in service.list()]
        return known or [engram.settings.ace.playbook]

    def view(playbook_name: str | None) -> tuple[Any, ...]:
        """Everything shown for one playbook: bullets, versions, history, the download file."""
        chosen = (playbook_name or "").strip() or engram.settings.ace.playbook
        exists = chosen in {p.name for p in service.list()}
        if not exists:
            note = "<span>Empty: it is saved with its first bullet.</span>"
            nothing = ("<div class='engram-card engram-muted'>No bullets yet. They appear as Engram learns "
                       "from your feedback (with the ace engine on), or add one by hand below.</div>")
            return (gr.update(choices=names(), value=chosen), note, gr.update(value=[], visible=False),
                    gr.update(value=nothing, visible=True), gr.update(choices=[], value=None), [],
                    gr.update(value=None, interactive=False), *unpicked())
        playbook = service.show(chosen)
        versions = service.versions(chosen)
        note = (f"<span>Version {playbook.version} · {len(playbook.bullets)} bullet"
                f"{'s' if len(playbook.bullets) != 1 else ''}</span>")
        choices = [(f"v{v.version} · {local_time(v.created_at)} · {v.source or ''} · {v.bullets} bullets",
                    v.version) for v in reversed(versions)]
        log = [[local_time(d.ts), d.source, "yes" if d.status == "accepted" else "no",
                "; ".join(d.changes) if d.status == "accepted" else (d.reason or "")]
               for d in service.history(chosen, HISTORY_ROWS)]
        export = Path(tempfile.mkdtemp(prefix="engram-playbook-")) / f"{chosen}.json"
        service.export(chosen, export)
        return (gr.update(choices=names(), value=chosen), note,
                gr.update(value=bullet_rows(playbook), visible=bool(playbook.bullets)),
                gr.update(visible=not playbook.bullets,
                          value="<div class='engram-card engram-muted'>This version has no bullets.</div>"),
                gr.update(choices=choices, value=None), log, gr.update(value=str(export), interactive=True),
                *unpicked())

    def unpicked() -> tuple[Any, Any, Any]:
        """No bullet picked (after the table changed): nothing to edit or delete yet."""
        off = gr.update(interactive=False)
        return None, off, off

    def picked(raw: float | None) -> tuple[Any, Any]:
        on = gr.update(interactive=raw is not None and raw >= 1)
        return on, on

    outputs = [name, version_note, table, empty, version, history, download, bullet_id, save_edit, delete]

    def picked_id(raw: float | None) -> int:
        if raw is None or raw < 1:
            raise gr.Error("Pick a bullet in the table (or type its id) first.")
        return int(raw)

    @friendly
    def on_select(playbook_name: str, evt: gr.SelectData) -> tuple[Any, ...]:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        bullet = service.show(playbook_name).bullets[row]
        return bullet.id, bullet.content, *picked(bullet.id)

    @friendly
    def on_save(playbook_name: str, raw_id: float | None, content: str) -> tuple[Any, ...]:
        service.edit_bullet(playbook_name, picked_id(raw_id), content=content)
        gr.Info(f"Saved bullet {int(raw_id or 0)}.")
        return view(playbook_name)

    @friendly
    def on_add(playbook_name: str, content: str) -> tuple[Any, ...]:
        if not (content or "").strip():
            raise gr.Error("Type the bullet's text first.")
        chosen = (playbook_name or "").strip() or engram.settings.ace.playbook
        service.add_bullet(chosen, content)
        gr.Info(f"Added a bullet to {chosen}.")
        return view(chosen)

    @friendly
    def ask_delete(playbook_name: str, raw_id: float | None) -> tuple[Any, ...]:
        bullet_number = picked_id(raw_id)
        bullet = service.show(playbook_name).get(bullet_number)
        if bullet is None:
            raise gr.Error(f"{playbook_name} has no bullet {bullet_number}.")
        return (("delete", bullet_number), gr.update(visible=True),
                f"<p>Delete bullet {bullet_number} — “{escape(bullet.content)}”? "
                "Restoring the version before will bring it back.</p>")

    @friendly
    def ask_restore(playbook_name: str, chosen_version: int | None) -> tuple[Any, ...]:
        if chosen_version is None:
            raise gr.Error("Pick a version first.")
        old = service.show(playbook_name, int(chosen_version))
        return (("restore", int(chosen_version)), gr.update(visible=True),
                f"<p>Make version {int(chosen_version)} ({len(old.bullets)} bullets) the live playbook? "
                "This is saved as a new version, so it can be undone.</p>")

    @friendly
    def on_confirm(playbook_name: str, action: tuple[str, int] | None) -> tuple[Any, ...]:
        if not action:
            raise gr.Error("Nothing to confirm.")
        kind, number = action
        if kind == "delete":
            service.delete_bullet(playbook_name, number)
            gr.Info(f"Deleted bullet {number}.")
        else:
            service.restore(playbook_name, number)
            gr.Info(f"Restored version {number}.")
        return (None, gr.update(visible=False), *view(playbook_name))

    @friendly
    def on_upload(path: str | None, new_name: str, overwrite: bool) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Pick a playbook file (.json) to upload.")
        shown_name = Path(path).name  # the uploaded file's own name, not the temporary folder
        try:
            parsed = engram.read_playbook_file(Path(path))
        except PlaybookFileError as exc:
            raise gr.Error(f"{shown_name} is not a valid playbook file: " + "; ".join(exc.errors)) from exc
        report = service.import_parsed(parsed, shown_name, name=(new_name or "").strip() or None,
                                       replace=overwrite)
        skipped = "".join(f"<li>{escape(s)}</li>" for s in report.skipped)
        summary = (f"<p>Imported {report.imported} bullet{'s' if report.imported != 1 else ''} into "
                   f"<strong>{escape(report.name)}</strong> (version {report.version}"
                   f"{', replacing the live version' if report.replaced else ''}).</p>")
        if skipped:
            summary += f"<p>Skipped:</p><ul>{skipped}</ul>"
        return (summary, *view(report.name))

    blocks.load(friendly(lambda n: (status_html(engram), *view(n))), name, [status, *outputs])
    tab.select(friendly(lambda n: (status_html(engram), *view(n))), name, [status, *outputs])
    name.input(friendly(view), name, outputs)
    table.select(on_select, name, [bullet_id, text, save_edit, delete])
    bullet_id.input(friendly(picked), bullet_id, [save_edit, delete])
    save_edit.click(on_save, [name, bullet_id, text], outputs)
    add_new.click(on_add, [name, text], outputs)
    delete.click(ask_delete, [name, bullet_id], [pending, confirm_box, confirm_text])
    restore.click(ask_restore, [name, version], [pending, confirm_box, confirm_text])
    confirm.click(on_confirm, [name, pending], [pending, confirm_box, *outputs])
    cancel.click(lambda: (None, gr.update(visible=False)), None, [pending, confirm_box])
    upload.upload(on_upload, [upload, import_name, replace], [import_report, *outputs])


TAB = Tab("Playbook", build)
