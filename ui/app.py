"""The desktop app: one Gradio Blocks with a tab per module, served with the source-view route.

A tab is one module with a ``TAB`` and one line in ``TABS``.
"""

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from app.core import Engram
from ui import bench_tab, chat_tab, library_tab, memory_tab, models_tab, playbook_tab, settings_tab, weights_tab
from ui.access import PasswordMiddleware
from ui.openai_api import PREFIX as API_PREFIX, create_api
from ui.source_page import SECURITY_HEADERS, render_missing, render_missing_conversation, render_source
from ui.tab import Tab
from ui.theme import CSS, THEME

TABS: list[Tab] = [
    chat_tab.TAB,
    library_tab.TAB,
    playbook_tab.TAB,
    weights_tab.TAB,
    memory_tab.TAB,
    models_tab.TAB,
    bench_tab.TAB,
    settings_tab.TAB,
]

MAX_QUOTE_CHARS = 2000
PRESENCE_S = 5  # at most one presence report per this many seconds of typing and clicking

# A key, click or scroll in the app tells Engram the person is here (the first after a quiet
# spell at once, so an idle sleep gives way within a second; then at most every PRESENCE_S).
PRESENCE_JS = """() => {
  let last = 0;
  const seen = () => {
    const now = Date.now();
    if (now - last < %d * 1000) return;
    last = now;
    fetch("/presence", {method: "POST", keepalive: true}).catch(() => {});
  };
  for (const kind of ["keydown", "pointerdown", "wheel"])
    document.addEventListener(kind, seen, {capture: true, passive: true});
}""" % PRESENCE_S


def build_blocks(engram: Engram) -> gr.Blocks:
    with gr.Blocks(title="Engram", analytics_enabled=False) as blocks:
        gr.HTML("<div id='engram-header'><h1>Engram</h1><span class='tagline'>learns from the "
                "documents in your folders, on this computer</span></div>")
        with gr.Tabs():
            for tab in TABS:
                with gr.Tab(tab.title, id=tab.title.lower()) as shown:
                    tab.build(engram, blocks, shown)
    return blocks


def create_app(engram: Engram, host: str | None = None) -> FastAPI:
    """The web app: Gradio at ``/``, ``/source/{chunk_id}`` and ``/conversation/{id}`` for
    citation links (a passage; an exchange recalled from an earlier conversation) and the OpenAI-
    compatible API at ``/v1`` (mounted before Gradio's catch-all; ``host``: where it is served,
    default ui_host, which decides whether the API needs its key)."""
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/source/{chunk_id}", response_class=HTMLResponse)
    def source(chunk_id: int, quote: str = "") -> HTMLResponse:
        view = engram.source(chunk_id, quote[:MAX_QUOTE_CHARS])
        if view is None:
            return HTMLResponse(render_missing(chunk_id), status_code=404, headers=SECURITY_HEADERS)
        return HTMLResponse(render_source(view), headers=SECURITY_HEADERS)

    @api.get("/conversation/{conversation_id}", response_class=HTMLResponse)
    def recalled_source(conversation_id: int, first: int, last: int, quote: str = "") -> HTMLResponse:
        """An exchange recalled from an earlier conversation, cited by its turns (no chunk)."""
        view = engram.exchange_source(conversation_id, first, last, quote[:MAX_QUOTE_CHARS])
        if view is None:
            return HTMLResponse(render_missing_conversation(conversation_id), status_code=404,
                                headers=SECURITY_HEADERS)
        return HTMLResponse(render_source(view), headers=SECURITY_HEADERS)

    @api.post("/presence", status_code=204)
    def presence() -> None:
        engram.person_present()

    password = engram.settings.ui_password
    guarded = password is not None and bool(password.get_secret_value())
    api.mount(API_PREFIX, create_api(engram, host or engram.settings.ui_host, guarded=guarded))
    if guarded:
        api.add_middleware(PasswordMiddleware, password=password.get_secret_value(),
                           own_keys=(API_PREFIX,))
    blocks = build_blocks(engram)
    return gr.mount_gradio_app(
        api, blocks, path="/", theme=THEME, css=CSS, footer_links=[], ssr_mode=False,
        mcp_server=False, pwa=False, enable_monitoring=False, show_error=True, js=PRESENCE_JS,
        favicon_path=None, max_file_size=max_upload_bytes(engram),
    )


def max_upload_bytes(engram: Engram) -> int:
    """The largest file the app takes (gradio refuses a larger upload before it is stored): a
    bundle within its size limit, a document within max_file_mb."""
    return max(engram.bundles.max_bundle_bytes(), engram.settings.max_file_bytes)
