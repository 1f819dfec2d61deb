"""Bundles carry the cls engine's learned state (every expert, the consolidated adapter, the
router's keys, each expert's documents remapped), refuse a tampered one naming the field, put
back what was here when an import fails; and an export says plainly when an enabled weight
engine's learned state has no carrier (the fallback for any engine without one).

A real store, real safetensors, the embedded model's identity and shapes, experts made of the
real ``models.lora_experts.LoRA`` and saved in the engine's own blob layout; no model loaded."""

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
from app.services.bundles import BundleService
from engines.cls.bundle_state import EPISODES_NOTE
from models.lora_experts import LoRA
from store.blobs import BlobStore
from store.cls_episodes import ClsEpisodeStore
from tests.test_bundles import add_document, cli_args, engram_at

SETTINGS = {"engines": "rag,cls", "cls.layers": "28-29", "cls.rank": 2, "cls.targets": "down_proj"}
MODULES = [f"model.layers.{i}.mlp.down_proj" for i in (28, 29)]
MEMBER = "engines/cls.safetensors"


def lora_set(seed: int) -> dict[str, torch.Tensor]:
    """One LoRA per adapted module, as ``ExpertPool.expert`` names them, B trained away from 0."""
    torch.manual_seed(seed)
    out = {}
    for name in MODULES:
        lora = LoRA(1536, 576, 2)
        with torch.no_grad():
            lora.B.normal_()
            lora.open_rows[:7] = False
        out.update({f"{name}.{k}": v for k, v in lora.tensors().items()})
    return out


def learned(engram, experts: dict[int, list[int]], seed: int = 0) -> dict:
    """A cls state saved as ``CLSEngine.save`` saves it: one blob per expert and the index."""
    blobs = BlobStore(engram.db, engram.paths.root)
    g = torch.Generator().manual_seed(seed)
    saved = {slot: lora_set(seed + slot + 1) for slot in experts}
    for slot, tensors in saved.items():
        blobs.put(f"cls/expert-{slot}", "cls-expert", tensors)
    owners = [s for s in experts for _ in range(3)]
    index = {**{f"consolidated.{k}": v for k, v in lora_set(seed + 100).items()},
             "router.keys": torch.nn.functional.normalize(torch.randn(len(owners), 384, generator=g), dim=1),
             "router.owners": torch.tensor(owners), "router.probe": torch.ones(384),
             "experts": {str(s): {"documents": d, "created": 1.0, "last_used": 2.0, "uses": 3, "consolidated": False}
                         for s, d in experts.items()},
             "documents": sum(len(d) for d in experts.values()), "sleeps": 1}
    blobs.put("cls/index", "cls-index", index, {"experts": len(experts), "documents": index["documents"]})
    ClsEpisodeStore(engram.db).add(min(experts), None, [("qa", f"question {seed}?", "answer")])
    return {"experts": saved, "index": index}


@pytest.fixture
def source(tmp_path: Path):
    engram = engram_at(tmp_path / "a", **SETTINGS)
    docs = [add_document(engram, "/notes/a.txt", "hash-a"), add_document(engram, "/notes/b.txt", "hash-b")]
    state = learned(engram, {0: [docs[0], 99], 2: [docs[1]]})  # 99: forgotten since (cls keeps the id)
    yield engram, state, docs
    engram.close()


def cls_files(engram) -> dict[str, bytes]:
    blobs = engram.paths.root / "blobs" / "cls"
    return {p.name: p.read_bytes() for p in sorted(blobs.glob("*"))} if blobs.is_dir() else {}


def test_cls_experts_consolidated_adapter_and_keys_move_with_documents_remapped(source, tmp_path) -> None:
    a, state, docs = source
    path = tmp_path / "moved.zip"
    report = a.bundles.export(path)
    assert report.engines == ["cls"] and report.not_carried == []
    settings = json.loads(zipfile.ZipFile(path).read("manifest.json"))["settings"]
    assert settings["cls.targets"] == "down_proj" and settings["cls.layers"] == "28-29"
    assert "cls.rehearsal_system" not in settings
    assert b"question 0?" not in zipfile.ZipFile(path).read(MEMBER)  # episodes (document text) stay here

    b = engram_at(tmp_path / "b")
    try:
        here = add_document(b, "/home/me/a.txt", "hash-a")  # only a is here, under another id
        result = b.bundles.import_bundle(path)
        assert result.engines == ["cls"] and EPISODES_NOTE in result.notes
        blobs = BlobStore(b.db, b.paths.root)
        for slot, tensors in state["experts"].items():
            moved = blobs.get(f"cls/expert-{slot}")
            assert set(moved) == set(tensors) and all(torch.equal(moved[k], v) for k, v in tensors.items())
        index = blobs.get("cls/index")
        for key, value in state["index"].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(index[key], value), key
        assert index["experts"]["0"]["documents"] == [here] and index["experts"]["2"]["documents"] == []
        assert blobs.meta("cls/index") == {"experts": 2, "documents": 3}
        assert ClsEpisodeStore(b.db).count() == 0
    finally:
        b.close()


def retyped(path: Path, out: Path, name: str, value: torch.Tensor) -> Path:
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members[MEMBER]
    meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    tensors = load_bytes(raw)
    tensors[name] = value
    members[MEMBER] = save_bytes(tensors, metadata=meta)
    with zipfile.ZipFile(out, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return out


@pytest.mark.parametrize("name, value", [
    ("expert.2.model.layers.29.mlp.down_proj.open_rows", torch.ones(576)),  # floats, not booleans
    ("expert.5.model.layers.29.mlp.down_proj.A", torch.zeros(2, 1536)),  # an expert the JSON lacks
    ("consolidated.model.layers.3.mlp.down_proj.A", torch.zeros(2, 1536)),  # not a learning layer
])
def test_a_tampered_cls_state_is_refused_naming_the_tensor(source, tmp_path, name, value) -> None:
    a, _, _ = source
    bad = retyped(Path(a.bundles.export(tmp_path / "moved.zip").path), tmp_path / "bad.zip", name, value)
    b = engram_at(tmp_path / "b", **SETTINGS)
    try:
        learned(b, {0: []}, seed=7)
        before = cls_files(b)
        with pytest.raises(BundleRefused) as refused:
            b.bundles.import_bundle(bad, replace=True)
        assert refused.value.field == f"{MEMBER}:{name}", refused.value
        assert cls_files(b) == before and ClsEpisodeStore(b.db).count() == 1
    finally:
        b.close()


def test_cls_learned_here_refuses_without_replace_and_a_failed_replace_puts_everything_back(
        source, tmp_path, monkeypatch) -> None:
    a, state, _ = source
    path = Path(a.bundles.export(tmp_path / "moved.zip").path)
    b = engram_at(tmp_path / "b", **SETTINGS, **{"cls.sleep_epochs": 3})  # the bundle's 1 is written last
    try:
        add_document(b, "/notes/a.txt", "hash-a")
        mine = learned(b, {4: []}, seed=9)
        before = cls_files(b)
        with pytest.raises(BundleRefused, match="cls has learned weights here already"):
            b.bundles.import_bundle(path)

        def broken(name: str, value: str) -> Path:
            raise OSError("disk full")
        monkeypatch.setattr(b.bundles, "save_setting", broken)
        with pytest.raises(OSError, match="disk full"):
            b.bundles.import_bundle(path, replace=True)
        assert cls_files(b) == before and ClsEpisodeStore(b.db).count() == 1  # experts and episodes back
        monkeypatch.undo()

        result = b.bundles.import_bundle(path, replace=True)
        blobs = BlobStore(b.db, b.paths.root)
        assert "cls weights" in result.replaced and blobs.get("cls/expert-4") is None
        assert torch.equal(blobs.get("cls/expert-2")["model.layers.29.mlp.down_proj.B"],
                           state["experts"][2]["model.layers.29.mlp.down_proj.B"])
        assert ClsEpisodeStore(b.db).count() == 0  # the replaced experts' episodes left with them
        with zipfile.ZipFile(result.backup) as z:
            kept = load_bytes(z.read(MEMBER))
        assert torch.equal(kept["expert.4.model.layers.28.mlp.down_proj.A"],
                           mine["experts"][4]["model.layers.28.mlp.down_proj.A"])
    finally:
        b.close()


# --- an engine no bundle carries ---------------------------------------------------------------------
def test_export_warns_when_an_enabled_weight_engine_has_learned_state_no_bundle_carries(
        tmp_path, monkeypatch) -> None:
    """Every weight engine has a carrier today: one without (a future engine) is made by taking
    cls's away; the export must then name it, in the report, on the command line and in the app."""
    from app.cli import cli
    from engines.registry import bundle_states

    monkeypatch.setattr(BundleService, "bundle_states",
                        staticmethod(lambda: {k: v for k, v in bundle_states().items() if k != "cls"}))
    engram = engram_at(tmp_path / "a", **SETTINGS)
    try:
        engram.save_setting("engines", "rag,cls")  # the CLI reads the config file
        report = engram.bundles.export(tmp_path / "nothing.zip")
        assert report.not_carried == [] and report.warning() is None  # nothing learned yet
        learned(engram, {0: []})
        report = engram.bundles.export(tmp_path / "some.zip")
        assert report.not_carried == ["cls"] and report.engines == []
        assert "what cls learned is NOT in this bundle" in report.warning()
        from ui.weights_tab import export_summary  # the Weights tab's note

        assert "Warning: what cls learned is NOT in this bundle" in export_summary(report)
    finally:
        engram.close()
    runner = CliRunner()
    args = cli_args(tmp_path / "a")
    out = runner.invoke(cli, [*args, "bundle", "export", str(tmp_path / "cli.zip")])
    assert out.exit_code == 0, out.output
    assert "Warning: what cls learned is NOT in this bundle" in out.stderr
    out = runner.invoke(cli, [*args, "bundle", "export", "--json", str(tmp_path / "cli2.zip")])
    assert json.loads(out.stdout)["not_carried"] == ["cls"] and "NOT in this bundle" in out.stderr


# --- into an engine whose model is loaded ------------------------------------------------------------
@pytest.mark.slow
def test_an_engine_with_its_model_loaded_routes_to_the_imported_experts(embedder, neocortex, tmp_path) -> None:
    from engines.base import routed
    from engines.registry import build_engine
    from engines.ttt import route_keys

    torch.set_num_threads(1)
    text = "Loudurk Zestaestox keeps a lynx named Thielor. Loudurk Zestaestox works as a cartographer."
    question = "What is the name of Loudurk Zestaestox's lynx?"
    a = engram_at(tmp_path / "a", embedder=embedder, **SETTINGS)
    try:
        doc = add_document(a, "/notes/a.txt", "hash-a")
        learned(a, {0: [doc]})
        blobs = BlobStore(a.db, a.paths.root)
        index = blobs.get("cls/index")
        keys = route_keys.embedded_keys(embedder.embed, text)  # routed by the document's passages
        index.update({"router.keys": keys, "router.owners": torch.zeros(len(keys), dtype=torch.long),
                      "router.probe": route_keys.probe(embedder.embed)})
        blobs.put("cls/index", "cls-index", index, blobs.meta("cls/index"))
        path = a.bundles.export(tmp_path / "moved.zip").path
    finally:
        a.close()

    b = engram_at(tmp_path / "b", embedder=embedder, **{**SETTINGS, "engines": "rag"})
    b.adopt_neocortex(neocortex)
    here = add_document(b, "/home/a.txt", "hash-a")
    engine = build_engine("cls", b.engine_context, b.settings.cls)
    b.engines.append(engine)  # enabled in this process, its model loaded
    try:
        engine.cortex()
        assert engine.experts == {}
        ids = neocortex.tokenizer(question, return_tensors="pt")
        with torch.no_grad(), neocortex.lock, routed(neocortex, [question]):
            before = neocortex.model(**ids).logits[0, -1]
        result = b.bundles.import_bundle(Path(path))
        assert result.engines == ["cls"]
        assert list(engine.experts) == [0] and engine.experts[0].documents == [here] and engine.sleeps == 1
        found = engine.routing([question])
        assert found.slots == [0] and float(found.weights[0, 0]) > 0 and float(found.share[0]) > 0
        with torch.no_grad(), neocortex.lock, routed(neocortex, [question]):
            after = neocortex.model(**ids).logits[0, -1]
        assert not torch.allclose(before, after, atol=1e-4)  # the imported expert now answers
    finally:
        engine.close()
        b.close()
