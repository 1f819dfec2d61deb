"""Serving the desktop app (or, headless, the /v1 API alone): a uvicorn server on a background
thread, on a port that is free.

The socket is bound here, before uvicorn starts, so "is the port free?" and "listen on it" cannot
race; when the configured port is taken the next free one is used and the caller is told.
"""

import errno
import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI
from starlette.routing import Mount

from app.core import Engram
from ui.access import require_key_when_exposed, require_password_when_exposed

log = logging.getLogger(__name__)

PORT_TRIES = 20


class PortChoice:
    def __init__(self, sock: socket.socket, wanted: int) -> None:
        self.sock = sock
        self.wanted = wanted
        self.port = sock.getsockname()[1]

    @property
    def moved(self) -> bool:
        return self.wanted != 0 and self.port != self.wanted


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_port(host: str, port: int, tries: int = PORT_TRIES, setting: str = "ui_port") -> PortChoice:
    """Listen on ``port`` or, when it is taken, on the next free one (any free one for 0)."""
    candidates = [0] if port == 0 else [p for p in range(port, min(port + tries, 65536))]
    for candidate in candidates:
        try:
            return PortChoice(_bind(host, candidate), port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise OSError(exc.errno, f"cannot listen on {host}:{candidate}: {exc.strerror}") from exc
    raise OSError(errno.EADDRINUSE, f"ports {port} to {port + tries - 1} on {host} are all taken; "
                                    f"set {setting} to a free port (0 picks any)")


class UiServer:
    """The app served on ``host``; ``start`` returns once it accepts connections."""

    what = "the desktop app"
    port_setting = "ui_port"

    def __init__(self, engram: Engram, host: str = "127.0.0.1", port: int = 7860) -> None:
        self.engram = engram
        self.host = host
        self.port = port
        self.choice: PortChoice | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.choice.port if self.choice else self.port}/"

    def start(self, timeout: float = 60.0) -> str:
        self.check_access()
        self.choice = bind_port(self.host, self.port, setting=self.port_setting)
        self._app = self.create_app()
        config = uvicorn.Config(self._app, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.choice.sock]},
                                        name=f"engram-{self.port_setting}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} did not start on {self.url} (see the log)")
            time.sleep(0.05)
        log.info("%s at %s", self.what, self.url)
        return self.url

    def check_access(self) -> None:
        require_password_when_exposed(self.host, self.engram.settings.ui_password)

    def create_app(self) -> FastAPI:
        from ui.app import create_app  # gradio loads here, not for the headless API

        return create_app(self.engram, self.host)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._end_streams()
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self.choice is not None:
            self.choice.sock.close()
        self._server = self._thread = None

    def _end_streams(self) -> None:
        """End the browser's open event streams first (as gradio's own ``close`` does), or the
        server would wait for them and then cancel them with an error in the log."""
        gradio_app = next((r.app for r in self._app.routes
                           if isinstance(r, Mount) and hasattr(r.app, "get_blocks")), None)
        if gradio_app is None or not self._server.servers:
            return
        blocks = gradio_app.get_blocks()
        blocks._queue.close()
        blocks.is_running = False
        self._server.servers[0].get_loop().call_soon_threadsafe(gradio_app.stop_event.set)


class ApiServer(UiServer):
    """The OpenAI-compatible /v1 API alone, for ``engram run --headless`` (no Gradio): on
    api_host:api_port, with the key its host requires."""

    what = "the /v1 API"
    port_setting = "api_port"

    @property
    def url(self) -> str:
        from ui.openai_api import PREFIX

        return super().url.rstrip("/") + PREFIX

    def check_access(self) -> None:
        require_key_when_exposed(self.host, self.engram.settings.api_key)

    def create_app(self) -> FastAPI:
        from ui.openai_api import PREFIX, create_api

        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        app.mount(PREFIX, create_api(self.engram, self.host))
        return app
