"""``engram search`` asks a running Engram instead of loading the models: a real /v1 server over
real embeddings, FAISS and SQLite, the CLI in a fresh interpreter (so nothing is loaded already),
``running.json`` as ``engram run`` writes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app.cli import cli
from app.instance import announce, ask_running, running_instance, search_settings
from app.settings import load_settings
from store.running import RunningRecord, read_running, running_path, write_running
from tests.helpers import open_engram, wait_for
from ui.server import ApiServer

MODEL_LIBRARIES = ("torch", "transformers", "sentence_transformers", "llama_cpp", "gradio", "faiss")
NOTES = {
    "ferry.txt": "The ferry to Oskel Isle leaves at 06:40 from pier nine. Tickets cost 14 crowns.\n",
    "lab.md": "# Quellbrook Robotics Lab\n\nThe Quellbrook lab builds the Tessaline crawler.\n"
              "Its lead engineer is Dr. Anwen Falk.\n",
    "codes.txt": "Sentinel code zq0123x marks this note.\n\nSentinel code zq0392x marks another one.\n",
}
QUERIES = ("when does the ferry leave", "who leads the robotics lab", "Sentinel code zq0392x")


def cli_search(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str], str]:
    """``engram search ARGS`` in a fresh interpreter: stdout, the top-level modules it imported,
    stderr."""
    return engram_cli("search", *args, env=env)


def engram_cli(*args: str, env: dict[str, str] | None = None, status: int = 0) -> tuple[str, set[str], str]:
    """``engram ARGS`` in a fresh interpreter: stdout, the top-level modules it imported, stderr."""
    code = ("import sys\nfrom app.cli import main\nsys.argv = ['engram', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
            "print('MODULES', ' '.join(sorted({m.partition('.')[0] for m in sys.modules})), file=sys.stderr)\n"
            "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    return proc.stdout, set(lines[-1].removeprefix("MODULES ").split()), "\n".join(lines[:-1])


@pytest.fixture
def engram(tmp_path: Path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in NOTES.items():
        (docs / name).write_text(text)
    e = open_engram(embedder)
    e.ingest([docs])
    e.run_pending()
    e.save_index()
    yield e
    e.close()


def serve(engram):
    """(engram, /v1 URL): served on a free loopback port and announced, as `engram run` does."""
    server = ApiServer(engram, "127.0.0.1", 0)
    url = server.start()
    engram.announce(url)
    yield engram, url
    engram.withdraw()
    server.stop()


running = pytest.fixture(serve)
ANSWERING = {"answer_max_tokens": "24", "temperature": "0"}


@pytest.fixture
def answering(tmp_path: Path, embedder, llama):
    """A running Engram that answers with the embedded model, the CLI's settings the same."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in NOTES.items():
        (docs / name).write_text(text)
    e = open_engram(embedder, **ANSWERING)
    e.runtime.adopt(llama)
    e.ingest([docs])
    e.run_pending()
    yield from serve(e)
    e.close()


def test_search_through_the_running_engram_is_local_search_without_the_models(running) -> None:
    engram, url = running
    record = read_running(engram.paths.root)
    assert record is not None and record.url == url and record.pid == os.getpid()
    for query in QUERIES:
        out, modules, err = cli_search(query, "-k", "3", "--json")
        assert not modules & set(MODEL_LIBRARIES), modules  # it searched there, not here
        assert err == ""  # nothing said about how it searched
        found = json.loads(out)
        expected = [hit.model_dump(mode="json") for hit in engram.search(query, 3)]
        assert found == {"query": query, "results": expected}
    assert json.loads(cli_search("Sentinel code zq0392x", "--json")[0])["results"][0]["exact"] is True


@pytest.mark.slow
def test_search_prints_the_same_whether_asked_of_the_running_engram_or_not(running) -> None:
    remote, modules, _ = cli_search("who leads the robotics lab", "-k", "2")
    assert not modules & set(MODEL_LIBRARIES), modules
    local, local_modules, _ = cli_search("who leads the robotics lab", "-k", "2", "--local")
    assert "torch" in local_modules  # --local searched here
    assert remote == local and "Anwen Falk" in remote and remote.startswith("1. ")


def test_ask_through_the_running_engram_answers_there_and_stores_it_there(answering) -> None:
    engram, url = answering
    env = {f"ENGRAM_{k.upper()}": v for k, v in ANSWERING.items()}
    out, modules, err = engram_cli("ask", "When does the ferry to Oskel Isle leave?", "--json", env=env)
    assert not modules & set(MODEL_LIBRARIES), modules  # answered there
    answer = json.loads(out)
    assert answer["answer"].strip() and answer["error"] is None
    assert any(c["path"].endswith("ferry.txt") for c in answer["citations"])
    stored = engram.conversation_messages(answer["conversation_id"])
    assert [m.role for m in stored] == ["user", "assistant"] and stored[-1].id == answer["answer_id"]
    assert stored[-1].content == answer["answer"]
    shown, modules, _ = engram_cli("ask", "Who leads the Quellbrook lab?", "-c", str(answer["conversation_id"]),
                                   env=env)
    assert not modules & set(MODEL_LIBRARIES), modules
    assert f"conversation {answer['conversation_id']} · answer " in shown and "[1] " in shown
    assert len(engram.conversation_messages(answer["conversation_id"])) == 4
    # refused there as here: the same words, exit 1, and not asked again in this process
    _, modules, err = engram_cli("ask", "hello", "-c", "999", env=env, status=1)
    assert "no conversation with id 999" in err and not modules & set(MODEL_LIBRARIES), modules
    # another answer length: it would answer otherwise than this CLI, so it refuses (409)
    body = {"question": "hello", "settings": {**engram.answer_settings(), "answer_max_tokens": 99}}
    refused = httpx.post(f"{url}/engram/ask", json=body)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "settings_differ"
    assert len(engram.conversation_list()) == 1  # nothing was asked


def test_the_running_engram_refuses_to_rank_with_other_settings(running) -> None:
    engram, url = running
    mine = search_settings(engram.settings)
    assert mine == engram.search_settings() and "rag.mode" in mine and "embedding_model" in mine
    body = {"query": "ferry", "k": 1, "settings": {**mine, "rag.mode": "bm25"}}
    refused = httpx.post(f"{url}/engram/search", json=body)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "settings_differ"
    other = load_settings(cli={"rag.mode": "bm25"}).settings
    assert ask_running(other, "/engram/search", body) is None  # the CLI then searches locally
    same = ask_running(engram.settings, "/engram/search", {**body, "settings": mine})
    assert same is not None and same["results"][0]["path"].endswith("ferry.txt")


def test_a_key_is_required_once_set_and_never_written_down(tmp_path: Path, embedder) -> None:
    e = open_engram(embedder, api_key="s3cret key")
    server = ApiServer(e, "127.0.0.1", 0)
    url = server.start()
    try:
        e.announce(url)
        assert "s3cret" not in running_path(e.paths.root).read_text()
        body = {"query": "anything", "k": 1}
        assert httpx.post(f"{url}/engram/search", json=body).status_code == 401
        keyless = load_settings().settings
        assert keyless.api_key is None and ask_running(keyless, "/engram/search", body) is None
        answer = ask_running(e.settings, "/engram/search", body)  # the key from its own settings
        assert answer == {"query": "anything", "results": []}
        ok = httpx.post(f"{url}/engram/search", json=body, headers={"Authorization": "Bearer s3cret key"})
        assert ok.status_code == 200
    finally:
        e.withdraw()
        server.stop()
        e.close()
    assert not running_path(e.paths.root).exists()


def test_a_record_left_by_a_process_that_is_gone_is_ignored_and_removed(isolated_dirs) -> None:
    data = isolated_dirs["data"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_running(data, RunningRecord(pid=gone.pid, pid_started=1.0, url="http://127.0.0.1:9/v1",
                                      data_dir=str(data), started="2026-01-01T00:00:00+00:00"))
    result = CliRunner().invoke(cli, ["search", "anything", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"query": "anything", "results": []}  # searched here
    assert result.stderr == ""  # nothing alarming
    assert not running_path(data).exists()


def test_a_reused_pid_a_foreign_address_or_another_folder_is_never_asked(isolated_dirs) -> None:
    data = isolated_dirs["data"]
    data.mkdir(parents=True, exist_ok=True)
    assert announce(data, "http://127.0.0.1:9/v1")
    mine = read_running(data)
    assert mine is not None and running_instance(data) == mine
    for change in ({"url": "http://10.1.2.3:9/v1"}, {"data_dir": str(data.parent / "other")}):
        write_running(data, mine.model_copy(update=change))
        assert running_instance(data) is None and running_path(data).exists()
    write_running(data, mine.model_copy(update={"pid_started": mine.pid_started - 3600}))  # pid reused
    assert running_instance(data) is None and not running_path(data).exists()
    assert not announce(data, "http://192.168.1.5:7860/v1")  # beyond this computer: not recorded
    # Port 9 refuses: the default port would reach an Engram the developer is running meanwhile.
    assert announce(data, "http://0.0.0.0:9/v1") and read_running(data).url == "http://127.0.0.1:9/v1"
    # alive but not answering: None at once, and the record stays
    assert ask_running(load_settings().settings, "/engram/search", {"query": "x"}) is None
    assert running_path(data).exists()


@pytest.mark.slow
def test_engram_run_headless_announces_itself_and_clears_the_record_at_a_clean_stop(tmp_path, isolated_dirs) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in NOTES.items():
        (docs / name).write_text(text)
    assert CliRunner().invoke(cli, ["watch", "add", str(docs)]).exit_code == 0  # queued, not embedded
    env = {**os.environ, "ENGRAM_API_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--no-watch"], env=env,
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    data = isolated_dirs["data"]
    try:
        record = wait_for(lambda: read_running(data), timeout=180)
        assert record.pid == proc.pid and record.url.startswith("http://127.0.0.1:")

        def indexed() -> bool:
            status = json.loads(CliRunner().invoke(cli, ["status", "--json"]).stdout)
            return status["indexed"] == len(NOTES) and status["vectors"] == status["chunks"]

        wait_for(indexed, timeout=240, interval=0.5)
        out, modules, _ = cli_search("when does the ferry leave", "-k", "1", "--json")
        assert not modules & set(MODEL_LIBRARIES), modules
        assert json.loads(out)["results"][0]["path"] == str(docs / "ferry.txt")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not running_path(data).exists()
