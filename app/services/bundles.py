"""Bundles: a learned Engram moved to another machine in one file, and taken in safely.

A bundle (``app.services.bundle_format``) holds the playbooks with their whole history, the
learned state of each weight-writing engine (its rows, router keys and recall pool), the
settings those depend on (``engines``, the ``ttt`` and ``ace`` sections, never a path, a model
location or a secret), the identity of the base model and of the embedder, and a manifest of
the documents learned from (path, content hash); the documents' bytes only with
``with_documents``.

Importing reads everything and checks it before anything changes: the archive and its names,
the manifest, each playbook, each tensor's dtype and shape against this machine's base model,
the settings against their own types. Then it applies the parts one by one, each with an undo:
if any step fails, the steps done are undone, so the previous state is intact.

What a person would expect without ``replace``:

- a playbook the bundle has and this Engram has not is added, with its history;
- learned weights are taken in only when this Engram has learned nothing into weights yet
  (two learned states cannot be merged: their rows were trained apart);
- a playbook of the same name, or learned weights here already, refuse the whole import and
  say which; nothing is half-imported;
- ``engines`` gains the bundle's engines; the ``ttt`` settings come with the weights (they must
  match them); ``ace`` settings stay as they are.

With ``replace`` the bundle's playbooks and weights take the place of those here, the ``ace``
settings and the ``engines`` list too; the state replaced is first saved as a bundle under
``DATA_DIR/bundles/`` (the report names it), so importing that file goes back.

Router keys and recalled pairs belong to documents: they are moved onto the documents of this
library with the same content (hash, then path). Those of documents that are not here are left
out (the report counts them): their weights stay, but questions about them are answered by the
original model until they are added and learned again. With ``with_documents`` the bundle's
documents that are not here are written to ``DATA_DIR/Imported/NAME/`` for the person to add.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.services.base_model import BaseModelIdentity, identity
from app.services.bundle_format import (
    MANIFEST,
    VERSION,
    BundleReader,
    BundleRefused,
    DocumentEntry,
    EmbeddingIdentity,
    EngineEntry,
    Limits,
    Manifest,
    PlaybookEntry,
    first_error,
    safetensors_header,
)
from engines.base import Engine
from store.atomic import fsync_dir
from store.blobs import JSON_KEY, BlobStore, split_state
from store.database import Database
from store.documents import DocumentStore
from store.playbook_history import PlaybookHistory, delete_history, read_history, write_histories
from store.playbooks import PlaybookStore
from store.state import StateStore

SECTIONS = ("ttt", "ace")
"""Settings sections a bundle carries (those of the engines whose learning it holds)."""
MACHINE_SETTINGS = {"ace.agent_backend", "ace.agent_model"}
"""Settings that name something on one machine (a model to run): never carried."""
WEIGHT_ENGINES = {"ttt": "ttt/live"}
"""Weight-writing engines a bundle can carry, with the store key of their live state
(``engines.ttt.persistence.LIVE_KEY``)."""
FLOAT_DTYPES = {"F32", "F16", "BF16"}
INT_DTYPES = {"I64", "I32"}
EMBED_DIM_KEY, EMBED_MODEL_KEY = "embedding_dim", "embedding_model"


class ExportReport(BaseModel):
    path: str
    bytes: int
    playbooks: list[str]
    engines: list[str]
    documents: int
    documents_included: int = 0
    documents_left_out: list[str] = Field(default_factory=list, description="Files no longer as learned.")


class ImportReport(BaseModel):
    path: str
    playbooks: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list, description="Playbooks and weights replaced.")
    engines: list[str] = Field(default_factory=list, description="Learned states taken in.")
    settings: list[str] = Field(default_factory=list, description="Settings written to the config file.")
    documents_matched: int = 0
    documents_missing: int = 0
    keys_left_out: int = 0
    pairs_left_out: int = 0
    documents_folder: str | None = None
    documents_written: int = 0
    backup: str | None = None
    notes: list[str] = Field(default_factory=list)


class TTTStateMeta(BaseModel):
    """The JSON half of a ttt learned state (``engines.ttt.persistence.LiveState.snapshot``)."""

    model_config = ConfigDict(extra="forbid")

    format: int
    documents: int = Field(ge=0)
    alpha: float = Field(ge=0.0, le=1.0)
    revision: int = Field(ge=0)
    layers: list[int] = Field(max_length=10_000)
    mode: str = Field(pattern=r"^(dual|full)$")
    neurons: int = Field(ge=1)
    hidden: int = Field(ge=1)
    replay_at: int = Field(0, ge=0)
    origin: str | None = Field(None, max_length=256)
    recall: dict[str, Any] | None = None


class Plan(BaseModel):
    """Everything an import will change, read and checked, held in memory until it is applied."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    playbooks: list[PlaybookHistory] = Field(default_factory=list)
    replace_playbooks: set[str] = Field(default_factory=set)
    states: dict[str, dict[str, Any]] = Field(default_factory=dict)
    settings: dict[str, str] = Field(default_factory=dict)
    documents: dict[str, bytes] = Field(default_factory=dict, description="file name -> bytes")
    report: ImportReport


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _setting_text(value: Any) -> str:
    """A setting's value as ``save_setting`` parses it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _safe_file_name(path: str) -> str:
    """A file name made from a document's path that cannot leave its folder."""
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", path.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(". ")
    return base[-120:] or "document"


class BundleService:
    """Export and import of bundles (the CLI's ``engram bundle`` and the Weights tab call it)."""

    def __init__(self, db: Database, data_dir: Path, settings: Any,
                 save_setting: Callable[[str, str], Path], config_file: Path,
                 engines: Callable[[], list[Engine]]) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.settings = settings
        self.save_setting = save_setting
        self.config_file = Path(config_file)
        self.engines = engines
        self.blobs = BlobStore(db, self.data_dir)
        self.docs = DocumentStore(db)
        self.playbook_store = PlaybookStore(db)

    # --- export ----------------------------------------------------------------------------------
    def new_export_path(self) -> Path:
        """Where the app writes a bundle for download: ``DATA_DIR/bundles/engram-TIME.zip``."""
        return self.data_dir / "bundles" / f"engram-{time.strftime('%Y%m%d-%H%M%S')}.zip"

    def export(self, path: Path, with_documents: bool = False) -> ExportReport:
        """Write everything learned here into one bundle at ``path`` (replaced atomically)."""
        path = Path(path).expanduser().absolute()
        members: dict[str, bytes] = {}
        playbooks = []
        for summary in self.playbook_store.list():
            history = read_history(self.db, summary.name)
            member = f"playbooks/{summary.name}.json"
            members[member] = history.model_dump_json().encode()
            playbooks.append(PlaybookEntry(name=summary.name, member=member, version=summary.version,
                                           bullets=summary.bullets))
        engines = []
        for name, state in self._learned_states().items():
            member = f"engines/{name}.safetensors"
            members[member] = self._safetensors(state)
            engines.append(EngineEntry(name=name, member=member, documents=int(state.get("documents", 0))))
        documents, left_out = self._document_entries(with_documents, members)
        manifest = Manifest(
            format="engram-bundle", version=VERSION, created_at=_now(),
            base_model=identity(self.settings.neocortex_model) if engines else None,
            embedding=self._embedding(), settings=self.portable_settings(), playbooks=playbooks,
            engines=engines, documents=documents, with_documents=with_documents)
        size = _write_zip(path, {MANIFEST: manifest.model_dump_json(indent=2).encode(), **members})
        return ExportReport(path=str(path), bytes=size, playbooks=[p.name for p in playbooks],
                            engines=[e.name for e in engines], documents=len(documents),
                            documents_included=sum(1 for d in documents if d.member),
                            documents_left_out=left_out)

    def portable_settings(self) -> dict[str, Any]:
        """The settings learning depends on, as JSON values (no paths, models or secrets)."""
        out: dict[str, Any] = {"engines": list(self.settings.engines)}
        for section in SECTIONS:
            values = getattr(self.settings, section).model_dump(mode="json")
            out.update({f"{section}.{k}": v for k, v in values.items()
                        if f"{section}.{k}" not in MACHINE_SETTINGS})
        return out

    def _embedding(self) -> EmbeddingIdentity:
        model = self.settings.embedding_model
        dim = StateStore(self.db).get(EMBED_DIM_KEY)
        return EmbeddingIdentity(model=model if model == "embedded" else Path(model).name,
                                 dim=int(dim) if dim else None)

    def _learned_states(self) -> dict[str, dict[str, Any]]:
        """Each weight engine's learned state (nothing learned: left out). An engine whose model
        is loaded in this process gives its state; otherwise the saved one is read."""
        enabled = {e.name: e for e in self.engines()}
        found = {}
        for name, key in WEIGHT_ENGINES.items():
            engine = enabled.get(name)
            if engine is not None and engine.stats().get("loaded"):
                state = engine.state_dict()
            else:
                state = self.blobs.get(key)
            if state and int(state.get("documents", 0)) > 0:
                found[name] = state
        return found

    @staticmethod
    def _safetensors(state: dict[str, Any]) -> bytes:
        from safetensors.torch import save

        tensors, values = split_state(state)
        return save(tensors, metadata={JSON_KEY: json.dumps(values)})

    def _document_entries(self, with_documents: bool,
                          members: dict[str, bytes]) -> tuple[list[DocumentEntry], list[str]]:
        entries, left_out = [], []
        rows = self.docs.list(status="indexed", limit=10**9)
        if with_documents:
            from app.ingest.pipeline import file_hash
        for n, row in enumerate(rows, 1):
            member = None
            if with_documents:
                file = Path(row.path)
                try:
                    same = file.is_file() and file_hash(file) == row.content_hash
                except OSError:
                    same = False
                if same:
                    member = f"documents/{n}"
                    members[member] = file.read_bytes()
                else:
                    left_out.append(row.path)
            entries.append(DocumentEntry(id=row.id, path=row.path, content_hash=row.content_hash,
                                         size=row.size, chunks=row.chunk_count, member=member))
        return entries, left_out

    # --- import ----------------------------------------------------------------------------------
    def import_bundle(self, path: Path, replace: bool = False, limits: Limits | None = None) -> ImportReport:
        """Take in the bundle at ``path`` (see the module docstring). ``BundleRefused`` when it
        cannot be; then nothing changed."""
        path = Path(path).expanduser().absolute()
        with BundleReader(path, limits) as reader:
            plan = self.plan(reader, replace)
        if replace and (plan.replace_playbooks or plan.report.replaced):
            backup = self.data_dir / "bundles" / f"before-import-{time.strftime('%Y%m%d-%H%M%S')}.zip"
            self.export(backup)
            plan.report.backup = str(backup)
        try:
            self._apply(plan, path.stem)
        except BaseException:
            if plan.report.backup:  # nothing was replaced after all
                Path(plan.report.backup).unlink(missing_ok=True)
            raise
        return plan.report

    def plan(self, reader: BundleReader, replace: bool) -> Plan:
        """Read and check every part of the bundle; refuse (``BundleRefused``) before any change."""
        manifest = reader.manifest
        report = ImportReport(path=str(reader.path))
        plan = Plan(report=report)
        settings = self._checked_settings(manifest.settings)
        mapping = self._document_mapping(manifest.documents, report)
        conflicts = []
        for entry in manifest.playbooks:
            history = self._checked_playbook(reader, entry)
            if self.playbook_store.exists(entry.name):
                if not replace:
                    conflicts.append(f"a playbook named {entry.name!r} exists here")
                plan.replace_playbooks.add(entry.name)
            plan.playbooks.append(history)
        report.playbooks = [p.name for p in plan.playbooks]
        report.replaced = sorted(plan.replace_playbooks)
        for entry in manifest.engines:
            state = self._checked_state(reader, entry, manifest, settings)
            if self._learned_here(entry.name):
                if not replace:
                    conflicts.append(f"{entry.name} has learned weights here already (they cannot be merged)")
                report.replaced.append(f"{entry.name} weights")
            plan.states[entry.name] = self._remapped(state, mapping, report)
        if conflicts:
            raise BundleRefused("replace", "; ".join(conflicts) + ". Import with --replace to put the "
                                "bundle's in their place (what is here is saved as a bundle first), "
                                "or import into another data folder")
        report.engines = sorted(plan.states)
        plan.settings = self._settings_to_write(settings, replace, bool(plan.states), bool(plan.playbooks))
        report.settings = sorted(plan.settings)
        if manifest.with_documents:
            for entry in manifest.documents:
                if entry.member and entry.id not in mapping:
                    name = f"{entry.id:06d}-{_safe_file_name(entry.path)}"
                    plan.documents[name] = reader.read(entry.member)
        return plan

    # --- checks ----------------------------------------------------------------------------------
    def _checked_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The bundle's settings, each a setting a bundle may carry with a valid value."""
        from app.settings import FIELDS
        from engines.registry import registered

        checked: dict[str, Any] = {}
        for name, value in raw.items():
            field = f"manifest.settings.{name}"
            section = name.split(".")[0]
            if name != "engines" and (section not in SECTIONS or name in MACHINE_SETTINGS or name not in FIELDS):
                raise BundleRefused(field, "not a setting a bundle may carry")
            info = FIELDS[name]
            annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            try:
                checked[name] = TypeAdapter(annotation).validate_python(value)
            except ValidationError as exc:
                raise BundleRefused(field, exc.errors()[0]["msg"]) from None
        unknown = [e for e in checked.get("engines", []) if e not in registered()]
        if unknown:
            raise BundleRefused("manifest.settings.engines", f"unknown engine(s) {', '.join(unknown)}")
        for section in SECTIONS:
            values = {k.split(".", 1)[1]: v for k, v in checked.items() if k.startswith(f"{section}.")}
            current = getattr(self.settings, section).model_dump()
            try:
                registered()[section].config(**{**current, **values})
            except ValidationError as exc:
                raise first_error(exc, f"manifest.settings.{section}") from None
        return checked

    def _checked_playbook(self, reader: BundleReader, entry: PlaybookEntry) -> PlaybookHistory:
        from engines.ace.rules import intrinsic_problem

        try:
            history = PlaybookHistory.model_validate(reader.read_json(entry.member))
        except ValidationError as exc:
            raise first_error(exc, entry.member) from None
        if history.name != entry.name:
            raise BundleRefused(f"{entry.member}.name", f"{history.name!r} is not {entry.name!r}")
        numbers = [v.version for v in history.versions]
        if numbers != list(range(len(numbers))) or not numbers or numbers[-1] != entry.version:
            raise BundleRefused(f"{entry.member}.versions", "not the versions 0 to "
                                f"{entry.version} in order")
        delta_ids = {d.id for d in history.deltas}
        for v in history.versions:
            if v.delta_id is not None and v.delta_id not in delta_ids:
                raise BundleRefused(f"{entry.member}.versions[{v.version}].delta_id", "names no delta of this history")
            ids = [b.id for b in v.bullets]
            if len(ids) != len(set(ids)) or any(i >= v.next_id for i in ids):
                raise BundleRefused(f"{entry.member}.versions[{v.version}].bullets", "ids repeat or reach next_id")
            for n, bullet in enumerate(v.bullets):
                problem = intrinsic_problem(bullet.content)
                if problem:
                    raise BundleRefused(f"{entry.member}.versions[{v.version}].bullets[{n}].content", problem)
        if any(d.playbook != entry.name for d in history.deltas):
            raise BundleRefused(f"{entry.member}.deltas", "a delta of another playbook")
        return history

    def _checked_state(self, reader: BundleReader, entry: EngineEntry, manifest: Manifest,
                       settings: dict[str, Any]) -> dict[str, Any]:
        """A learned state whose every tensor fits this machine's base model (read only then)."""
        if entry.name not in WEIGHT_ENGINES:
            raise BundleRefused(f"manifest.engines.{entry.name}", "no engine here takes in such weights")
        base = self._same_base_model(manifest.base_model)
        data = reader.read(entry.member)
        tensors, meta = safetensors_header(data, entry.member)
        try:
            values = TTTStateMeta.model_validate_json(meta.get(JSON_KEY, "{}"))
        except ValidationError as exc:
            raise first_error(exc, f"{entry.member}:{JSON_KEY}") from None
        from engines.ttt.persistence import STATE_FORMAT
        from engines.ttt.state import LEARNING_FROM
        from models.dual_mlp import layer_range

        where = f"{entry.member}:{JSON_KEY}"
        if values.format != STATE_FORMAT:
            raise BundleRefused(f"{where}.format", f"{values.format} is not {STATE_FORMAT}")
        layers_setting = settings.get("ttt.layers", self.settings.ttt.layers)
        try:
            expected = layer_range(base.layers, LEARNING_FROM, layers_setting)
        except ValueError as exc:
            raise BundleRefused("manifest.settings.ttt.layers", str(exc)) from None
        if values.layers != expected:
            raise BundleRefused(f"{where}.layers", f"{values.layers} are not the learning layers {expected} "
                                "of this model with the bundle's ttt.layers")
        if (values.neurons, values.hidden) != (base.intermediate, base.hidden):
            raise BundleRefused(f"{where}.neurons", f"rows of {values.neurons} neurons x {values.hidden} do not "
                                f"fit this model's {base.intermediate} x {base.hidden}")
        self._check_tensors(entry.member, tensors, expected, base, manifest)
        from safetensors.torch import load

        state: dict[str, Any] = {**values.model_dump(), **load(data)}
        self._check_values(entry.member, state, expected, base, manifest)
        return state

    def _same_base_model(self, theirs: BaseModelIdentity | None) -> BaseModelIdentity:
        if theirs is None:
            raise BundleRefused("manifest.base_model", "missing: the bundle holds weights but not the "
                                "model they were learned on")
        ours = identity(self.settings.neocortex_model)
        if ours.fingerprint != theirs.fingerprint or ours.model_dump(exclude={"name"}) != theirs.model_dump(exclude={"name"}):
            raise BundleRefused(
                "manifest.base_model",
                f"the bundle's weights were learned on {theirs.name} ({theirs.layers} layers, hidden "
                f"{theirs.hidden}, fingerprint {theirs.fingerprint[:12]}); this Engram's neocortex_model is "
                f"{ours.name} ({ours.layers} layers, hidden {ours.hidden}, fingerprint {ours.fingerprint[:12]}). "
                "Learned weights only work on the model they were learned on: set neocortex_model to that "
                "model, or import a bundle made with this one")
        return ours

    def _check_tensors(self, member: str, tensors: dict[str, Any], layers: list[int],
                       base: BaseModelIdentity, manifest: Manifest) -> None:
        """Names, dtypes and shapes from the header alone (before a byte of data is read)."""
        allowed = {f"layer{i}.{p}" for i in layers for p in ("ids", "gate", "up", "down")}
        allowed |= {"router.keys", "router.owners"}
        for name in tensors:
            if name not in allowed:
                raise BundleRefused(f"{member}:{name}", "not a tensor of this engine's state")
        for i in layers:
            parts = {p: tensors.get(f"layer{i}.{p}") for p in ("ids", "gate", "up", "down")}
            missing = [p for p, t in parts.items() if t is None]
            if missing:
                raise BundleRefused(f"{member}:layer{i}", f"misses {', '.join(missing)}")
            ids = parts["ids"]
            if ids.dtype not in INT_DTYPES or len(ids.shape) != 1 or ids.shape[0] > base.intermediate:
                raise BundleRefused(f"{member}:layer{i}.ids", f"{ids.dtype} {ids.shape} is not a list of "
                                    f"at most {base.intermediate} neuron ids")
            for p in ("gate", "up", "down"):
                t = parts[p]
                if t.dtype not in FLOAT_DTYPES or t.shape != [ids.shape[0], base.hidden]:
                    raise BundleRefused(f"{member}:layer{i}.{p}", f"{t.dtype} {t.shape}; this model expects "
                                        f"floats of shape [{ids.shape[0]}, {base.hidden}]")
        keys, owners = tensors.get("router.keys"), tensors.get("router.owners")
        if (keys is None) != (owners is None):
            raise BundleRefused(f"{member}:router", "keys and owners come together")
        if keys is not None:
            dim = manifest.embedding.dim
            if keys.dtype not in FLOAT_DTYPES or len(keys.shape) != 2 or (dim and keys.shape[1] != dim):
                raise BundleRefused(f"{member}:router.keys", f"{keys.dtype} {keys.shape} are not "
                                    f"{dim or 'D'}-dimensional embeddings")
            if owners.dtype not in INT_DTYPES or owners.shape != [keys.shape[0]]:
                raise BundleRefused(f"{member}:router.owners", f"{owners.dtype} {owners.shape}: not one "
                                    "document id per key")

    def _check_values(self, member: str, state: dict[str, Any], layers: list[int],
                      base: BaseModelIdentity, manifest: Manifest) -> None:
        import torch

        from engines.ttt.recall import RecallPool, RecallPoolError

        for i in layers:
            ids = state[f"layer{i}.ids"]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= base.intermediate
                                or ids.unique().numel() != ids.numel()):
                raise BundleRefused(f"{member}:layer{i}.ids", f"ids outside 0-{base.intermediate - 1} or repeated")
            for p in ("gate", "up", "down"):
                if not bool(torch.isfinite(state[f"layer{i}.{p}"]).all()):
                    raise BundleRefused(f"{member}:layer{i}.{p}", "holds values that are not finite")
        known = {d.id for d in manifest.documents}
        if "router.owners" in state:
            owners = set(state["router.owners"].tolist())
            if not owners <= known:
                raise BundleRefused(f"{member}:router.owners", "names documents the manifest does not list")
            state["router.owners"] = state["router.owners"].to(torch.long)
        try:
            pool = RecallPool.from_json(state.get("recall"), 10**9)
        except RecallPoolError as exc:
            raise BundleRefused(f"{member}:{JSON_KEY}.recall", str(exc)) from None
        if not pool.documents() <= known:
            raise BundleRefused(f"{member}:{JSON_KEY}.recall", "pairs of documents the manifest does not list")

    # --- documents -------------------------------------------------------------------------------
    def _document_mapping(self, documents: list[DocumentEntry], report: ImportReport) -> dict[int, int]:
        """Bundle document id -> the id of the document here with the same content (or path)."""
        rows = self.docs.list(status="indexed", limit=10**9)
        by_hash = {r.content_hash: r.id for r in rows if r.content_hash}
        by_path = {r.path: r.id for r in rows}
        mapping = {}
        for entry in documents:
            here = by_hash.get(entry.content_hash) if entry.content_hash else None
            here = here or by_path.get(entry.path)
            if here is not None:
                mapping[entry.id] = here
        report.documents_matched, report.documents_missing = len(mapping), len(documents) - len(mapping)
        return mapping

    @staticmethod
    def _remapped(state: dict[str, Any], mapping: dict[int, int], report: ImportReport) -> dict[str, Any]:
        """Router keys and recalled pairs moved onto this library's document ids (those of
        documents not here are left out and counted)."""
        import torch

        state = dict(state)
        if "router.owners" in state:
            owners = state["router.owners"].tolist()
            keep = torch.tensor([o in mapping for o in owners], dtype=torch.bool)
            report.keys_left_out += int((~keep).sum())
            state["router.keys"] = state["router.keys"][keep]
            state["router.owners"] = torch.tensor([mapping[o] for o in owners if o in mapping], dtype=torch.long)
        recall = state.get("recall")
        if isinstance(recall, dict):
            pairs = recall.get("pairs", [])
            kept = [[mapping[d], q, a] for d, q, a in pairs if d in mapping]
            report.pairs_left_out += len(pairs) - len(kept)
            state["recall"] = {**recall, "pairs": kept}
        return state

    def _learned_here(self, name: str) -> bool:
        for engine in self.engines():
            if engine.name == name:
                return int(engine.stats().get("documents", 0)) > 0
        meta = self.blobs.meta(WEIGHT_ENGINES[name]) or {}
        return int(meta.get("documents", 0)) > 0

    def _settings_to_write(self, settings: dict[str, Any], replace: bool, weights: bool,
                           playbooks: bool) -> dict[str, str]:
        out: dict[str, str] = {}
        if "engines" in settings:
            engines = settings["engines"] if replace else list(dict.fromkeys([*self.settings.engines,
                                                                              *settings["engines"]]))
            if engines != list(self.settings.engines):
                out["engines"] = _setting_text(engines)
        for name, value in settings.items():
            section = name.split(".")[0]
            if (section == "ttt" and weights) or (section == "ace" and replace and playbooks):
                current = getattr(getattr(self.settings, section), name.split(".", 1)[1])
                if current != value:
                    out[name] = _setting_text(value)
        return out

    # --- applying, each step undone if a later one fails ----------------------------------------
    def _apply(self, plan: Plan, stem: str) -> None:
        undo: list[Callable[[], None]] = []
        try:
            if plan.documents:
                undo.append(self._write_documents(plan, stem))
            for name, state in plan.states.items():
                undo.append(self._put_state(name, state))
            if plan.playbooks:
                old = [read_history(self.db, n) for n in sorted(plan.replace_playbooks)]
                write_histories(self.db, plan.playbooks, plan.replace_playbooks)
                names = {p.name for p in plan.playbooks}
                undo.append(lambda: self._restore_playbooks(names, old))
            if plan.settings:
                undo.append(self._write_settings(plan.settings))
        except BaseException:
            for step in reversed(undo):
                step()
            raise
        report = plan.report
        if plan.settings:
            report.notes.append("the settings take effect when Engram starts next")
        if report.keys_left_out or report.pairs_left_out:
            report.notes.append(
                f"{report.documents_missing} learned document(s) are not in this library: their "
                f"{report.keys_left_out} router keys and {report.pairs_left_out} recalled pairs were left "
                "out, so questions about them get the original model's answer until they are added")

    def _restore_playbooks(self, names: set[str], old: list[PlaybookHistory]) -> None:
        write_histories(self.db, old, replace=names)
        with self.db.transaction() as conn:
            for name in names - {h.name for h in old}:
                delete_history(conn, name)

    def _put_state(self, name: str, state: dict[str, Any]) -> Callable[[], None]:
        """Make ``state`` the engine's learned state: through the engine when its model is loaded
        here (it checks again and saves), else as its saved state (loaded on its next start)."""
        key = WEIGHT_ENGINES[name]
        engine = next((e for e in self.engines() if e.name == name), None)
        if engine is not None and engine.stats().get("loaded"):
            before = engine.state_dict()
            try:
                engine.load_state_dict(state)
            except ValueError as exc:
                raise BundleRefused(f"engines/{name}.safetensors", str(exc)) from None
            return lambda: engine.load_state_dict(before)
        old, old_meta = self.blobs.get(key), self.blobs.meta(key)
        documents, revision = int(state["documents"]), int(state["revision"])
        self.blobs.put(key, "state", state, meta={
            "documents": documents, "revision": revision, "origin": None, "token": uuid.uuid4().hex,
            "label": f"{name} rev {revision}: {documents} documents"})

        def undo() -> None:
            if old is None:
                self.blobs.delete(key)
            else:
                self.blobs.put(key, "state", old, meta=old_meta)
        return undo

    def _write_settings(self, settings: dict[str, str]) -> Callable[[], None]:
        path = self.config_file
        before = path.read_bytes() if path.is_file() else None

        def undo() -> None:
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
        try:
            for name, value in settings.items():
                self.save_setting(name, value)
        except BaseException:
            undo()
            raise
        return undo

    def _write_documents(self, plan: Plan, stem: str) -> Callable[[], None]:
        """Write the documents beside their final folder, then rename it into place."""
        root = self.data_dir / "Imported"
        root.mkdir(parents=True, exist_ok=True)
        safe = _safe_file_name(stem) or "bundle"
        target, n = root / safe, 1
        while target.exists():
            n += 1
            target = root / f"{safe}-{n}"
        staging = root / f".{target.name}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            for name, data in plan.documents.items():
                (staging / name).write_bytes(data)
            os.replace(staging, target)
            fsync_dir(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        plan.report.documents_folder, plan.report.documents_written = str(target), len(plan.documents)
        plan.report.notes.append(f"{len(plan.documents)} document(s) were written to {target}: add that "
                                 "folder to search and cite them (the engines learn them again there)")
        return lambda: shutil.rmtree(target, ignore_errors=True)


def _write_zip(path: Path, members: dict[str, bytes]) -> int:
    """Write the bundle beside ``path`` and rename it into place; its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.external_attr = 0o100644 << 16  # a plain file
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
