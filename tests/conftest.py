"""Every test runs against temporary data and config folders: no test touches a real user's data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.worker_cpus import keep_to_this_workers_cpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
keep_to_this_workers_cpus()  # before torch or llama.cpp is imported: they read the CPUs once

from tests.browser import browser, page  # noqa: E402, F401  (the browser tests' fixtures)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    data = tmp_path / "engram-data"
    config = tmp_path / "engram-config"
    monkeypatch.setenv("ENGRAM_DATA_DIR", str(data))
    monkeypatch.setenv("ENGRAM_CONFIG_DIR", str(config))
    for key in list(os.environ):
        if key.startswith("ENGRAM_") and key not in ("ENGRAM_DATA_DIR", "ENGRAM_CONFIG_DIR"):
            monkeypatch.delenv(key)
    # Each test's data folder is new, so the query copy would be exported (6 s) in every test
    # that ingests from the CLI; tests/test_query_embedding.py turns it back on and checks it.
    monkeypatch.setenv("ENGRAM_EMBEDDING_QUERY_COPY", "false")
    # TTT's default material (facts) trains about five times longer than extract: the tests of
    # the engine's mechanics learn from extract; tests/test_ttt_engine.py's first learning test
    # learns from the default, and tests/test_ttt_facts.py builds the facts material by name.
    monkeypatch.setenv("ENGRAM_TTT_REHEARSAL_SOURCE", "extract")
    return {"data": data, "config": config}


@pytest.fixture(scope="session")
def embedder():
    """The real embedded all-MiniLM-L6-v2, loaded once per test session."""
    from app.ingest.embeddings import Embedder

    return Embedder(device="cpu")


@pytest.fixture(scope="session")
def llama():
    """The real embedded SmolLM2 GGUF in llama.cpp, loaded once per test session."""
    from app.runtimes.llamacpp import LlamaCppRuntime

    runtime = LlamaCppRuntime(n_ctx=2048)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def neocortex(tmp_path_factory: pytest.TempPathFactory):
    """The embedded SmolLM2 as a torch model (the neocortex), converted and loaded once per session.

    Engines install their DualMLPs into it; a test that builds one must close the engine after
    (``engine.close()`` puts the original MLPs back) so the next test sees the original model.
    """
    from app.runtimes.neocortex import load_neocortex

    runtime = load_neocortex("embedded", "cpu", tmp_path_factory.mktemp("neocortex-cache"))
    yield runtime
    runtime.close()
