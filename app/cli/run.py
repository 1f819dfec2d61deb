"""``engram run``: the desktop app, or headless with live progress in the terminal."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app.cli.base import Context, cli, console, pass_ctx, progress_bar, user_errors

if TYPE_CHECKING:
    from app.core import Engram


@cli.command()
@click.option("--no-watch", is_flag=True, help="Do not watch folders (process the queue only).")
@click.option("--headless", is_flag=True, help="No desktop app: live progress in the terminal only.")
@click.option("--no-browser", is_flag=True, help="Serve the desktop app without opening the browser.")
@pass_ctx
def run(c: Context, no_watch: bool = False, headless: bool = False, no_browser: bool = False) -> None:
    """Start Engram: the desktop app (on ui_host:ui_port, with the OpenAI-compatible API at /v1)
    with the watcher and worker; headless, the /v1 API alone on api_host:api_port. Ctrl+C stops."""
    engram = c.engram
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not headless:
        _run_desktop(c, stop, open_browser=engram.settings.open_browser and not no_browser,
                     watch=not no_watch)
        return
    api = _serve_api(engram)
    engram.start(watch=not no_watch)
    engram.announce(api.url)  # `engram search` asks this process from now on
    folders = ", ".join(f.path for f in engram.watched_folders())
    console.print(f"[bold]Engram[/] is learning from: {folders}")
    console.print(f"Data: {engram.paths.root}   (Ctrl+C to stop)")
    try:
        _follow_progress(engram, until=stop.is_set)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("Stopping: saving the index...")
        engram.withdraw()
        api.stop()
        engram.stop()


def _serve_api(engram: Engram):
    """The OpenAI-compatible /v1 API on api_host:api_port, its address printed (refused, with the
    fix, when it would listen beyond this computer without api_key)."""
    from ui.access import ExposedWithoutPassword
    from ui.server import ApiServer

    s = engram.settings
    api = ApiServer(engram, s.api_host, s.api_port)
    with user_errors(OSError, RuntimeError, ExposedWithoutPassword,
                     describe=lambda exc: f"the /v1 API could not start: {exc}"):
        url = api.start()
    if api.choice and api.choice.moved:
        console.print(f"Port {s.api_port} is taken; the API uses {api.choice.port} instead. "
                      "Set api_port to choose another.", highlight=False)
    console.print(f"OpenAI-compatible API: {url}", highlight=False, soft_wrap=True)
    return api


def _run_desktop(c: Context, stop: threading.Event, open_browser: bool, watch: bool) -> None:
    # The CLI is the entry point that composes the layers: it alone in app/ reaches up to ui/.
    from ui.access import ExposedWithoutPassword
    from ui.desktop import run_desktop

    try:
        with user_errors(OSError, ExposedWithoutPassword,
                         describe=lambda exc: f"the desktop app could not start: {exc}"):
            run_desktop(c.engram, stop, lambda text: console.print(text, highlight=False),
                        open_browser=open_browser, watch=watch)
    except KeyboardInterrupt:
        pass


def _follow_progress(engram: Engram, until: Callable[[], bool]) -> None:
    """Render the queue's progress until ``until()`` is true."""
    with progress_bar() as bar:
        task = bar.add_task("idle", total=None)
        while not until():
            p = engram.job_progress()
            label = "paused" if p.paused else (
                Path(p.current[0]).name if p.current else ("learning" if p.active else "watching"))
            bar.update(task, total=p.total or None, completed=p.finished, description=label[:40])
            time.sleep(0.3)
