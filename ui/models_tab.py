"""Models: what Engram can answer with (embedded, GGUF files, Hugging Face folders, Ollama) and
which one it uses; picking one loads it first, so a model that does not work is never kept."""

from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from app.core import BACKENDS, EMBEDDED, Engram, ModelInfo
from ui.errors import friendly
from ui.formatting import backend_title, human_size, short_model
from ui.tab import Tab

COLUMNS = ["Active", "Model", "Backend", "Size", "Where"]
OLLAMA_TIMEOUT_S = 1.5


def model_id(info: ModelInfo) -> str:
    """The chat_model setting that names ``info``."""
    return info.name if info.name == EMBEDDED else info.path_or_tag


def catalogue(engram: Engram) -> tuple[list[ModelInfo], str]:
    """The models to list, and a line on the Ollama server."""
    found = engram.model_catalogue(OLLAMA_TIMEOUT_S)
    host = escape(found.ollama_host)
    if found.ollama_error is not None:
        return found.models, escape(found.ollama_error)  # it names the host and says what to do
    n = found.ollama_models
    return found.models, f"Ollama at <code>{host}</code> is running with {n} model{'s' if n != 1 else ''}."


def active_line(engram: Engram) -> str:
    answering = engram.chat_model()
    loaded = "loaded" if answering.loaded else "loads on the first question"
    return (f"<div class='engram-card'>Answering with <strong>{escape(short_model(answering.model))}</strong> "
            f"on <strong>{escape(backend_title(answering.backend))}</strong> <span class='engram-muted'>"
            f"({loaded})</span></div>")


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    active = gr.HTML()
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True,
                         column_widths=["8%", "22%", "12%", "10%", "48%"], elem_id="engram-models")
    with gr.Row(equal_height=True):
        pick = gr.Dropdown(show_label=False, label="Answer with", choices=[], scale=4, container=False,
                           elem_classes="engram-input")
        use = gr.Button("Use this model", variant="primary", scale=1, min_width=150, size="md")
        refresh = gr.Button("Refresh", scale=0, min_width=100, size="md")
    result = gr.HTML()
    with gr.Accordion("Another model", open=False):
        gr.HTML("<p class='engram-muted'>A GGUF file (llamacpp), a model an Ollama server has "
                "pulled or can serve (ollama), or a local Hugging Face folder with safetensors "
                "weights (torch). Nothing is downloaded.</p>")
        with gr.Row(equal_height=True):
            other_backend = gr.Radio(choices=list(BACKENDS), value="llamacpp", label="Backend", scale=2)
            other_model = gr.Textbox(label="Model (path or Ollama tag)", scale=4)
            use_other = gr.Button("Load and use", scale=1, min_width=140, size="md")
    with gr.Accordion("Ollama server", open=False):
        with gr.Row(equal_height=True):
            host = gr.Textbox(label="Ollama host", scale=4)
            save_host = gr.Button("Save host", scale=1, min_width=120, size="md")
    ollama = gr.HTML(elem_classes="engram-muted")
    folder_note = gr.HTML()

    def view() -> tuple[Any, ...]:
        models, status = catalogue(engram)
        rows = [["●" if m.active else "", short_model(m.name), backend_title(m.backend), human_size(m.size_bytes),
                 m.path_or_tag]
                for m in models]
        choices = [(f"{short_model(m.name)} · {backend_title(m.backend)}", f"{m.backend}\t{model_id(m)}")
                   for m in models]
        current = next((c[1] for c, m in zip(choices, models) if m.active), None)
        note = (f"<p class='engram-muted'>GGUF files and Hugging Face folders placed in "
                f"<code>{escape(str(engram.settings.effective_models_dir))}</code> appear here "
                "(press Refresh).</p>")
        return (active_line(engram), rows, gr.update(choices=choices, value=current), status,
                engram.settings.ollama_host, note)

    outputs = [active, table, pick, ollama, host, folder_note]

    def switch(backend: str, model: str) -> tuple[Any, ...]:
        engram.use_model(backend, model)  # type: ignore[arg-type]
        override = [n for n in ("chat_backend", "chat_model")
                    if engram.loaded.sources.get(n) in ("environment", "command line")]
        later = (f" Note: {' and '.join(override)} {'is' if len(override) == 1 else 'are'} also set "
                 "by the environment or the command line, which win at the next start."
                 if override else "")
        done = (f"<p>Now answering with <strong>{escape(short_model(model))}</strong> "
                f"({escape(backend_title(backend))}); saved "
                f"for the next start.{escape(later)}</p>")
        return (*view(), done)

    @friendly
    def on_use(choice: str | None) -> tuple[Any, ...]:
        if not choice:
            raise gr.Error("Pick a model first.")
        backend, _, model = choice.partition("\t")
        return switch(backend, model)

    @friendly
    def on_use_other(backend: str, model: str) -> tuple[Any, ...]:
        model = (model or "").strip()
        if not model:
            raise gr.Error("Type a GGUF path, an Ollama tag or a model folder.")
        if backend != "ollama" and model != EMBEDDED:
            model = str(Path(model).expanduser())
        return switch(backend, model)

    @friendly
    def on_save_host(value: str) -> tuple[Any, ...]:
        engram.save_setting("ollama_host", value)
        engram.settings.ollama_host = value.strip()
        return (*view(), "<p>Ollama host saved.</p>")

    blocks.load(friendly(view), None, outputs)
    refresh.click(friendly(view), None, outputs)
    tab.select(friendly(view), None, outputs)  # a model file added meanwhile shows up
    use.click(on_use, pick, [*outputs, result])
    use_other.click(on_use_other, [other_backend, other_model], [*outputs, result])
    save_host.click(on_save_host, host, [*outputs, result])


TAB = Tab("Models", build)
