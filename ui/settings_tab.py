"""Settings: every setting with its value and where it came from; change one and save it.

Values are validated by the settings model before anything is written; a saved value is used
from the next start (the running app keeps the values it started with, shown here).
"""

from html import escape
from typing import Any

import gradio as gr

from app.core import Engram
from ui.errors import friendly, noted
from ui.tab import Tab

COLUMNS = ["Setting", "Value now", "Set by", "What it does"]


def shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)


def rows(engram: Engram, text: str) -> list[list[str]]:
    needle = (text or "").strip().lower()
    out = []
    for row in engram.setting_rows():
        if needle and needle not in row.name.lower() and needle not in row.description.lower():
            continue
        value = shown(row.value)
        if row.saved is not None and shown(row.saved) != value:
            value += f"  →  {shown(row.saved)} after restart"
        out.append([row.name, value, row.source, row.description])
    return out


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    header = gr.HTML()
    with gr.Row(equal_height=True):
        name = gr.Dropdown(label="Setting", choices=engram.setting_names(), value=None, filterable=True, scale=2)
        value = gr.Textbox(label="New value", scale=2)
        save = gr.Button("Save", variant="primary", scale=0, min_width=110, size="md")
    about = gr.HTML()
    search = gr.Textbox(show_label=False, placeholder="Filter settings by name or description")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, max_height=560,
                         column_widths=["22%", "22%", "12%", "44%"], elem_id="engram-settings")

    def header_html() -> str:
        return (f"<div class='engram-card engram-muted'>Config file <code>"
                f"{escape(str(engram.loaded.config_file))}</code> · data folder <code>"
                f"{escape(str(engram.paths.root))}</code><br>Saved values take effect the next "
                "time Engram starts. Environment variables (ENGRAM_…) and command-line flags win "
                "over the config file.</div>")

    @noted(1, 2)
    def on_pick(field: str | None) -> tuple[Any, Any]:
        if not field:
            return "", ""
        row = engram.setting(field)
        note = (f"<p class='engram-muted'><strong>{escape(field)}</strong>: "
                f"{escape(row.description)} Now <code>{escape(shown(row.value))}"
                f"</code>, set by {escape(row.source)}.</p>")
        return shown(row.value), note

    @noted(1, 2)
    def on_save(field: str | None, raw: str, text: str) -> tuple[Any, Any]:
        if not field:
            raise gr.Error("Pick a setting first.")
        field = engram.setting(field).name  # the canonical spelling
        path = engram.save_setting(field, raw)
        source = engram.loaded.sources[field]
        wins = (f" It is also set by the {source}, which wins over the file."
                if source in ("environment", "command line") else "")
        gr.Info(f"Saved {field} = {raw} in {path}. It takes effect when Engram starts next.{wins}")
        return rows(engram, text), f"<p>Saved <strong>{escape(field)}</strong>. Restart Engram to use it.{escape(wins)}</p>"

    blocks.load(friendly(lambda text: (header_html(), rows(engram, text))), search, [header, table])
    search.input(friendly(lambda text: rows(engram, text)), search, table)
    tab.select(friendly(lambda text: rows(engram, text)), search, table)
    name.change(on_pick, name, [value, about])
    save.click(on_save, [name, value, search], [table, about])
    value.submit(on_save, [name, value, search], [table, about])


TAB = Tab("Settings", build)
