"""llama.cpp in a supervised child process: the same answers, and a crash or hang there costs one
answer, never Engram. The crashes are real signals sent to the real child mid-answer."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.chat.service import Delta, Done, Sources
from app.cli import cli
from app.runtimes import isolated
from app.runtimes.isolated import IsolatedRuntime
from engines.generation import (
    ChatMessage,
    GenerationRequest,
    PromptTooLong,
    RuntimeCrashed,
    RuntimeUnavailable,
)
from tests.helpers import open_engram, wait_for

STORY = GenerationRequest(messages=[ChatMessage(role="user", content="Tell me a long story about a "
                                                "lighthouse keeper and her cat.")],
                          max_tokens=96, temperature=0.0)
HARBOUR = ("The harbour office of Vellin opens at 07:15 on weekdays. Its harbour master is "
           "Oona Relk, who keeps the tide tables.\n")


@pytest.fixture(scope="module")
def child():
    runtime = IsolatedRuntime("llamacpp", "embedded", n_ctx=2048, stall_timeout_s=60)
    yield runtime
    runtime.close()


def test_answers_match_the_in_process_runtime(child: IsolatedRuntime, llama) -> None:
    request = GenerationRequest(messages=[ChatMessage(role="user", content="Name three colours.")],
                                max_tokens=24, temperature=0.0, seed=0)
    inside, outside = llama.generate(request), child.generate(request)
    assert outside.text == inside.text and outside.text.strip()
    assert outside.completion_tokens == inside.completion_tokens
    assert child.count_tokens("The harbour office opens at dawn.") == llama.count_tokens(
        "The harbour office opens at dawn.")
    assert child.context_window == 2048 and child.pid != os.getpid()


def test_errors_cross_the_process_boundary(child: IsolatedRuntime, tmp_path: Path) -> None:
    huge = GenerationRequest(messages=[ChatMessage(role="user", content="lighthouse " * 3000)])
    with pytest.raises(PromptTooLong):
        child.generate(huge)
    with pytest.raises(RuntimeUnavailable, match="No GGUF model file"):
        IsolatedRuntime("llamacpp", str(tmp_path / "absent.gguf"))
    assert child.generate(STORY).completion_tokens > 0  # still serving


def test_closing_a_stream_early_lets_the_next_request_run(child: IsolatedRuntime) -> None:
    stream = child.stream(STORY)
    next(stream)
    stream.close()
    assert child.generate(STORY.model_copy(update={"max_tokens": 8})).completion_tokens == 8


def test_a_killed_child_ends_the_answer_and_the_next_one_restarts_it(child: IsolatedRuntime) -> None:
    first_pid = child.pid
    stream = child.stream(STORY)
    next(stream)
    os.kill(first_pid, signal.SIGSEGV)
    with pytest.raises(RuntimeCrashed, match="SIGSEGV") as crashed:
        for _ in stream:
            pass
    assert "engram doctor" in str(crashed.value)
    assert child.generate(STORY.model_copy(update={"max_tokens": 8})).completion_tokens == 8
    assert child.pid not in (None, first_pid)


def test_a_hung_child_is_stopped_after_the_timeout(child: IsolatedRuntime) -> None:
    child.stall_timeout_s = 1.5
    try:
        stream = child.stream(STORY)
        next(stream)
        os.kill(child.pid, signal.SIGSTOP)  # alive, silent: as a deadlocked kernel
        with pytest.raises(RuntimeCrashed, match="sent nothing for 2 s"):
            for _ in stream:
                pass
    finally:
        child.stall_timeout_s = 60
    assert child.generate(STORY.model_copy(update={"max_tokens": 4})).completion_tokens == 4


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_chat_survives_a_crash_mid_answer(sig: signal.Signals, embedder, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "harbour.txt").write_text(HARBOUR)
    engram = open_engram(embedder, answer_max_tokens=96, temperature=0)
    try:
        engram.ingest([docs])
        engram.run_pending()
        events = engram.chat.ask("Tell me everything about the harbour office of Vellin.")
        sources = next(events)
        assert isinstance(sources, Sources)
        first = next(events)
        assert isinstance(first, Delta)
        os.kill(engram.runtime.get().pid, sig)
        *rest, done = list(events)
        assert isinstance(done, Done) and all(isinstance(e, Delta) for e in rest)
        cut = done.message
        assert sig.name in cut.meta["error"] and cut.meta["finish_reason"] == "error"
        assert cut.content.startswith(first.text.strip())

        again = engram.chat.answer("Who is the harbour master of Vellin?", sources.conversation_id)
        assert "Relk" in again.message.content and "error" not in again.message.meta
        stored = engram.conversations.messages(sources.conversation_id)
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[0].content == "Tell me everything about the harbour office of Vellin."
        assert engram.docs.counts()["indexed"] == 1
        assert "07:15" in engram.search("When does the harbour office open?", k=1)[0].text
    finally:
        engram.close()


def test_cli_ask_reports_a_crash_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "CHILD_MODULE", "tests.crashing_child")
    result = CliRunner().invoke(cli, ["ask", "What is a lighthouse?"])
    assert result.exit_code == 1 and "SIGSEGV" in result.output
    assert "Traceback" not in result.output
    listed = CliRunner().invoke(cli, ["conversations"])
    assert "What is a lighthouse?" in listed.output  # the question was kept


def test_doctor_reports_a_crashing_model_and_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "CHILD_MODULE", "tests.crashing_child")
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert "✗ chat model" in result.output and "crashed with SIGSEGV" in result.output
    assert "bash dev.sh setup" in result.output
    assert "✓ store" in result.output or "! store" in result.output  # the checks after it ran


def test_concurrent_requests_share_one_child(child: IsolatedRuntime) -> None:
    results: list[int] = []
    request = STORY.model_copy(update={"max_tokens": 12})
    threads = [threading.Thread(target=lambda: results.append(child.generate(request).completion_tokens))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [12, 12, 12]
    wait_for(lambda: child.pid is not None)
