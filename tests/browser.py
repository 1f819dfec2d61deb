"""The desktop app in a real headless chromium: the browser and page fixtures (Debian's chromium,
never a downloaded one), Engram served as `engram run` serves it, and the checks the browser
tests share. conftest.py makes the fixtures available to every test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import open_engram
from tests.worker_cpus import every_cpu

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium, so the browser tests cannot "
                    "run; `bash dev.sh test` installs it (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with ExitStack() as stack:
        with every_cpu():  # the browser is a user's: not kept to this test worker's CPUs
            p = stack.enter_context(sync_api.sync_playwright())
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


class App:
    """Engram with its desktop app served on a free port, as `engram` runs it."""

    def __init__(self, embedder, llama, **settings) -> None:
        from ui.server import UiServer

        defaults = {"answer_max_tokens": 48, "temperature": 0, "watch_debounce_s": 0.2, "ui_port": 0}
        self.engram = open_engram(embedder, **{**defaults, **settings})
        self.engram.runtime.adopt(llama)
        self.engram.start()
        self.server = UiServer(self.engram, "127.0.0.1", 0)
        self.url = self.server.start()

    def close(self) -> None:
        self.server.stop()
        self.engram.close()


@pytest.fixture
def page(browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)  # assertions too: a loaded 2-core machine answers a click after 5 s
    page.external = []  # type: ignore[attr-defined]
    page.on("request", lambda r: None if r.url.startswith(LOCAL) else page.external.append(r.url))
    yield page
    context.close()


def no_error_badge(page) -> None:
    """No component is covered by gradio's red "Error" badge (nor an error toast): refusals are
    messages beside the control or notices."""
    from playwright.sync_api import expect

    expect(page.get_by_text("Error", exact=True)).to_have_count(0)


def usable(button) -> None:
    """A button that can be pressed and is not drawn dimmed."""
    from playwright.sync_api import expect

    expect(button).to_be_enabled()
    expect(button).to_have_css("opacity", "1")  # waits out a fade from the disabled look


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
