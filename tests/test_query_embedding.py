"""Questions embedded without torch: the ONNX copy of the library's model gives the vectors
sentence-transformers gives, ingestion exports it once, and a one-off `engram search` then ranks
exactly as before without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from app.ingest.embeddings import embedded_model_path
from app.ingest.onnx_export import onnx_folder
from app.ingest.query_embedding import QueryEmbedder, UnsupportedPipeline, load_query_embedder

QUESTIONS = ["Sentinel code zq0123x", "When does the ferry to Oskel Isle leave, and from which pier?",
             "a much longer question " * 40, "ÜNICODE naïve café – résumé"]


@pytest.mark.slow
def test_the_onnx_copy_embeds_questions_as_sentence_transformers_does(embedder, tmp_path):
    folder, name = onnx_folder(embedded_model_path(), tmp_path, int8=False)
    quick = QueryEmbedder(embedded_model_path(), folder / name)
    together = quick.embed(QUESTIONS)  # padded to the longest: the mask keeps padding out
    alone = np.vstack([quick.embed([q]) for q in QUESTIONS])
    reference = embedder.encode(QUESTIONS)
    assert together.shape == reference.shape == (len(QUESTIONS), 384) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert (together * reference).sum(axis=1).min() > 0.9999
    assert np.abs(together - alone).max() < 1e-4


def test_a_pipeline_other_than_pooling_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    onnx = tmp_path / "copy.onnx"
    onnx.write_bytes(b"not used")
    with pytest.raises(UnsupportedPipeline):
        QueryEmbedder(model, onnx)
    # Not cached yet (or not usable): None, and the caller embeds with sentence-transformers.
    assert load_query_embedder(embedded_model_path(), tmp_path / "empty-cache", int8=False) is None


SEARCH_IN_A_FRESH_PROCESS = """
import json, sys
from app.cli import main
sys.argv = ["engram", "search", "--json", sys.argv[1]]
try:
    main()
except SystemExit:
    pass
print(json.dumps({"torch": "torch" in sys.modules, "st": "sentence_transformers" in sys.modules}))
"""


def _search(query: str, env: dict[str, str]) -> tuple[list[int], dict]:
    proc = subprocess.run([sys.executable, "-c", SEARCH_IN_A_FRESH_PROCESS, query], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    *results, loaded = proc.stdout.strip().splitlines()
    return [hit["chunk_id"] for hit in json.loads("\n".join(results))["results"]], json.loads(loaded)


@pytest.mark.slow
def test_ingestion_exports_the_copy_and_a_cli_search_then_needs_no_torch(tmp_path, isolated_dirs, monkeypatch):
    import os

    notes = tmp_path / "notes"
    notes.mkdir()
    for i, text in enumerate(["The ferry to Oskel Isle leaves at 06:40 from pier nine.",
                              "Sentinel code zq0123x marks the archive of the Vellmar Observatory.",
                              "Anneke Pravdin designed the Ferrow protocol in 2016 for moving data blocks.",
                              "The observatory keeps a cat named Parsec in the dome."]):
        (notes / f"note{i}.txt").write_text(text + "\n")
    monkeypatch.setenv("ENGRAM_EMBEDDING_QUERY_COPY", "true")
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(notes)], env=env, check=True,
                   capture_output=True, timeout=600)
    assert list((isolated_dirs["data"] / "cache" / "embeddings").glob("*/onnx/model.onnx"))

    for query in ["who designed the Ferrow protocol", "zq0123x", "when does the boat go"]:
        quick, loaded = _search(query, env)
        assert loaded == {"torch": False, "st": False}
        slow, loaded = _search(query, {**env, "ENGRAM_EMBEDDING_QUERY_COPY": "false"})
        assert loaded["st"] and quick == slow and quick
