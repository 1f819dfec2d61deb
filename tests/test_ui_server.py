"""The desktop app's server without a browser: the source view, ports, and clean start/stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import open_engram, wait_for
from ui.app import create_app
from ui.server import bind_port

HOSTILE = ("# Notes\n\nThe vault code is <script>alert('x')</script> 4471 & it opens at dawn.\n\n"
           "Second paragraph <img src=http://example.com/x.png> stays text.\n")


@pytest.fixture
def engram(embedder, tmp_path: Path):
    e = open_engram(embedder)
    (tmp_path / "notes.md").write_text(HOSTILE)
    e.ingest([tmp_path / "notes.md"])
    e.run_pending()
    yield e
    e.close()


def test_source_view_escapes_document_text_and_marks_the_passage(engram) -> None:
    chunk_id = int(engram.db.scalar("SELECT id FROM chunks ORDER BY id LIMIT 1"))
    client = TestClient(create_app(engram))
    page = client.get(f"/source/{chunk_id}", params={"quote": "The vault code is <script>alert('x')</script> 4471"})
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script>alert" not in html and "<img src=http" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert re.search(r"<mark id='cited'>.*<strong>The vault code is &lt;script&gt;", html, re.S)
    assert "notes.md" in html and "line" in html
    gone = client.get("/source/999999")
    assert gone.status_code == 404 and "no longer stored" in gone.text
    assert client.get("/source/not-a-number").status_code == 422


def test_an_exchange_recalled_as_a_source_links_to_its_conversation_with_its_turns_marked(embedder) -> None:
    from app.chat.service import citations_for
    from ui.chat_tab import source_link

    engram = open_engram(embedder)
    try:
        asked = engram.conversations.start_question(None, "My <b>locker</b> code is 4471.")
        engram.conversations.add_answer(asked.conversation_id, "Noted: 4471.", [], {"backend": "llamacpp"})
        [recalled] = engram.episodic.recall("What did I tell you about my locker?", k=1)
        cite = citations_for([recalled.passage()], "Your locker code is 4471.")[0]
        link = source_link(cite)
        assert link.startswith(f"/conversation/{asked.conversation_id}?first=1&last=2&quote=")
        client = TestClient(create_app(engram))
        page = client.get(link)
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        html = page.text
        assert "Conversation: My &lt;b&gt;locker&lt;/b&gt; code is 4471." in html and "turns 1-2" in html
        assert re.search(r"<mark id='cited'>You: <strong>My &lt;b&gt;locker&lt;/b&gt; code is 4471\.</strong>"
                         r"\s*Engram: Noted: 4471\.</mark>", html)
        engram.delete_conversation(asked.conversation_id)
        gone = client.get(link)
        assert gone.status_code == 404 and "no longer stored" in gone.text
    finally:
        engram.close()


def test_a_taken_port_moves_to_the_next_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        choice = bind_port("127.0.0.1", port)
        try:
            assert choice.moved and choice.port != port
        finally:
            choice.sock.close()
        with pytest.raises(OSError, match="all taken"):
            bind_port("127.0.0.1", port, tries=1)


def test_gradio_telemetry_is_off() -> None:
    import ui  # noqa: F401  (importing the package switches it off)

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


@pytest.mark.slow
def test_engram_serves_the_app_and_stops_cleanly_on_sigterm(isolated_dirs) -> None:
    """`engram` with no command: the desktop app on a free port; SIGTERM saves and exits 0."""
    env = {**os.environ, "ENGRAM_UI_PORT": "0", "ENGRAM_OPEN_BROWSER": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = wait_for(lambda: proc.stdout.readline(), timeout=180)
        url = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert url, first
        with urllib.request.urlopen(url.group(0), timeout=30) as response:
            assert response.status == 200 and b"gradio" in response.read().lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "saving what was learned" in out
    assert "Traceback" not in err
    assert (isolated_dirs["data"] / "Drop").is_dir()
