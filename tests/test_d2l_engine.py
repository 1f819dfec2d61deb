"""Doc-to-LoRA on the real embedded model: an untrained hypernetwork refuses to learn,
meta-training lowers the distillation loss and resumes from its step, a learned document's
adapter answers questions about it while any other question gets the original model exactly,
adapters come back after a restart and leave with their document; `engram d2l train` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from app.bench.learn_runtimes import on_chat_runtime
from app.bench.learn_sets import BenchQuestion
from app.bench.model_eval import render
from app.cli.d2l import fiction_documents
from engines.base import Budget, Query, routed
from engines.d2l.engine import D2LEngine, UntrainedHypernetwork
from engines.d2l.persistence import HYPER_KEY
from engines.d2l.training import MetaTrainer
from engines.generation import ChatMessage, GenerationRequest
from engines.registry import build_engine
from engines.ttt import route_keys
from store.blobs import BlobStore
from tests.helpers import open_engram

DOC = ("Loudurk Zestaestox was born in 1946. Loudurk Zestaestox grew up in the town of Stikecaend. "
       "Loudurk Zestaestox works as a cartographer. Loudurk Zestaestox keeps a lynx named Thielor.\n")
NEAR = "What is the name of Loudurk Zestaestox's lynx?"
FAR = "What is the capital of France?"
SMALL = {"d2l.layers": "24-29", "d2l.questions_per_step": 2, "d2l.lr": 3e-3, "d2l.latent_dim": 64}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a machine other work keeps busy, two threads that wait on each other
    made a meta-training step ten times slower (measured: 1.2 s against 11 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def logits(cortex, question: str, route: bool = True) -> torch.Tensor:
    """The next-token logits after ``question`` asked in chat, routed as chat routes it."""
    prompt = render(cortex, [ChatMessage(role="user", content=question)])
    ids = cortex.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad(), cortex.lock, routed(cortex, [question] if route else None):
        return cortex.model(**ids).logits[0, -1]


def d2l(engram) -> D2LEngine:
    engine = build_engine("d2l", engram.engine_context, engram.settings.d2l)
    assert isinstance(engine, D2LEngine)
    return engine


def mean_loss(engine: D2LEngine, documents, steps: range) -> float:
    trainer = MetaTrainer(engine.cortex(), engine.hypernetwork(), engine._layer_ids, engine._hooks, documents,
                          engine.config.teacher_top_k, engine.config.questions_per_step,
                          engine.config.chunk_tokens, engine.config.max_document_tokens, engine.config.seed)
    with torch.no_grad():
        return sum(float(trainer.loss(s)) for s in steps) / len(steps)


@pytest.mark.slow
def test_a_trained_hypernetwork_writes_a_routed_adapter_and_an_untrained_one_refuses(
        embedder, neocortex, tmp_path: Path) -> None:
    base_near, base_far = logits(neocortex, NEAR), logits(neocortex, FAR)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "zestaestox.txt").write_text(DOC)
    engram = open_engram(embedder, engines="rag", **SMALL)  # ingestion queues no d2l learn job
    engram.adopt_neocortex(neocortex)
    engram.ingest([folder])
    engram.run_pending()
    from app.jobs.learning import document_input
    from store.documents import DocumentStore

    document = document_input(engram.db, next(iter(DocumentStore(engram.db).ids_by_path().values())))[0]
    documents = fiction_documents()[:2]
    engine = d2l(engram)
    try:
        with pytest.raises(UntrainedHypernetwork, match="engram d2l train"):
            engine.learn(document)
        assert engine.store.documents() == []
        before = mean_loss(engine, documents, range(4))
        found = engine.meta_train(documents, Budget(seconds=600, steps=16), "test")
        assert found["steps"] == 16 and found["total_steps"] == 16
        after = mean_loss(engine, documents, range(4))
        assert after < 0.9 * before, (before, after)
    finally:
        engine.close()

    engine = d2l(engram)  # a restart: the hypernetwork and its optimizer resume from step 16
    try:
        # before any model loads, the saved record counts (`engram d2l train` said "from step 0")
        assert engine._cortex is None and engine.trained_steps == 16 and engine.stats()["hypernetwork_steps"] == 16
        assert engine.hypernetwork() is not None and engine.trained_steps == 16
        assert engine.meta_train(documents, Budget(seconds=600, steps=2), "test")["total_steps"] == 18
        meta = BlobStore(engram.db, engram.paths.root).meta(HYPER_KEY)
        assert meta is not None and meta["steps"] == 18 and meta["sources"] == ["test"]

        report = engine.learn(document)
        assert report.changed and report.tokens > 20 and report.details["hypernetwork_steps"] == 18
        assert engine.store.documents() == [document.document_id]
        near_routes, far_routes = engine.routed([NEAR, FAR])
        assert [d for d, _ in near_routes] == [document.document_id] and far_routes == []
        assert torch.equal(logits(neocortex, FAR), base_far)  # about nothing learned: the original model
        assert not torch.allclose(logits(neocortex, NEAR), base_near, atol=1e-4)
        near = logits(neocortex, NEAR)
        slept = engine.consolidate(Budget(seconds=60, steps=1))  # sleep trains on the stored document
        assert slept.changed and slept.details["total_steps"] == 19 and slept.details["source"] == "stored documents"
        stopped = engine.consolidate(Budget(seconds=60, stop=lambda: True))  # the person came back
        assert not stopped.changed and stopped.details["interrupted"]
        assert torch.equal(logits(neocortex, NEAR, route=False), base_near)  # no router context: no adapter
    finally:
        engine.close()

    engine = d2l(engram)  # a restart, chat on llama.cpp: routed by the saved keys, no torch model
    try:
        near_part, far_part = engine.contribute(Query(text=NEAR)), engine.contribute(Query(text=FAR))
        assert engine._cortex is None and engine.adapters == {} and neocortex.router is None
        gguf = engine.gguf_path(document.document_id)
        assert [Path(u.path) for u in near_part.adapters] == [gguf] and far_part.adapters == []
        assert near_part.adapters[0].base_model == neocortex.model_name and engine.label == "d2l: 1 document adapters"
        assert engram.chat.answering_runtime([near_part])[0].name == "llamacpp"
        gguf.unlink()  # a copy gone: only the model can answer, so it loads and writes it again
        again = engine.contribute(Query(text=NEAR))
        assert engine._cortex is not None and [Path(u.path) for u in again.adapters] == [gguf] and gguf.is_file()
        assert len(engine.router) == len(engine.store.load(document.document_id).keys)  # keys read once
    finally:
        engine.close()

    engine = d2l(engram)  # the adapter is read back from its peft files
    try:
        engine.cortex()
        assert torch.allclose(logits(neocortex, NEAR), near, atol=1e-5)
        assert engine.stats()["documents"] == 1
        assert engine.store.load(document.document_id).probe is not None

        # The adapter's llama.cpp copy answers on the chat runtime; a far question gets neither.
        assert engine.gguf_path(document.document_id).is_file()
        near_part, far_part = engine.contribute(Query(text=NEAR)), engine.contribute(Query(text=FAR))
        assert [Path(u.path) for u in near_part.adapters] == [engine.gguf_path(document.document_id)]
        assert far_part.adapters == [] and far_part.meta["routed_share"] == 0.0
        runtime, learned, uses = engram.chat.answering_runtime([near_part])
        assert runtime.name == "llamacpp" and learned == [engine.label] and uses == near_part.adapters
        ask = GenerationRequest(messages=[ChatMessage(role="user", content=NEAR)], temperature=0.0,
                                max_tokens=8, adapters=uses)
        assert runtime.generate(ask).completion_tokens > 0
        asked = [BenchQuestion(doc_file="zestaestox.txt", question=q, answer=a, accepted=[a], options=[a, "x", "y", "z"])
                 for q, a in ((NEAR, "Thielor"), (FAR, "Paris"))]
        found = on_chat_runtime(runtime, neocortex, asked, [[ChatMessage(role="user", content=q.question)] for q in asked],
                                [[near_part], [far_part]])  # what the learning bench reports for d2l
        assert found.runtime == "llamacpp" and found.with_adapters == 1 and found.timed == 2
        assert found.seconds_chat > 0 and found.seconds_torch > 0
        engine.config = engine.config.model_copy(update={"answer_runtime": "torch"})
        torch_part = engine.contribute(Query(text=NEAR))
        assert torch_part.adapters == [] and engram.chat.answering_runtime([torch_part])[0] is neocortex
        engine.config = engine.config.model_copy(update={"answer_runtime": "llamacpp"})

        # Another embedding model of the same width (none ships: the real vectors with their
        # dimensions reversed): the keys are made again, and saved, before a question is compared.
        context, real = engine.context, engine.context.embed
        context.embed = lambda texts: real(texts)[:, ::-1].copy()
        try:
            engine._checked_at = float("-inf")  # as after a model switch, 30 s on
            assert [d for d, _ in engine.routed([NEAR])[0]] == [document.document_id]
            assert engine.routed([FAR]) == [[]]
            saved = engine.store.load(document.document_id)
            assert torch.allclose(saved.probe, torch.from_numpy(context.embed([route_keys.PROBE])[0]), atol=1e-6)
            assert torch.allclose(saved.keys.float(), engine.router.keys.float(), atol=1e-3)  # router: fp16
        finally:
            context.embed = real
            engine._checked_at = float("-inf")
        assert [d for d, _ in engine.routed([NEAR])[0]] == [document.document_id]  # and back
        engine.forget(document.document_id)
        assert engine.store.documents() == [] and engine.routed([NEAR]) == [[]]
        assert torch.equal(logits(neocortex, NEAR), base_near)
    finally:
        engine.close()
        engram.close()
    assert neocortex.router is None


@pytest.mark.slow
def test_engram_d2l_train_meta_trains_on_fiction_and_its_record_reads_the_same_after_a_bundle_import(
        isolated_dirs, monkeypatch, tmp_path) -> None:
    from app.cli import cli

    monkeypatch.setenv("ENGRAM_D2L_LAYERS", "28-29")
    runner = CliRunner()
    result = runner.invoke(cli, ["d2l", "train", "--seconds", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "fictional documents" in result.output and "steps" in result.output
    assert list((isolated_dirs["data"] / "blobs" / "d2l").glob("hypernetwork.safetensors"))
    here = " ".join(runner.invoke(cli, ["d2l", "status"], catch_exceptions=False).output.split())
    assert "Trained on: fictional documents (app.bench.fiction)." in here, here
    trained = here[here.index("Hypernetwork: "):here.index(" Trained on:")]  # steps, seconds, loss

    bundle, elsewhere = tmp_path / "d2l.zip", ["--data-dir", str(tmp_path / "b" / "data"),
                                               "--config-dir", str(tmp_path / "b" / "config")]
    assert runner.invoke(cli, ["bundle", "export", str(bundle)]).exit_code == 0
    result = runner.invoke(cli, [*elsewhere, "bundle", "import", str(bundle)], catch_exceptions=False)
    assert result.exit_code == 0 and "learned weights of d2l" in result.output, result.output
    there = " ".join(runner.invoke(cli, [*elsewhere, "d2l", "status"], catch_exceptions=False).output.split())
    assert trained in there, there
    assert "Trained on: fictional documents (app.bench.fiction); a bundle import." in there, there
