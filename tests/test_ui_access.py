"""Who may open the desktop app: loopback by default; anywhere else only with the password."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import httpx
import pytest

from tests.helpers import open_engram
from ui.access import ExposedWithoutPassword, is_loopback
from ui.server import UiServer


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.org", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_listening_beyond_this_computer_needs_a_password(embedder) -> None:
    engram = open_engram(embedder, ui_host="0.0.0.0")
    try:
        with pytest.raises(ExposedWithoutPassword, match="set ui_password"):
            UiServer(engram, "0.0.0.0", 0).start()
    finally:
        engram.close()


def test_with_a_password_every_route_asks_for_it(embedder) -> None:
    engram = open_engram(embedder, ui_host="0.0.0.0", ui_password="correct horse")
    server = UiServer(engram, "0.0.0.0", 0)
    try:
        server.start()
        local = f"http://127.0.0.1:{server.choice.port}"
        for path in ("/", "/source/1", "/gradio_api/info", "/config"):
            refused = httpx.get(local + path, timeout=30)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert httpx.get(local + path, headers=basic("engram", "wrong"), timeout=30).status_code == 401
            assert httpx.get(local + path, headers=basic("admin", "correct horse"), timeout=30).status_code == 401
        assert httpx.get(local + "/", headers={"Authorization": "Basic !!!"}, timeout=30).status_code == 401
        assert httpx.post(local + "/presence", timeout=30).status_code == 401
        assert httpx.post(local + "/presence", headers=basic("engram", "correct horse"), timeout=30).status_code == 204
        assert engram.state.get("ui_input_at") is not None  # the person's key or click, once let in
        opened = httpx.get(local + "/", headers=basic("engram", "correct horse"), timeout=30)
        assert opened.status_code == 200 and "gradio" in opened.text.lower()
    finally:
        server.stop()
        engram.close()


def test_loopback_needs_no_password(embedder) -> None:
    engram = open_engram(embedder)
    server = UiServer(engram, "127.0.0.1", 0)
    try:
        url = server.start()
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        server.stop()
        engram.close()


def test_engram_refuses_to_listen_on_the_network_without_a_password(isolated_dirs) -> None:
    env = {**os.environ, "ENGRAM_UI_HOST": "0.0.0.0", "ENGRAM_UI_PORT": "0", "ENGRAM_OPEN_BROWSER": "false"}
    done = subprocess.run([sys.executable, "-m", "app.cli"], env=env, text=True, capture_output=True,
                          timeout=300)
    assert done.returncode != 0
    assert "set ui_password" in done.stderr and "Traceback" not in done.stderr
