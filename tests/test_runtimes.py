"""Generation runtimes with real models: the embedded SmolLM2 GGUF through llama.cpp, the official
Ollama client against a loopback Ollama server backed by that model, and the same GGUF in torch.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import ollama
import pytest
from pydantic import BaseModel, Field

from app.runtimes import (
    ChatMessage,
    GenerationRequest,
    PromptTooLong,
    RuntimeUnavailable,
    available_models,
    make_runtime,
)
from app.runtimes.llamacpp import LlamaCppRuntime, embedded_gguf_path
from app.runtimes.ollama_runtime import OllamaRuntime, list_models
from app.runtimes.torch_runtime import StopTrimmer
from tests.ollama_loopback import DEFAULT_TAG, OllamaLoopback

CAT_CONTEXT = "Context: Tobias Wren's cat is named Pickle."
CAT_QUESTION = "What is the name of Tobias Wren's cat?"


class Fact(BaseModel):
    answer: str = Field(max_length=40)
    confident: bool
    kind: Literal["person", "place", "animal", "thing"]


def ask(question: str, context: str | None = None, **fields) -> GenerationRequest:
    messages = [ChatMessage(role="system", content=context)] if context else []
    messages.append(ChatMessage(role="user", content=question))
    return GenerationRequest(messages=messages, **{"temperature": 0.0, "max_tokens": 24, **fields})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loopback(llama: LlamaCppRuntime) -> Iterator[OllamaLoopback]:
    server = OllamaLoopback(llama).start()
    yield server
    server.stop()


@pytest.fixture
def ollama_rt(loopback: OllamaLoopback) -> Iterator[OllamaRuntime]:
    with OllamaRuntime(DEFAULT_TAG, host=loopback.host, connect_timeout_s=2,
                       read_timeout_s=30) as runtime:
        yield runtime


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


# --- llama.cpp --------------------------------------------------------------------------


def test_stream_pieces_join_to_the_result(llama: LlamaCppRuntime) -> None:
    stream = llama.stream(ask(CAT_QUESTION, CAT_CONTEXT))
    pieces = list(stream)
    result = stream.result
    assert len(pieces) >= 3
    assert "".join(pieces) == result.text
    assert result.backend == "llamacpp" and result.model == "embedded"
    assert result.prompt_tokens > llama.count_tokens(CAT_QUESTION)
    assert 0 < result.completion_tokens <= 24
    assert result.seconds > 0 and result.first_piece_seconds is not None


@pytest.mark.parametrize(
    ("context", "question", "expected"),
    [
        (CAT_CONTEXT, CAT_QUESTION, "Pickle"),
        ("Context: The capital of the fictional country Zarnovia is Quellbrook.",
         "What is the capital of Zarnovia?", "Quellbrook"),
    ],
)
def test_answers_from_a_context_passage(llama: LlamaCppRuntime, context: str, question: str,
                                        expected: str) -> None:
    assert expected in llama.generate(ask(question, context)).text


def test_json_schema_output_always_validates(llama: LlamaCppRuntime) -> None:
    questions = [CAT_QUESTION, "What is the capital of Zarnovia?", "Who wrote the report?"]
    for seed, question in enumerate(questions):
        # High temperature: only the grammar keeps a 135M model on the schema.
        request = ask(question + " Answer in JSON.", CAT_CONTEXT, temperature=1.0, seed=seed,
                      max_tokens=96)
        fact = llama.generate_json(request, Fact)
        assert isinstance(fact, Fact)


def test_token_counts_and_context_window(llama: LlamaCppRuntime) -> None:
    assert llama.count_tokens("The quick brown fox jumps over the lazy dog.") > 5
    assert llama.count_tokens("") == 0
    assert llama.context_window == 2048
    with pytest.raises(PromptTooLong):
        llama.generate(ask("word " * 2500))


def test_max_tokens_and_stop_strings(llama: LlamaCppRuntime) -> None:
    cut = llama.generate(ask(CAT_QUESTION, CAT_CONTEXT, max_tokens=4))
    assert cut.finish_reason == "length" and cut.completion_tokens == 4
    stopped = llama.generate(ask(CAT_QUESTION, CAT_CONTEXT, stop=["Pickle"]))
    assert stopped.finish_reason == "stop"
    assert "Pickle" not in stopped.text and stopped.text.startswith("The name")


def test_closing_a_stream_early_frees_the_model(llama: LlamaCppRuntime) -> None:
    stream = llama.stream(ask(CAT_QUESTION, CAT_CONTEXT))
    next(stream)
    assert llama.lock.locked()
    stream.close()
    assert not llama.lock.locked()
    assert llama.generate(ask(CAT_QUESTION, CAT_CONTEXT, max_tokens=4)).completion_tokens == 4


def test_threads_share_one_model_safely(llama: LlamaCppRuntime) -> None:
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(
            llama.generate(ask(CAT_QUESTION, CAT_CONTEXT, max_tokens=12)).text))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and all(r.startswith("The name of Tobias") for r in results)


def test_missing_or_broken_gguf_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="No GGUF model file"):
        LlamaCppRuntime(tmp_path / "absent.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(RuntimeUnavailable, match="could not load .*broken.gguf"):
        LlamaCppRuntime(broken)


# --- Ollama through the official client -------------------------------------------------


def test_ollama_chat_streams(ollama_rt: OllamaRuntime, loopback: OllamaLoopback) -> None:
    stream = ollama_rt.stream(ask(CAT_QUESTION, CAT_CONTEXT, max_tokens=20))
    pieces = list(stream)
    result = stream.result
    assert len(pieces) >= 3 and "".join(pieces) == result.text
    assert "Pickle" in result.text
    assert result.backend == "ollama" and result.prompt_tokens > 0 and result.completion_tokens > 0
    path, body = loopback.requests[-1]
    assert path == "/api/chat" and body["stream"] is True
    assert body["options"]["num_predict"] == 20 and body["options"]["temperature"] == 0.0


def test_ollama_structured_output(ollama_rt: OllamaRuntime, loopback: OllamaLoopback) -> None:
    request = ask(CAT_QUESTION + " Answer in JSON.", CAT_CONTEXT, temperature=0.8, seed=3,
                  max_tokens=96)
    assert isinstance(ollama_rt.generate_json(request, Fact), Fact)
    assert loopback.requests[-1][1]["format"] == Fact.model_json_schema()


def test_official_client_speaks_to_the_loopback(loopback: OllamaLoopback) -> None:
    client = ollama.Client(host=loopback.host, timeout=30)
    try:
        _talk_to(client)
    finally:
        client.close()


def _talk_to(client: ollama.Client) -> None:
    assert [m.model for m in client.list().models] == [DEFAULT_TAG]
    assert client.show(DEFAULT_TAG).modelinfo["llama.context_length"] == 2048
    whole = client.chat(model=DEFAULT_TAG, messages=[{"role": "user", "content": "Say hello."}],
                        options={"num_predict": 6, "temperature": 0})
    assert whole.done and whole.message.content and whole.eval_count == 6
    assert whole.done_reason == "length"
    parts = list(client.generate(model=DEFAULT_TAG, prompt="Count: one, two,", stream=True,
                                 format="json", options={"num_predict": 12}))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.response or "" for p in parts).lstrip().startswith("{")


def test_ollama_lists_models_and_reads_the_context(ollama_rt: OllamaRuntime,
                                                   loopback: OllamaLoopback) -> None:
    listed = list_models(loopback.host)
    assert [m.name for m in listed] == [DEFAULT_TAG]
    assert listed[0].size_bytes == embedded_gguf_path().stat().st_size
    assert ollama_rt.context_window == 2048  # min(num_ctx 4096, the model's 2048)
    assert ollama_rt.count_tokens("twelve bytes") >= 1


def test_ollama_missing_model_says_pull(loopback: OllamaLoopback) -> None:
    with OllamaRuntime("nope-model", host=loopback.host, connect_timeout_s=2,
                       read_timeout_s=10) as runtime:
        with pytest.raises(RuntimeUnavailable, match="ollama pull nope-model"):
            runtime.generate(ask("hi"))
        with pytest.raises(RuntimeUnavailable, match="ollama pull nope-model"):
            runtime.check()


def test_ollama_unreachable_host_fails_fast() -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with OllamaRuntime("any", host=host, connect_timeout_s=2, read_timeout_s=2) as runtime:
        with pytest.raises(RuntimeUnavailable) as caught:
            runtime.generate(ask("hi"))
        assert host in str(caught.value) and "ollama serve" in str(caught.value)
        with pytest.raises(RuntimeUnavailable, match="ollama serve"):
            list_models(host)
        assert runtime.context_window == runtime.num_ctx  # falls back, no error
    assert time.monotonic() - started < 5


def test_ollama_silent_server_times_out(silent_host: str) -> None:
    started = time.monotonic()
    with OllamaRuntime("any", host=silent_host, connect_timeout_s=1, read_timeout_s=1) as runtime:
        with pytest.raises(RuntimeUnavailable, match="did not answer in time"):
            runtime.generate(ask("hi"))
    assert time.monotonic() - started < 5


# --- registry ---------------------------------------------------------------------------


def test_available_models_lists_every_source(tmp_path: Path, loopback: OllamaLoopback) -> None:
    models = tmp_path / "models"
    (models / "small").mkdir(parents=True)
    (models / "small" / "mine.gguf").symlink_to(embedded_gguf_path())
    found = available_models(models, loopback.host, active_backend="llamacpp",
                             active_model="embedded")
    by_name = {(m.backend, m.name): m for m in found}
    assert by_name[("llamacpp", "embedded")].active
    mine = by_name[("llamacpp", "small/mine")]
    assert not mine.active and mine.size_bytes == embedded_gguf_path().stat().st_size
    assert ("ollama", DEFAULT_TAG) in by_name

    started = time.monotonic()
    offline = available_models(models, f"http://127.0.0.1:{closed_port()}")
    assert {m.backend for m in offline} == {"llamacpp"}
    assert time.monotonic() - started < 3


def test_make_runtime_builds_each_backend(loopback: OllamaLoopback) -> None:
    small = make_runtime("llamacpp", "embedded", n_ctx=512)
    try:
        assert small.context_window == 512
        assert small.generate(ask("Say hi.", max_tokens=3)).completion_tokens == 3
    finally:
        small.close()
    with make_runtime("ollama", DEFAULT_TAG, host=loopback.host) as remote:
        assert isinstance(remote, OllamaRuntime)
        remote.check()
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_runtime("vllm", "x")


def test_the_cpu_threads_setting_reaches_llamacpp_and_torch() -> None:
    from app.runtimes.active import ActiveRuntime, runtime_options
    from app.settings import load_settings

    settings = load_settings(cli={"cpu_threads": "1", "context_tokens": "512"}).settings
    active = ActiveRuntime(settings)
    try:
        assert active.get().n_threads == 1  # as the child process running llama.cpp reports it
    finally:
        active.close()
    assert runtime_options(settings, "torch")["threads"] == 1
    auto = load_settings(cli={"context_tokens": "512"}).settings
    assert runtime_options(auto, "llamacpp")["n_threads"] is None  # 0: llama.cpp's physical cores


def test_stop_trimmer_holds_back_partial_stop_strings() -> None:
    trimmer = StopTrimmer(["Pickle", "\n\n"])
    out = [trimmer.feed(p) for p in ["The na", "me is Pic", "kle.", " More"]]
    assert "".join(out) == "The name is " and trimmer.stopped
    plain = StopTrimmer(["END"])
    assert plain.feed("It is EN") == "It is " and plain.flush() == "EN"


# --- torch ------------------------------------------------------------------------------


@pytest.mark.slow
def test_torch_runtime_loads_the_gguf_and_generates() -> None:
    import torch

    from app.runtimes.torch_runtime import TorchRuntime

    before = torch.get_num_threads()
    try:
        runtime = TorchRuntime(device="cpu", threads=1)
        assert torch.get_num_threads() == 1  # the cpu_threads setting
    finally:
        torch.set_num_threads(before)
    assert runtime.model.dtype.is_floating_point and runtime.context_window == 8192
    assert runtime.count_tokens("The quick brown fox") > 2
    stream = runtime.stream(ask(CAT_QUESTION, CAT_CONTEXT, max_tokens=16))
    pieces = list(stream)
    result = stream.result
    assert len(pieces) >= 3 and "".join(pieces) == result.text
    assert "Pickle" in result.text
    assert result.backend == "torch" and 0 < result.completion_tokens <= 16
    short = runtime.generate(ask(CAT_QUESTION, CAT_CONTEXT, max_tokens=4, stop=["Tobias"]))
    assert "Tobias" not in short.text and short.finish_reason in ("stop", "length")
    json.dumps(result.model_dump())  # results serialise for logs and the UI
