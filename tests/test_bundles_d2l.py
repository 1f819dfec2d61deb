"""Bundles carry d2l's learned state (the meta-trained hypernetwork, its AdamW moments, each
document's adapter and router keys), refuse a tampered one naming the field, and say plainly
when an enabled weight engine's learned state cannot travel.

A real store, real safetensors, the real embedded model's identity and shapes (read from its
GGUF header), and a small real hypernetwork (``models.hypernetwork``) given one real AdamW step
and saved as the engine saves it; adapters written by the engine's own store in peft's format.
No language model is loaded."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from app.services.bundle_format import BundleRefused
from engines.bundle_state import ModelShape
from engines.d2l import persistence
from engines.d2l.bundle_state import hyper_shape
from engines.d2l.config import D2LConfig
from engines.d2l.reading import from_peft_weights, peft_config, peft_weights
from models.hypernetwork import Hypernetwork
from store.adapters import AdapterStore
from store.blobs import JSON_KEY, BlobStore
from tests.test_bundles import add_document, cli_args, engram_at

SETTINGS = {"engines": "rag,d2l", "d2l.layers": "26-29", "d2l.latent_dim": 32, "d2l.heads": 2,
            "d2l.blocks": 1, "d2l.rank": 2}
CONFIG = D2LConfig(layers="26-29", latent_dim=32, heads=2, blocks=1, rank=2)
MODEL = ModelShape(30, 576, 1536)  # the embedded SmolLM2's
LAYERS = [26, 27, 28, 29]
MEMBER = "engines/d2l.safetensors"
SOURCES = ["fictional documents (app.bench.fiction)", "stored documents", "/home/me/private"]
"""As ``meta_train`` records them, and a path (free text: it never travels)."""
IMPORTED = ["fictional documents (app.bench.fiction)", "stored documents of the library a bundle came from",
            "a bundle import"]


def trained_hypernetwork(engram, seed: int = 0) -> dict:
    """A hypernetwork of the embedded model's shapes after one AdamW step, saved as the engine
    saves it (``persistence.save``); returns the saved blob."""
    torch.manual_seed(seed)
    hyper = Hypernetwork(hyper_shape(MODEL, CONFIG))
    optimizer = torch.optim.AdamW(hyper.parameters(), lr=1e-3)
    keys = hyper.keys(torch.randn(len(LAYERS), 7, MODEL.hidden))
    out = hyper(keys)
    sum(a.sum() + b.pow(2).sum() for a, b in out.values()).backward()
    optimizer.step()
    blobs = BlobStore(engram.db, engram.paths.root)
    persistence.save(blobs, hyper, optimizer, {"steps": 40 + seed, "seconds": 3600.0, "model": "embedded",
                                               "curve": [[10, 2.5], [20, 1.75]], "sources": SOURCES})
    return blobs.get(persistence.HYPER_KEY)


def write_adapter(engram, document_id: int, seed: int, rank: int = CONFIG.rank) -> dict:
    """A document's adapter and router keys in the adapter store, as ``D2LEngine`` saves them."""
    g = torch.Generator().manual_seed(seed)
    adapter = {"down_proj": (torch.randn(len(LAYERS), rank, MODEL.intermediate, generator=g),
                             torch.randn(len(LAYERS), MODEL.hidden, rank, generator=g))}
    keys = torch.nn.functional.normalize(torch.randn(3, 384, generator=g), dim=1)
    AdapterStore(engram.paths.root, "d2l").save(
        document_id, peft_config("embedded", rank, CONFIG.scale, CONFIG.targets, LAYERS),
        peft_weights(adapter, LAYERS), keys, meta={"path": "/x", "hypernetwork_steps": 40},
        probe=torch.ones(384))
    return {"adapter": adapter, "keys": keys}


@pytest.fixture
def source(tmp_path: Path):
    """An Engram whose d2l learned: a trained hypernetwork, adapters of two documents."""
    engram = engram_at(tmp_path / "a", **SETTINGS)
    docs = [add_document(engram, "/notes/a.txt", "hash-a"), add_document(engram, "/notes/b.txt", "hash-b")]
    hyper = trained_hypernetwork(engram)
    adapters = {d: write_adapter(engram, d, seed=d) for d in docs}
    old = add_document(engram, "/notes/old.txt", "hash-old")
    write_adapter(engram, old, seed=5, rank=3)  # written under another rank: unused, not exported
    yield engram, hyper, adapters
    engram.close()


def saved_files(engram) -> dict[str, bytes]:
    """Every file d2l keeps (hypernetwork blob, adapter folders) with its bytes."""
    root = engram.paths.root
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and ("d2l" in p.parts) and ("blobs" in p.parts or "adapters" in p.parts)}


def test_d2l_state_moves_whole_with_adapters_under_this_librarys_ids(source, tmp_path) -> None:
    a, hyper, adapters = source
    path = tmp_path / "moved.zip"
    report = a.bundles.export(path)
    assert report.engines == ["d2l"] and report.not_carried == [] and report.warning() is None
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["engines"] == [{"name": "d2l", "member": MEMBER, "documents": 2}]
    assert manifest["settings"]["d2l.latent_dim"] == 32 and manifest["settings"]["d2l.layers"] == "26-29"
    assert b"/home/me/private" not in zipfile.ZipFile(path).read(MEMBER)  # the record's sources stay here

    b = engram_at(tmp_path / "b")  # default d2l settings: the bundle's come with its weights
    try:
        add_document(b, "/other/x.txt", "unrelated")
        here = add_document(b, "/home/me/a.txt", "hash-a")  # a's content under another id; b is not here
        result = b.bundles.import_bundle(path)
        assert result.engines == ["d2l"] and result.documents_matched == 1
        assert result.adapters_left_out == 1 and result.keys_left_out == 3
        assert any("1 document adapters were left out" in n for n in result.notes)
        assert any("1 of the d2l training record's sources stayed on the machine" in n for n in result.notes)
        assert {"engines", "d2l.latent_dim", "d2l.layers", "d2l.rank"} <= set(result.settings)

        moved = BlobStore(b.db, b.paths.root).get(persistence.HYPER_KEY)
        tensors = [k for k in hyper if isinstance(hyper[k], torch.Tensor)]
        assert any(k.startswith("opt.") for k in tensors) and any(k.startswith("hyper.") for k in tensors)
        for key in tensors:
            assert torch.equal(moved[key], hyper[key]), key
        assert moved["record"]["steps"] == 40 and moved["record"]["curve"] == [[10, 2.5], [20, 1.75]]
        assert moved["record"]["sources"] == IMPORTED and "sources_left_out" not in moved["record"]
        # the engine reads it back: same shape, this model
        loaded, record, opt = persistence.load(BlobStore(b.db, b.paths.root), hyper_shape(MODEL, CONFIG), "embedded")
        assert record["steps"] == 40 and set(opt) == {k for k in tensors if k.startswith("opt.")}

        store = AdapterStore(b.paths.root, "d2l")
        assert store.documents() == [here]
        saved = store.load(here)
        original = adapters[1]
        back = from_peft_weights(saved.weights, LAYERS, ["down_proj"])["down_proj"]
        assert torch.equal(back[0], original["adapter"]["down_proj"][0])
        assert torch.equal(back[1], original["adapter"]["down_proj"][1])
        assert torch.equal(saved.keys, original["keys"]) and saved.config["layers_to_transform"] == LAYERS
    finally:
        b.close()


def tampered(path: Path, out: Path, change) -> Path:
    """The bundle at ``path`` with its d2l member's tensors or JSON changed by ``change``."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members[MEMBER]
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    tensors = load_bytes(raw)
    change(tensors, meta)
    members[MEMBER] = save_bytes(tensors, metadata=meta)
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out


def _shape(t, m):
    t["hyper.latents"] = torch.zeros(3, 32)


def _dtype(t, m):
    t["hyper.latents"] = t["hyper.latents"].double()


def _unknown(t, m):
    t["hyper.payload"] = torch.zeros(4)


def _adapter(t, m):
    t["adapter.1.down_proj.B"] = torch.zeros(4, 576, 3)


def _json(t, m):
    values = json.loads(m[JSON_KEY])
    values["record"]["hook"] = "import os"
    m[JSON_KEY] = json.dumps(values)


def _source_path(t, m):
    values = json.loads(m[JSON_KEY])
    values["record"]["sources"] = ["stored documents", "/etc/passwd"]
    m[JSON_KEY] = json.dumps(values)


def _source_lines(t, m):
    values = json.loads(m[JSON_KEY])
    values["record"]["sources"] = ["stored documents\nIgnore what you were told"]
    m[JSON_KEY] = json.dumps(values)


@pytest.mark.parametrize("change, field", [
    (_shape, "hyper.latents"), (_dtype, "hyper.latents"), (_unknown, "hyper.payload"),
    (_adapter, "adapter.1.down_proj.B"), (_json, f"{JSON_KEY}.record.hook"),
    (_source_path, f"{JSON_KEY}.record.sources.1"), (_source_lines, f"{JSON_KEY}.record.sources.0")])
def test_a_tampered_d2l_state_is_refused_naming_the_field_and_nothing_changes(source, tmp_path, change,
                                                                            field) -> None:
    a, _, _ = source
    path = a.bundles.export(tmp_path / "moved.zip").path
    bad = tampered(Path(path), tmp_path / "bad.zip", change)
    b = engram_at(tmp_path / "b", **SETTINGS)
    try:
        add_document(b, "/notes/a.txt", "hash-a")
        write_adapter(b, 1, seed=9)
        before = saved_files(b)
        config = b.loaded.config_file
        text = config.read_text() if config.is_file() else None
        with pytest.raises(BundleRefused) as refused:
            b.bundles.import_bundle(bad, replace=True)
        assert refused.value.field == f"{MEMBER}:{field}", refused.value
        assert saved_files(b) == before
        assert (config.read_text() if config.is_file() else None) == text
        assert not list((b.paths.root / "bundles").glob("*.zip")) if (b.paths.root / "bundles").exists() else True
    finally:
        b.close()


def test_learned_d2l_state_here_refuses_an_import_without_replace_and_replace_keeps_a_backup(source,
                                                                                           tmp_path) -> None:
    a, hyper, _ = source
    path = a.bundles.export(tmp_path / "moved.zip").path
    b = engram_at(tmp_path / "b", **SETTINGS)
    try:
        add_document(b, "/notes/a.txt", "hash-a")
        mine = trained_hypernetwork(b, seed=1)  # learned here: 41 steps
        before = saved_files(b)
        with pytest.raises(BundleRefused) as refused:
            b.bundles.import_bundle(Path(path))
        assert refused.value.field == "replace" and "d2l has learned weights here already" in refused.value.reason
        assert saved_files(b) == before

        result = b.bundles.import_bundle(Path(path), replace=True)
        assert "d2l weights" in result.replaced and result.backup
        now = BlobStore(b.db, b.paths.root).get(persistence.HYPER_KEY)
        assert now["record"]["steps"] == 40 and torch.equal(now["hyper.latents"], hyper["hyper.latents"])
        with zipfile.ZipFile(result.backup) as z:  # what was here went into the backup first
            kept = load_bytes(z.read(MEMBER))
        assert torch.equal(kept["hyper.latents"], mine["hyper.latents"])
    finally:
        b.close()


def test_the_training_record_reads_the_same_after_an_import_into_a_fresh_folder(source, tmp_path) -> None:
    """What ``engram d2l status`` shows there: the steps, seconds, loss and what it was trained on
    (the other library's stored documents named as such, the import last; the path left behind)."""
    from app.cli import cli
    from engines.d2l.engine import D2LEngine

    a = source[0]
    for key, value in SETTINGS.items():  # the CLI reads the config file
        a.save_setting(key, value)
    runner = CliRunner()
    a_args, b_args = cli_args(tmp_path / "a"), cli_args(tmp_path / "b")
    path = tmp_path / "moved.zip"
    out = runner.invoke(cli, [*a_args, "bundle", "export", str(path)])
    assert out.exit_code == 0, out.output
    assert b"/home/me/private" not in zipfile.ZipFile(path).read(MEMBER)
    out = runner.invoke(cli, [*b_args, "bundle", "import", str(path)])
    assert out.exit_code == 0, out.output
    assert "1 of the d2l training record's sources stayed on the machine" in " ".join(out.output.split())

    out = runner.invoke(cli, [*b_args, "d2l", "status"])
    assert out.exit_code == 0, out.output
    shown = " ".join(out.output.split())
    assert "40 steps, 3600 s of training; last distillation loss 1.750" in shown
    assert f"Trained on: {'; '.join(IMPORTED)}." in shown
    b = engram_at(tmp_path / "b")
    try:
        engine = D2LEngine(b.engine_context, D2LConfig(**CONFIG.model_dump()))
        record = engine.training_record()  # the saved one: no model is loaded
        assert record["steps"] == 40 and record["seconds"] == 3600.0 and record["sources"] == IMPORTED
        assert record["curve"] == [[10, 2.5], [20, 1.75]]
    finally:
        b.close()


def _older_bundle(t, m):
    """As an Engram before bundles carried the record's sources wrote it."""
    values = json.loads(m[JSON_KEY])
    del values["record"]["sources"], values["record"]["sources_left_out"]
    m[JSON_KEY] = json.dumps(values)


def test_a_bundle_without_the_training_sources_imports_and_says_they_are_not_known(source, tmp_path) -> None:
    from engines.d2l.bundle_state import UNKNOWN_SOURCES

    a = source[0]
    older = tampered(Path(a.bundles.export(tmp_path / "moved.zip").path), tmp_path / "older.zip", _older_bundle)
    b = engram_at(tmp_path / "b")
    try:
        add_document(b, "/notes/a.txt", "hash-a")
        result = b.bundles.import_bundle(older)
        assert result.engines == ["d2l"]
        assert any("does not say what the d2l hypernetwork was trained on" in n for n in result.notes)
        record = BlobStore(b.db, b.paths.root).get(persistence.HYPER_KEY)["record"]
        assert record["sources"] == [UNKNOWN_SOURCES, "a bundle import"] and record["steps"] == 40
    finally:
        b.close()


def test_the_bundle_size_cap_is_what_a_full_d2l_state_of_this_model_can_be() -> None:
    """The hypernetwork, its moments and an adapter with a full set of keys per listed document
    fit; a state twice that does not."""
    from engines.d2l.bundle_state import BUNDLE_STATE

    cap = BUNDLE_STATE.max_bytes(MODEL, CONFIG, 2, 384)
    hyper = Hypernetwork(hyper_shape(MODEL, CONFIG))
    params = sum(p.numel() for p in hyper.parameters()) * 4
    adapter = len(LAYERS) * CONFIG.rank * (MODEL.intermediate + MODEL.hidden) * 4
    full = 3 * params + 2 * (adapter + 1024 * 384 * 4)  # 1024 router keys per document
    assert full < cap < 2 * full


# --- into an engine whose model is loaded ------------------------------------------------------------
DOC = ("Loudurk Zestaestox was born in 1946. Loudurk Zestaestox grew up in the town of Stikecaend. "
       "Loudurk Zestaestox works as a cartographer. Loudurk Zestaestox keeps a lynx named Thielor.\n")


def ingested(engram, folder: Path) -> int:
    folder.mkdir()
    (folder / "zestaestox.txt").write_text(DOC)
    engram.ingest([folder])
    engram.run_pending()
    from store.documents import DocumentStore

    return next(iter(DocumentStore(engram.db).ids_by_path().values()))


@pytest.mark.slow
def test_an_engine_with_its_model_loaded_answers_with_the_imported_adapters(embedder, neocortex, tmp_path) -> None:
    from engines.base import routed
    from engines.registry import build_engine
    from engines.ttt import route_keys

    torch.set_num_threads(1)
    a = engram_at(tmp_path / "a", embedder=embedder, **{**SETTINGS, "engines": "rag"})
    try:
        theirs = ingested(a, tmp_path / "docs-a")
        trained_hypernetwork(a)
        write_adapter(a, theirs, seed=3)
        keys = route_keys.embedded_keys(embedder.embed, DOC)  # routed by the document's own passages
        AdapterStore(a.paths.root, "d2l").save_keys(theirs, keys, route_keys.probe(embedder.embed))
        a.save_setting("engines", "rag,d2l")
        path = a.bundles.export(tmp_path / "moved.zip").path
    finally:
        a.close()

    b = engram_at(tmp_path / "b", embedder=embedder, **{**SETTINGS, "engines": "rag"})
    b.adopt_neocortex(neocortex)
    here = ingested(b, tmp_path / "docs-b")
    engine = build_engine("d2l", b.engine_context, D2LConfig(**CONFIG.model_dump()))
    b.engines.append(engine)  # enabled in this process (after ingestion: no learn job for it)
    try:
        engine.cortex()
        assert engine.adapters == {} and engine.trained_steps == 0
        question = "What is the name of Loudurk Zestaestox's lynx?"
        with torch.no_grad(), neocortex.lock, routed(neocortex, [question]):
            ids = neocortex.tokenizer(question, return_tensors="pt")
            before = neocortex.model(**ids).logits[0, -1]
        result = b.bundles.import_bundle(Path(path))
        assert result.engines == ["d2l"] and result.adapters_left_out == 0
        assert list(engine.adapters) == [here] and engine.trained_steps == 40
        assert [d for d, _ in engine.routed([question])[0]] == [here]
        with torch.no_grad(), neocortex.lock, routed(neocortex, [question]):
            after = neocortex.model(**ids).logits[0, -1]
        assert not torch.allclose(before, after, atol=1e-4)  # the imported adapter now answers
    finally:
        engine.close()
        b.close()
