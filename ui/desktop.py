"""The desktop app's life: start watcher and worker, serve the UI, open the browser, stop cleanly.

``run_desktop`` blocks until ``stop`` is set (the CLI sets it on Ctrl+C and SIGTERM); then the
server stops taking requests and the core stops, saving the index, so nothing learned is lost.
"""

import logging
import os
import sys
import threading
import webbrowser
from collections.abc import Callable

from app.core import Engram
from ui.access import require_password_when_exposed
from ui.server import UiServer

log = logging.getLogger(__name__)


def has_display() -> bool:
    """A browser can open here: without a display, webbrowser would start a text browser in the
    terminal Engram is running in."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_in_browser(url: str, say: Callable[[str], None]) -> None:
    if not has_display():
        say("No display found: open the address above in a browser.")
        return
    threading.Thread(target=webbrowser.open, args=(url,), name="engram-browser", daemon=True).start()


def run_desktop(engram: Engram, stop: threading.Event, say: Callable[[str], None],
                open_browser: bool = True, watch: bool = True) -> None:
    """Serve the desktop app on the configured host and port until ``stop`` is set."""
    s = engram.settings
    require_password_when_exposed(s.ui_host, s.ui_password)
    engram.start(watch=watch)
    server = UiServer(engram, s.ui_host, s.ui_port)
    try:
        url = server.start()
        if server.choice and server.choice.moved:
            say(f"Port {s.ui_port} is taken (is Engram already open?); using {server.choice.port} "
                "instead. Set ui_port to choose another.")
        say(f"Engram is open at {url}")
        say(f"OpenAI-compatible API: {url}v1")
        engram.announce(f"{url}v1")  # `engram search` asks this process from now on
        say(f"Learning from: {', '.join(f.path for f in engram.watched_folders())}")
        say("Press Ctrl+C to stop.")
        if open_browser:
            open_in_browser(url, say)
        while not stop.wait(0.5):
            pass
    finally:
        say("Stopping: saving what was learned…")
        engram.withdraw()
        server.stop()
        engram.stop()
