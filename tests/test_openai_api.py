"""The OpenAI-compatible /v1 API over real parts: a real server, the official ``openai`` client,
the embedded model in llama.cpp, real embeddings, FAISS and SQLite; plain HTTP for the refusals."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from tests.helpers import open_engram, wait_for
from ui.access import ExposedWithoutKey
from ui.openai_api import MAX_BODY_BYTES, create_api
from ui.server import ApiServer

FERRY = "The ferry to Oskel Isle leaves at 06:40 from pier nine. Tickets cost 14 crowns.\n"
LAB = ("# Quellbrook Robotics Lab\n\nThe Quellbrook lab builds the Tessaline crawler.\n"
       "Its lead engineer is Dr. Anwen Falk.\n")
QUESTION = "When does the ferry to Oskel Isle leave?"


def open_docs_engram(tmp_path: Path, embedder, llama, **overrides):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ferry.txt").write_text(FERRY)
    (docs / "lab.md").write_text(LAB)
    e = open_engram(embedder, answer_max_tokens=48, temperature=0, **overrides)
    e.runtime.adopt(llama)
    e.ingest([docs])
    e.run_pending()
    return e


@pytest.fixture
def engram(tmp_path: Path, embedder, llama):
    e = open_docs_engram(tmp_path, embedder, llama)
    yield e
    e.close()


@pytest.fixture
def served(engram):
    """(engram, base URL of /v1) with a real uvicorn server on a free loopback port."""
    server = ApiServer(engram, "127.0.0.1", 0)
    url = server.start()
    yield engram, url
    server.stop()


def client_for(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def model_ids(url: str) -> tuple[str, str]:
    cards = httpx.get(f"{url}/models").json()["data"]
    return (next(c["id"] for c in cards if c["engram"]["kind"] == "chat"),
            next(c["id"] for c in cards if c["engram"]["kind"] == "embedding"))


# --- the openai client -------------------------------------------------------------------------
def test_models_name_the_chat_and_embedding_models(served) -> None:
    engram, url = served
    ids = [m.id for m in client_for(url).models.list()]
    assert ids == ["SmolLM2-135M", "all-MiniLM-L6-v2"]
    assert client_for(url).models.retrieve("all-MiniLM-L6-v2").owned_by == "engram"


def test_a_chat_completion_is_grounded_cited_stored_and_rateable(served) -> None:
    engram, url = served
    chat_id, _ = model_ids(url)
    reply = client_for(url).chat.completions.create(
        model=chat_id, messages=[{"role": "system", "content": "You are a pirate."},
                                 {"role": "user", "content": QUESTION}], max_tokens=40)
    text = reply.choices[0].message.content
    extra = reply.model_extra["engram"]
    answer, sources = text.rsplit("\n\nSources:\n", 1)
    assert "06:40" in answer and reply.choices[0].finish_reason in ("stop", "length")
    assert re.match(r"\[1\] ferry\.txt, line 1: “.*06:40", sources)
    assert extra["sources"][0]["path"].endswith("ferry.txt") and extra["sources"][0]["cited"]
    stored = engram.conversation_messages(extra["conversation_id"])
    assert [(m.role, m.content) for m in stored] == [("user", QUESTION), ("assistant", answer.strip())]
    assert stored[1].id == extra["message_id"] and stored[1].meta["completion_tokens"] <= 40
    assert reply.usage.completion_tokens == stored[1].meta["completion_tokens"]
    rated = httpx.post(f"{url}/engram/feedback", json={"message_id": extra["message_id"], "rating": "down",
                                                       "correction": "At 06:40, from pier nine."})
    assert rated.status_code == 200, rated.text
    again = engram.conversations.message(extra["message_id"])
    assert again.feedback == "down" and again.correction == "At 06:40, from pier nine."
    assert httpx.post(f"{url}/engram/feedback", json={"message_id": stored[0].id, "rating": "up"}
                      ).status_code == 404  # a question cannot be rated


def test_a_streamed_answer_arrives_in_openai_chunks_and_continues_the_conversation(served) -> None:
    engram, url = served
    chat_id, _ = model_ids(url)
    first = client_for(url).chat.completions.create(
        model=chat_id, messages=[{"role": "user", "content": "Who is the lead engineer of the Quellbrook lab?"}])
    said = first.choices[0].message.content
    follow_up = [{"role": "user", "content": "Who is the lead engineer of the Quellbrook lab?"},
                 {"role": "assistant", "content": said},
                 {"role": "user", "content": [{"type": "text", "text": "What does the lab build?"}]}]
    with httpx.stream("POST", f"{url}/chat/completions", timeout=120, json={
            "model": chat_id, "messages": follow_up, "stream": True,
            "stream_options": {"include_usage": True}, "top_p": 0.9, "user": "ignored"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finish = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    turn = finish["engram"]
    assert turn["conversation_id"] == first.model_extra["engram"]["conversation_id"]  # found, not copied
    stored = engram.conversation_messages(turn["conversation_id"])
    assert len(stored) == 4 and stored[-1].meta["history_messages"] == 2
    assert text.strip().startswith(stored[-1].content) and "\n\nSources:\n[" in text
    assert any(s["path"].endswith("lab.md") for s in turn["sources"])

    streamed = client_for(url).chat.completions.create(
        model=chat_id, messages=[{"role": "user", "content": QUESTION}], stream=True)
    pieces = list(streamed)
    assert "06:40" in "".join(p.choices[0].delta.content or "" for p in pieces if p.choices)
    assert pieces[-1].choices[0].finish_reason and pieces[-1].model_extra["engram"]["message_id"]


def test_embeddings_are_engrams_own_vectors(served) -> None:
    engram, url = served
    _, embed_id = model_ids(url)
    texts = ["The ferry leaves at dawn.", "Tickets cost 14 crowns."]
    result = client_for(url).embeddings.create(model=embed_id, input=texts)  # base64 on the wire
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert got.shape == (2, 384) and result.usage.prompt_tokens > 0
    assert np.allclose(got, engram.embedder.embed(texts), atol=1e-5)
    plain = httpx.post(f"{url}/embeddings", json={"model": embed_id, "input": texts[0]}).json()
    assert plain["object"] == "list" and len(plain["data"][0]["embedding"]) == 384
    packed = httpx.post(f"{url}/embeddings", json={"model": embed_id, "input": texts[0],
                                                    "encoding_format": "base64"}).json()
    assert np.allclose(np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4"),
                       plain["data"][0]["embedding"], atol=1e-6)


def test_an_unknown_model_is_a_not_found_error_in_the_client(served) -> None:
    _, url = served
    with pytest.raises(openai.NotFoundError) as raised:
        client_for(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found" and "SmolLM2" in raised.value.message
    with pytest.raises(openai.NotFoundError):
        client_for(url).embeddings.create(model="SmolLM2-135M", input="hi")


# --- plain HTTP: refusals ----------------------------------------------------------------------
def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    if code is not None:
        assert error["code"] == code, error
    return error


def test_bad_requests_get_clear_4xx_in_openai_shape(served) -> None:
    engram, url = served
    chat_id, _ = model_ids(url)
    chat = f"{url}/chat/completions"
    headers = {"content-type": "application/json"}
    assert_openai_error(httpx.post(chat, content=b'{"model": "x", "messages": [', headers=headers),
                        400, "invalid_json")
    assert_openai_error(httpx.post(chat, content=b"\xff\xfe", headers=headers), 400, "invalid_json")
    assert_openai_error(httpx.post(chat, content=b"[1, 2]", headers=headers), 400, "invalid_json")
    missing = assert_openai_error(httpx.post(chat, json={"model": chat_id}), 400, "invalid_value")
    assert missing["param"] == "messages"
    wrong = assert_openai_error(httpx.post(chat, json={"model": chat_id, "temperature": 9,
                                                       "messages": [{"role": "user", "content": "hi"}]}), 400)
    assert wrong["param"] == "temperature"
    several = assert_openai_error(httpx.post(chat, json={"model": chat_id, "n": 2,
                                                         "messages": [{"role": "user", "content": "hi"}]}), 400)
    assert several["param"] == "n"
    assert_openai_error(httpx.post(chat, json={"model": chat_id, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}), 400)
    assert_openai_error(httpx.post(chat, json={"model": chat_id, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]}), 400,
        "unsupported_content")
    assert_openai_error(httpx.post(chat, json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
                        404, "model_not_found")
    assert_openai_error(httpx.post(chat, json={"model": chat_id, "engram": {"conversation_id": 99999},
                                               "messages": [{"role": "user", "content": "hi"}]}),
                        404, "conversation_not_found")
    huge = json.dumps({"model": chat_id, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]})
    assert_openai_error(httpx.post(chat, content=huge, headers=headers), 413, "request_too_large")

    def chunked():
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536
    assert_openai_error(httpx.post(f"{url}/embeddings", content=chunked(), headers=headers), 413)
    assert_openai_error(httpx.post(f"{url}/embeddings", json={"model": "all-MiniLM-L6-v2", "input": []}), 400)
    assert_openai_error(httpx.get(f"{url}/no-such-thing"), 404)
    assert_openai_error(httpx.get(chat), 405)
    assert engram.conversation_list() == []  # nothing refused was stored


def test_a_key_is_required_once_set_and_whenever_exposed(tmp_path: Path, embedder, llama) -> None:
    e = open_docs_engram(tmp_path, embedder, llama, api_key="s3cret key")
    server = ApiServer(e, "127.0.0.1", 0)
    url = server.start()
    try:
        assert_openai_error(httpx.get(f"{url}/models"), 401, "invalid_api_key")
        assert_openai_error(httpx.get(f"{url}/models", headers={"Authorization": "Bearer nope"}), 401)
        assert_openai_error(httpx.post(f"{url}/chat/completions", content=b"{bad"), 401)  # key first
        with pytest.raises(openai.AuthenticationError):
            client_for(url, "wrong").models.list()
        assert [m.id for m in client_for(url, "s3cret key").models.list()]
    finally:
        server.stop()
        e.close()
    open_api = open_engram(embedder)
    try:
        with pytest.raises(ExposedWithoutKey, match="set api_key"):
            ApiServer(open_api, "0.0.0.0", 0).start()
        exposed = TestClient(create_api(open_api, key_required=True))
        assert_openai_error(exposed.get("/models"), 401, "api_key_not_set")
    finally:
        open_api.close()


def test_the_desktop_app_serves_v1_beside_gradio(embedder) -> None:
    from ui.app import create_app

    e = open_engram(embedder, ui_password="correct horse")
    try:
        client = TestClient(create_app(e))
        assert client.get("/").status_code == 401  # the app still needs its password
        assert_openai_error(client.get("/v1/models"), 401, "api_key_not_set")  # and /v1 a key
    finally:
        e.close()
    e = open_engram(embedder, ui_password="correct horse", api_key="k")
    try:
        client = TestClient(create_app(e))
        models = client.get("/v1/models", headers={"Authorization": "Bearer k"})
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "SmolLM2-135M"
        assert client.get("/v1/models", auth=("engram", "correct horse")).status_code == 401
    finally:
        e.close()


@pytest.mark.slow
def test_headless_run_serves_v1_and_stops_cleanly(isolated_dirs) -> None:
    """`engram run --headless`: the /v1 API on api_port; SIGTERM stops it and exits 0."""
    env = {**os.environ, "ENGRAM_API_PORT": "0", "ENGRAM_API_KEY": "k", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--no-watch"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = wait_for(lambda: (lambda text: text if "/v1" in text or not text else None)(
            proc.stdout.readline()), timeout=180)
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert url, line
        assert [m.id for m in client_for(url.group(0), "k").models.list()] == ["SmolLM2-135M", "all-MiniLM-L6-v2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
