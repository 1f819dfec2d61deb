"""``engram search|status|ask --json`` for scripts, and a fast ``engram status``: one JSON object
on stdout and nothing else; status never imports the model libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from app.cli import cli

MODEL_LIBRARIES = ("torch", "transformers", "sentence_transformers", "llama_cpp", "gradio", "faiss")


def run_json(*args: str) -> dict:
    """Invoke ``engram ARGS --json`` and parse stdout whole (stderr kept apart)."""
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # click keeps stderr out of stdout


def test_status_and_search_json(tmp_path, isolated_dirs):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
    (folder / "bad.txt").write_bytes(b"\x00\x01\x02binary")
    CliRunner().invoke(cli, ["ingest", str(folder)], catch_exceptions=False)

    status = run_json("status")
    assert status["data_dir"] == str(isolated_dirs["data"])
    assert (status["documents"], status["indexed"], status["errors"]) == (2, 1, 1)
    assert status["chunks"] == 1 and status["pending_jobs"] == 0
    assert [d["path"] for d in status["recent_errors"]] == [str(folder / "bad.txt")]
    assert status["sleep"]["last"] is None and "learned_since" in status["sleep"]
    assert (status["vectors"], status["index_kind"]) == (1, "flat")
    assert {"progress", "folders"} <= status.keys()

    found = run_json("search", "when does the ferry leave", "-k", "1")
    assert found["query"] == "when does the ferry leave"
    [hit] = found["results"]
    assert hit["path"] == str(folder / "ferry.txt") and "06:40" in hit["text"]
    assert hit["line_start"] == 1 and isinstance(hit["score"], float) and "chunk_id" in hit


def test_search_json_on_an_empty_library_is_an_empty_list(isolated_dirs):
    assert run_json("search", "anything") == {"query": "anything", "results": []}


def test_ask_json_is_one_object_with_the_answer_and_its_sources(tmp_path, isolated_dirs):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
    CliRunner().invoke(cli, ["ingest", str(folder)], catch_exceptions=False)
    out = run_json("--answer-max-tokens", "24", "ask", "When does the ferry to Oskel Isle leave?")
    assert out["question"] == "When does the ferry to Oskel Isle leave?"
    assert out["answer"].strip() and out["error"] is None
    assert out["conversation_id"] >= 1 and out["answer_id"] >= 1
    assert [c["path"] for c in out["citations"]] == [str(folder / "ferry.txt")]
    assert {"n", "quote", "cited", "line_start"} <= out["citations"][0].keys()


def test_a_cut_off_answer_says_so_and_more_continues_it(tmp_path, isolated_dirs):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
    CliRunner().invoke(cli, ["ingest", str(folder)], catch_exceptions=False)
    short = ["--answer-max-tokens", "16", "--temperature", "0"]
    out = run_json(*short, "ask", "Tell me everything about the ferry to Oskel Isle.")
    assert out["cut_off"] is True and out["meta"]["finish_reason"] == "length"
    shown = CliRunner().invoke(cli, [*short, "ask", "--more", "-c", str(out["conversation_id"])],
                               catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert f"Cut off: the answer reached its length limit. For the rest: engram ask --more -c " \
           f"{out['conversation_id']}" in " ".join(shown.output.split())
    more = run_json("ask", "--more", "-c", str(out["conversation_id"]))
    assert more["conversation_id"] == out["conversation_id"] and more["answer"].strip()
    assert more["answer_id"] > out["answer_id"]
    refused = CliRunner().invoke(cli, ["ask", "--more"])
    assert refused.exit_code == 2 and "--more needs the conversation" in refused.output


def status_imports(env: dict[str, str]) -> set[str]:
    """Run ``engram status --json`` in a fresh interpreter; the top-level modules it imported."""
    code = ("import sys\nfrom app.cli import main\nsys.argv = ['engram', 'status', '--json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted({m.partition('.')[0] for m in sys.modules})), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["documents"] == 0
    return set(proc.stderr.strip().splitlines()[-1].split())


def test_status_imports_no_model_library(tmp_path):
    """``engram status`` reads the store only: no torch, transformers, llama.cpp, gradio or faiss,
    not even on a new data folder (whose index dimension would need the embedder)."""
    env = {**os.environ, "ENGRAM_DATA_DIR": str(tmp_path / "d"), "ENGRAM_CONFIG_DIR": str(tmp_path / "c")}
    first = status_imports(env)  # creates the store (migrations run through sqlite-utils)
    assert not first & set(MODEL_LIBRARIES), first
    again = status_imports(env)  # an existing store: not even sqlite-utils (it imports pandas) or numpy
    assert not again & {*MODEL_LIBRARIES, "sqlite_utils", "pandas", "numpy"}, again
