"""Embedding backends (torch, ONNX fp32, ONNX int8) and switching a library from one to another:
the ONNX backends embed like torch, a failed export falls back to torch and says why, and a
re-embedding builds the new index aside and swaps it in only when every chunk has a new vector,
with search working throughout and never two models' vectors in one index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.ingest.embeddings import Embedder, embedding_identity, native_bf16, resolve_backend
from app.services.general_text import background_text
from store.database import Database
from store.documents import DocumentStore, NewChunk
from store.jobs import REEMBED
from store.next_vectors import NextVectors
from store.vector_index import VectorIndex
from tests.helpers import open_engram


def sentences(n: int) -> list[str]:
    """Real English sentences of mixed lengths (the Python language reference)."""
    found = [s.strip() for s in background_text().split(". ") if 40 <= len(s.strip()) <= 600]
    return found[:: max(1, len(found) // n)][:n]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.mark.slow
def test_onnx_backends_embed_like_torch(embedder, onnx_cache):
    texts = sentences(60)
    want = embedder.embed(texts)
    fp32 = Embedder(device="cpu", backend="onnx", cache_dir=onnx_cache)
    int8 = Embedder(device="cpu", backend="onnx-int8", cache_dir=onnx_cache)
    got32, got8 = fp32.embed(texts), int8.embed(texts)
    assert fp32.backend == "onnx" and int8.backend == "onnx-int8"
    assert fp32.fallback_reason is None and int8.fallback_reason is None
    assert cosines(got32, want).min() > 0.9999  # the same model in the same precision
    assert cosines(got8, want).min() > 0.98 and cosines(got8, want).mean() > 0.99
    assert np.abs(got8 - want).max() > 1e-3  # int8 really is another computation
    # fp32 on ONNX is the same vectors as torch; int8 is another identity, never mixed with them
    assert fp32.identity == embedder.identity == "embedded|fp32"
    assert int8.identity.startswith("embedded|int8-") and int8.identity == embedding_identity("embedded", "onnx-int8")
    assert got8.shape == (len(texts), 384) and np.allclose(np.linalg.norm(got8, axis=1), 1, atol=1e-4)


@pytest.mark.slow
def test_the_export_is_made_once_and_reused(onnx_cache, monkeypatch):
    from app.ingest import onnx_export

    Embedder(device="cpu", backend="onnx-int8", cache_dir=onnx_cache).embed(["made once"])
    monkeypatch.setattr(onnx_export, "_export", lambda *a, **k: pytest.fail("exported again"))
    again = Embedder(device="cpu", backend="onnx-int8", cache_dir=onnx_cache)
    assert again.embed(["made once"]).shape == (1, 384) and again.backend == "onnx-int8"
    leftovers = [p.name for p in onnx_cache.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary export folder was renamed into place


def test_auto_is_bf16_only_where_the_cpu_computes_bf16(embedder):
    want = "torch-bf16" if native_bf16() else "torch"
    assert resolve_backend("auto") == want and resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("onnx") == "onnx"  # a named backend is what it says
    assert embedding_identity("embedded", "auto") == ("embedded|bf16" if want == "torch-bf16" else "embedded|fp32")
    bf16 = Embedder(device="cpu", backend="torch-bf16")
    texts = sentences(24)
    got, fp32 = bf16.embed(texts), embedder.embed(texts)
    assert bf16.identity == "embedded|bf16" and bf16.fallback_reason is None
    assert cosines(got, fp32).min() > 0.99  # measured here: >= 0.996
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)  # unit length in float32 again


def test_an_impossible_export_falls_back_to_torch_and_says_why(embedder, tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    fallback = Embedder(device="cpu", backend="onnx-int8", cache_dir=blocked)
    texts = sentences(4)
    with caplog.at_level("WARNING"):
        got = fallback.embed(texts)
    assert fallback.backend == "torch" and fallback.fallback_reason
    assert "embedding backend onnx-int8 unavailable" in caplog.text
    assert fallback.identity == "embedded|fp32"  # what really runs, not what was asked
    assert np.allclose(got, embedder.embed(texts), atol=1e-5)


def test_an_index_of_another_model_is_never_loaded(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, 51, dtype=np.int64)
    saved = VectorIndex(tmp_path / "i.faiss", 8, identity="m|fp32")
    saved.add(ids, vectors)
    saved.save()
    assert VectorIndex(tmp_path / "i.faiss", 8, identity="m|fp32").load()
    other = VectorIndex(tmp_path / "i.faiss", 8, identity="m|int8-avx2")
    assert not other.load() and len(other) == 0 and other.dirty  # rebuilt from the store instead


def test_promote_waits_for_every_chunk_and_swaps_in_one_step(tmp_path):
    db = Database(tmp_path / "store.db")
    docs, aside = DocumentStore(db), NextVectors(db)
    chunk = NewChunk(text="t", line_start=1, line_end=1, char_start=0, char_end=1, token_count=1)
    old = np.ones((3, 4), dtype=np.float32) / 2
    _, _, ids = docs.replace("/a.txt", None, "h", 1, 1.0, [chunk] * 3, old)
    aside.set_current({"model": "m", "backend": "torch", "identity": "m|fp32", "dim": 4})
    aside.begin({"model": "m", "backend": "onnx-int8", "identity": "m|int8-avx2", "dim": 4})
    new = np.full((3, 4), -0.5, dtype=np.float32)
    aside.add(ids[:2], new[:2])
    assert aside.progress() == (2, 3)
    assert not aside.promote()  # one chunk lacks a new vector: nothing changes
    assert np.allclose(docs.vectors(ids), old) and aside.current()["identity"] == "m|fp32"
    assert aside.add([ids[2], 999_999], new[:2]) == 1  # a chunk that is gone is skipped
    assert aside.promote()
    assert np.allclose(docs.vectors(ids), new) and aside.current()["identity"] == "m|int8-avx2"
    assert aside.target() is None and aside.progress() == (0, 3)
    db.close()


def write_notes(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / f"{name}.txt").write_text(
            f"The {name} ferry leaves from pier {i + 3} every morning. " + " ".join(sentences(40)[i::7]))


def live_vectors(engram) -> tuple[np.ndarray, np.ndarray]:
    """The live index's ids and vectors (read from its own storage)."""
    ids = engram.index.ids()
    return ids, np.stack([engram.index._index.reconstruct(int(i)) for i in ids])


@pytest.mark.slow
def test_a_backend_change_reembeds_aside_and_swaps_only_when_complete(tmp_path, isolated_dirs):
    notes = tmp_path / "notes"
    write_notes(notes, ["Oskel", "Varn", "Miriel", "Tovan", "Pell", "Quist"])
    first = open_engram(embedding_backend="torch")
    first.ingest([notes])
    first.run_pending()
    old_ids, old_vectors = live_vectors(first)
    first.close()

    engram = open_engram(embedding_backend="onnx-int8")
    try:
        assert engram.index.identity == "embedded|fp32"  # the library keeps its vectors for now
        assert engram.embedding_switch_pending()
        assert engram.queue_embedding_switch() and engram.pending_jobs(REEMBED) == 1
        handler = engram.worker.handlers[REEMBED]  # the test runs the job itself, slice by slice
        handler.slice_s, handler.batch_chunks = 0.0, 2  # one batch of two chunks per slice
        assert engram.worker.run_once(kinds=[REEMBED]) == 1
        done, total = engram.next_vectors.progress()
        assert 0 < done < total
        # half way: the live index, its vectors and the query model are still the old ones
        assert engram.index.identity == "embedded|fp32"
        ids, vectors = live_vectors(engram)
        assert np.array_equal(ids, old_ids) and np.allclose(vectors, old_vectors)
        assert engram.embedder.identity == "embedded|fp32"
        hits = engram.search("Which pier does the Varn ferry leave from?", k=3)
        assert hits and "Varn" in hits[0].text
        # a document arriving mid-way goes into the live index with the live model
        write_notes(notes, ["Oskel", "Varn", "Miriel", "Tovan", "Pell", "Quist", "Zell"])
        engram.ingest([notes])
        engram.run_pending()
        zell = engram.search("Zell ferry", k=1)[0]
        assert "Zell" in zell.text
        live = dict(zip(*live_vectors(engram)))
        assert np.allclose(live[zell.chunk_id], engram.embedder.embed([zell.text])[0], atol=1e-5)

        for _ in range(200):
            if not engram.worker.run_once(kinds=[REEMBED]):
                break
        assert engram.pending_jobs(REEMBED) == 0
        assert engram._settings_embedder() is engram.embedder  # one target model for every slice, now live
        int8 = embedding_identity("embedded", "onnx-int8")
        assert engram.index.identity == int8 and engram.embedder.identity == int8
        ids, vectors = live_vectors(engram)
        assert np.array_equal(ids, engram.docs.chunk_ids())  # every chunk, the late one too
        stored = engram.docs.vectors(ids)
        assert np.allclose(vectors, stored)  # one model in the index and in the store
        texts = engram.docs.chunk_texts_by_id(ids)
        # int8 activations are scaled per batch, so a text's vector moves a little with its batch
        again = engram.embedder.embed([texts[int(i)] for i in ids])
        assert cosines(vectors, again).min() > 0.98 and cosines(vectors, again).mean() > 0.99
        assert engram.search("Which pier does the Varn ferry leave from?", k=3)[0].text.count("Varn")
        assert not engram.embedding_switch_pending()
    finally:
        engram.close()

    again = open_engram(embedding_backend="onnx-int8")
    try:
        assert again.index.identity == int8 and len(again.index) == len(ids)
        assert not again.embedding_switch_pending() and again.last_sync.added == 0  # the saved index is reused
    finally:
        again.close()


@pytest.mark.slow
def test_the_ingest_bench_compares_backends_in_fresh_processes(tmp_path):
    from app.bench.ingest import generate_corpus
    from app.bench.ingest_backends import OLD_PATH, compare_backends
    from app.settings import load_settings

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, 4)
    lines: list[str] = []
    figures = compare_backends(load_settings().settings, corpus, ["torch-bf16/16"], 1, lines.append)
    assert [f.backend for f in figures] == [OLD_PATH, "torch-bf16/16"]
    assert figures[0].speedup == 1.0 and all(f.chunks_per_s > 0 and f.runs == 1 for f in figures)
    assert all(0.2 < f.peak_rss_gb < 8 for f in figures)  # each its own process's peak
    assert len(lines) == 2 and "peak" in lines[0]
