"""Bundles: a learned Engram moved to another machine in one file, and taken in safely.

A bundle (``app.services.bundle_format``) holds the playbooks with their whole history, the
learned state of each weight-writing engine (what that state is, and how it is checked and put
in place, is the engine's: ``engines.bundle_state``), the settings those depend on (``engines``
and the sections of those engines and of the playbook's; never a path, a model location, a
secret or free text), the identity of the base model and of the embedder, and a manifest of
the documents learned from (path, content hash); the documents' bytes only with
``with_documents``.

Importing reads everything and checks it before anything changes: the archive and its names,
the manifest, each playbook, each tensor's dtype and shape against this machine's base model
(the header before the data), the embedding model, the settings against their own types. It is
refused while another Engram runs on this data folder (that one would save its own state over
the import). Then, with the worker paused and each engine's state held, it applies the parts one
by one, each with an undo: if a step fails, every step done is undone (each tried even when one
before it fails), so the previous state is intact. The import is recorded in the store while it
runs (``store.import_journal``): one cut short, or whose undo failed, is reported by ``engram
doctor`` and the next start, with the backup to restore.

What a person would expect without ``replace``:

- a playbook the bundle has and this Engram has not is added, with its history;
- learned weights are taken in only when this Engram has learned nothing into weights yet
  (two learned states cannot be merged: their rows were trained apart);
- a playbook of the same name, or learned weights here already, refuse the whole import and
  say which; nothing is half-imported;
- ``engines`` gains the bundle's engines; a weight engine's settings come with its weights (they
  must match them); the playbook engine's settings stay as they are.

With ``replace`` the bundle's playbooks and weights take the place of those here, the playbook
engine's settings and the ``engines`` list too; the state replaced is first saved as a bundle under
``DATA_DIR/bundles/`` (the report names it), so importing that file goes back.

Router keys and recalled pairs belong to documents: they are moved onto the documents of this
library with the same content (hash, then path). Those of documents that are not here are left
out (the report counts them): their weights stay, but questions about them are answered by the
original model until they are added and learned again. With ``with_documents`` the bundle's
documents that are not here are written to ``DATA_DIR/Imported/NAME/`` for the person to add.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
import types
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

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
    TensorHeader,
    first_error,
)
from engines.base import Engine
from engines.bundle_state import BundleState, ModelShape, StateRefused, TensorInfo
from store.atomic import fsync_dir
from store.blobs import JSON_KEY, BlobStore, split_state
from store.database import Database
from store.documents import DocumentStore
from store.import_journal import begin_import, end_import, interrupted_import, restore_advice
from store.playbook_history import PlaybookHistory, delete_history, read_history, write_histories
from store.playbooks import PlaybookStore
from store.state import StateStore

log = logging.getLogger(__name__)

PLAYBOOK_SECTION = "ace"
"""The playbook engine's settings section (carried beside the playbooks); the weight engines'
sections come with their learned states."""
MACHINE_SETTINGS = {"ace.agent_backend", "ace.agent_model"}
"""Settings that name something on one machine (a model to run): never carried."""
EMBED_DIM_KEY, EMBED_MODEL_KEY = "embedding_dim", "embedding_model"
"""Where the store records the embedding model its vectors were made with (``app.core``)."""
DISK_MARGIN = 256 << 20
"""Free space an import leaves on the data folder's disk beyond the documents it writes."""
Hold = Callable[[], AbstractContextManager[Any]]


class ExportReport(BaseModel):
    path: str
    bytes: int
    playbooks: list[str]
    engines: list[str]
    documents: int
    documents_included: int = 0
    documents_left_out: list[str] = Field(default_factory=list, description="Files no longer as learned.")
    not_carried: list[str] = Field(
        default_factory=list, description="Enabled weight engines whose learned state this bundle does NOT hold "
        "(no bundle format for it yet).")

    def warning(self) -> str | None:
        """The plain words for what was left behind (None: everything learned is inside)."""
        if not self.not_carried:
            return None
        return (f"what {', '.join(self.not_carried)} learned is NOT in this bundle: a bundle cannot carry "
                "that engine's learned state yet. Keep this data folder (or copy it whole) to keep it")


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
    adapters_left_out: int = 0
    documents_folder: str | None = None
    documents_written: int = 0
    backup: str | None = None
    notes: list[str] = Field(default_factory=list)


class ImportInterrupted(RuntimeError):
    """An import failed part way and undoing it failed too: part of the bundle may be in place.
    The words name what failed and the backup that restores what was here (when there is one)."""

    def __init__(self, message: str, backup: str | None) -> None:
        super().__init__(message)
        self.backup = backup


class Plan(BaseModel):
    """Everything an import will change, read and checked, held until it is applied (documents
    are streamed from the bundle when they are written)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    playbooks: list[PlaybookHistory] = Field(default_factory=list)
    replace_playbooks: set[str] = Field(default_factory=set)
    states: dict[str, dict[str, Any]] = Field(default_factory=dict)
    settings: dict[str, str] = Field(default_factory=dict)
    documents: dict[str, str] = Field(default_factory=dict, description="file name -> bundle member")
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


def free_text(name: str) -> bool:
    """Whether setting ``name`` takes any text (no pattern, no fixed choices): text that would
    become part of a prompt or of training material (a system message rehearsal questions are
    asked under, say), so a bundle never carries it: a stranger's instructions would ride in."""
    from app.settings import FIELDS

    info = FIELDS[name]
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next((a for a in get_args(annotation) if a is not type(None)), annotation)
    return annotation is str and not any(getattr(m, "pattern", None) for m in info.metadata)


def unique_path(folder: Path, stem: str) -> Path:
    """``folder/STEM-TIME.zip``, created empty here and now (``-2``, ``-3``, ... when that name
    is taken, even within the same second): two exports or backups never share a file."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        path = folder / (f"{base}.zip" if n == 1 else f"{base}-{n}.zip")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for {base}.zip in {folder}")


class BundleService:
    """Export and import of bundles (the CLI's ``engram bundle`` and the Weights tab call it).

    ``hold``: a context in which no background work runs (the app pauses its worker there, after
    the job it runs ends); each engine's own state is held beside it during an import."""

    def __init__(self, db: Database, data_dir: Path, settings: Any,
                 save_setting: Callable[[str, str], Path], config_file: Path,
                 engines: Callable[[], list[Engine]], hold: Hold | None = None) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.settings = settings
        self.save_setting = save_setting
        self.config_file = Path(config_file)
        self.engines = engines
        self.hold = hold or nullcontext
        self.blobs = BlobStore(db, self.data_dir)
        self.docs = DocumentStore(db)
        self.playbook_store = PlaybookStore(db)

    @staticmethod
    def max_bundle_bytes() -> int:
        """The largest bundle file an import reads (the app's upload limit)."""
        return Limits().bundle_bytes

    @staticmethod
    def bundle_states() -> dict[str, BundleState]:
        """Each engine whose learned state a bundle carries (``EngineSpec.bundle_state``)."""
        from engines.registry import bundle_states

        return bundle_states()

    def _engine(self, name: str) -> Engine | None:
        """Engine ``name`` when it is enabled in this process."""
        return next((e for e in self.engines() if e.name == name), None)

    # --- export ----------------------------------------------------------------------------------
    def new_export_path(self) -> Path:
        """Where the app writes a bundle for download: ``DATA_DIR/bundles/engram-TIME.zip``, a
        new file each time."""
        return unique_path(self.data_dir / "bundles", "engram")

    def export(self, path: Path, with_documents: bool = False) -> ExportReport:
        """Write everything learned here into one bundle at ``path`` (replaced atomically)."""
        path = Path(path).expanduser().absolute()
        members: dict[str, bytes | Path] = {}
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
                            documents_left_out=left_out, not_carried=self._not_carried())

    def sections(self) -> tuple[str, ...]:
        """Settings sections a bundle carries: the playbook engine's and each weight engine's."""
        return (PLAYBOOK_SECTION, *self.bundle_states())

    def carried(self, name: str) -> bool:
        """Whether a bundle may carry setting ``name`` (see the module docstring)."""
        from app.settings import FIELDS

        if name == "engines":
            return True
        return (name.split(".")[0] in self.sections() and name in FIELDS and name not in MACHINE_SETTINGS
                and not free_text(name))

    def portable_settings(self) -> dict[str, Any]:
        """The settings learning depends on, as JSON values (no paths, models, secrets or free
        text)."""
        out: dict[str, Any] = {"engines": list(self.settings.engines)}
        for section in self.sections():
            values = getattr(self.settings, section).model_dump(mode="json")
            out.update({f"{section}.{k}": v for k, v in values.items() if self.carried(f"{section}.{k}")})
        return out

    def _embedding(self) -> EmbeddingIdentity:
        """The embedding model this data folder's vectors (and router keys) were made with, as the
        store records it (the setting until something was embedded)."""
        state = StateStore(self.db)
        model = state.get(EMBED_MODEL_KEY) or self.settings.embedding_model
        dim = state.get(EMBED_DIM_KEY)
        return EmbeddingIdentity(model=model if model == "embedded" else Path(model).name,
                                 dim=int(dim) if dim else None)

    def _learned_states(self) -> dict[str, dict[str, Any]]:
        """Each weight engine's learned state (nothing learned: left out): the engine's own when
        its model is loaded in this process, else the saved one."""
        found = {}
        for name, carrier in self.bundle_states().items():
            state = carrier.learned(self._engine(name), self.blobs)
            if state is not None:
                found[name] = state
        return found

    def _not_carried(self) -> list[str]:
        """Enabled weight-writing engines that learned something no ``BundleState`` carries: the
        export says so (a person moving machines must not lose it silently)."""
        from engines.registry import registered

        carriers, specs = self.bundle_states(), registered()
        return [e.name for e in self.engines() if e.name not in carriers and e.name in specs
                and specs[e.name].writes_weights and e.has_learned()]

    @staticmethod
    def _safetensors(state: dict[str, Any]) -> bytes:
        from safetensors.torch import save

        tensors, values = split_state(state)
        return save(tensors, metadata={JSON_KEY: json.dumps(values)})

    def _document_entries(self, with_documents: bool,
                          members: dict[str, bytes | Path]) -> tuple[list[DocumentEntry], list[str]]:
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
                    members[member] = file  # streamed into the zip
                else:
                    left_out.append(row.path)
            entries.append(DocumentEntry(id=row.id, path=row.path, content_hash=row.content_hash,
                                         size=row.size, chunks=row.chunk_count, member=member))
        return entries, left_out

    # --- import ----------------------------------------------------------------------------------
    def import_bundle(self, path: Path, replace: bool = False, limits: Limits | None = None) -> ImportReport:
        """Take in the bundle at ``path`` (see the module docstring). ``BundleRefused`` when it
        cannot be; then nothing changed. ``ImportInterrupted`` when it failed part way and could
        not be undone: the error names the backup to restore."""
        path = Path(path).expanduser().absolute()
        self._refuse_if_running()
        self._refuse_if_interrupted(path)
        with BundleReader(path, limits) as reader:
            plan = self.plan(reader, replace)
            with self._held():
                backup = None
                if replace and (plan.replace_playbooks or plan.report.replaced):
                    backup = unique_path(self.data_dir / "bundles", "before-import")
                    try:
                        self.export(backup)
                    except BaseException:
                        backup.unlink(missing_ok=True)
                        raise
                    plan.report.backup = str(backup)
                begin_import(self.db, str(path), plan.report.backup, replace, os.getpid())
                try:
                    self._apply(plan, reader, path.stem)
                except ImportInterrupted:
                    raise  # the journal and the backup stay: doctor and the next start say so
                except BaseException:
                    if backup is not None:  # every step was undone: nothing was replaced after all
                        backup.unlink(missing_ok=True)
                    end_import(self.db)
                    raise
                end_import(self.db)
        return plan.report

    def _refuse_if_running(self) -> None:
        """Another Engram serving this data folder would save its own learned state over the
        import (the desktop app re-saves its live state after each change): refused."""
        from app.instance import running_instance

        record = running_instance(self.data_dir)
        if record is not None and record.pid != os.getpid():
            raise BundleRefused("running", f"Engram is running on this data folder (process {record.pid}, "
                                f"{record.url}): it would save its own learned state over the import. Import "
                                "from its Weights tab, or stop it first")

    def _refuse_if_interrupted(self, path: Path) -> None:
        """An import cut short earlier comes first: only its backup may be imported (that restores
        what was here); a record whose backup is gone, or that replaced nothing, is dropped."""
        journal = interrupted_import(self.db)
        if journal is None:
            return
        if journal.pid != os.getpid() and _alive(journal.pid):
            raise BundleRefused("running", f"another import ({journal.bundle}) is under way in process {journal.pid}")
        backup = Path(journal.backup) if journal.backup else None
        if backup is None or not backup.is_file() or backup.resolve() == path.resolve():
            log.warning("%s; going on with %s", restore_advice(journal), path)
            end_import(self.db)
            return
        raise BundleRefused("interrupted", restore_advice(journal) + " first")

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """No background work (the worker after its job) and no engine saving its state."""
        with ExitStack() as stack:
            stack.enter_context(self.hold())
            for name, carrier in self.bundle_states().items():
                stack.enter_context(carrier.hold(self._engine(name)))
            yield

    def plan(self, reader: BundleReader, replace: bool) -> Plan:
        """Read and check every part of the bundle; refuse (``BundleRefused``) before any change."""
        manifest = reader.manifest
        report = ImportReport(path=str(reader.path))
        plan = Plan(report=report)
        settings = self._checked_settings(manifest.settings)
        if manifest.engines:
            self._same_embedding(manifest.embedding)
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
        carriers = self.bundle_states()
        for entry in manifest.engines:
            carrier = carriers.get(entry.name)
            if carrier is None:
                raise BundleRefused(f"manifest.engines.{entry.name}", "no engine here takes in such weights")
            state = self._checked_state(reader, entry, carrier, manifest, settings)
            if carrier.learned_here(self._engine(entry.name), self.blobs):
                if not replace:
                    conflicts.append(f"{entry.name} has learned weights here already (they cannot be merged)")
                report.replaced.append(f"{entry.name} weights")
            moved = carrier.remapped(state, mapping)
            report.keys_left_out += moved.keys_left_out
            report.pairs_left_out += moved.pairs_left_out
            report.adapters_left_out += moved.adapters_left_out
            report.notes += moved.notes
            plan.states[entry.name] = moved.state
        if conflicts:
            raise BundleRefused("replace", "; ".join(conflicts) + ". Import with --replace to put the "
                                "bundle's in their place (what is here is saved as a bundle first), "
                                "or import into another data folder")
        report.engines = sorted(plan.states)
        plan.settings = self._settings_to_write(settings, replace, set(plan.states), bool(plan.playbooks))
        report.settings = sorted(plan.settings)
        if manifest.with_documents:
            self._plan_documents(reader, manifest, mapping, plan)
        return plan

    def _plan_documents(self, reader: BundleReader, manifest: Manifest, mapping: dict[int, int], plan: Plan) -> None:
        """The bundled documents not here, each within this machine's ``max_file_mb`` and all of
        them within the free space of the data folder's disk (written at apply, streamed)."""
        cap = int(self.settings.max_file_bytes)
        total = 0
        for entry in manifest.documents:
            if entry.member and entry.id not in mapping:
                size = reader.size(entry.member)
                if size > cap:
                    raise BundleRefused(entry.member, f"{size} bytes, more than max_file_mb ({cap} bytes): "
                                        "a document this Engram would not read")
                total += size
                plan.documents[f"{entry.id:06d}-{_safe_file_name(entry.path)}"] = entry.member
        if plan.documents:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.data_dir).free
            if total + DISK_MARGIN > free:
                raise BundleRefused("documents", f"{total / 1e6:,.0f} MB of documents to write, "
                                    f"{free / 1e6:,.0f} MB free on the data folder's disk")

    # --- checks ----------------------------------------------------------------------------------
    def _checked_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The bundle's settings, each a setting a bundle may carry with a valid value."""
        from app.settings import FIELDS
        from engines.registry import registered

        checked: dict[str, Any] = {}
        for name, value in raw.items():
            field = f"manifest.settings.{name}"
            if not self.carried(name):
                raise BundleRefused(field, "not a setting a bundle may carry" + (
                    " (free text: it would become part of a prompt)" if name in FIELDS and free_text(name) else ""))
            info = FIELDS[name]
            annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            try:
                checked[name] = TypeAdapter(annotation).validate_python(value)
            except ValidationError as exc:
                raise BundleRefused(field, exc.errors()[0]["msg"]) from None
        unknown = [e for e in checked.get("engines", []) if e not in registered()]
        if unknown:
            raise BundleRefused("manifest.settings.engines", f"unknown engine(s) {', '.join(unknown)}")
        for section in self.sections():
            try:
                self._config(section, checked)
            except ValidationError as exc:
                raise first_error(exc, f"manifest.settings.{section}") from None
        return checked

    def _config(self, section: str, settings: dict[str, Any]) -> BaseModel:
        """Engine ``section``'s settings as the import would leave them (the bundle's over ours)."""
        from engines.registry import registered

        values = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith(f"{section}.")}
        current = getattr(self.settings, section).model_dump()
        return registered()[section].config(**{**current, **values})

    def _same_embedding(self, theirs: EmbeddingIdentity) -> None:
        """Router keys are vectors of one embedding model: on another they point nowhere."""
        ours = self._embedding()
        if theirs.model != ours.model or (theirs.dim and ours.dim and theirs.dim != ours.dim):
            dims = lambda e: f" ({e.dim} dimensions)" if e.dim else ""  # noqa: E731
            raise BundleRefused(
                "manifest.embedding",
                f"the bundle's router keys are embeddings of {theirs.model}{dims(theirs)}; this Engram "
                f"embeds with {ours.model}{dims(ours)}. Learned weights route questions by those "
                "embeddings: import into an Engram with the same embedding_model")

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

    def _checked_state(self, reader: BundleReader, entry: EngineEntry, carrier: BundleState,
                       manifest: Manifest, settings: dict[str, Any]) -> dict[str, Any]:
        """A learned state the engine finds fits this machine's base model: its size within what
        that model's state can be, its header checked before its data is read."""
        base = self._same_base_model(manifest.base_model)
        shape = ModelShape(base.layers, base.hidden, base.intermediate)
        config = self._config(entry.name, settings)
        dim = manifest.embedding.dim
        member = entry.member

        def refused(exc: StateRefused) -> BundleRefused:
            return BundleRefused(f"{member}:{exc.field}", exc.reason)

        def check(tensors: dict[str, TensorHeader], meta: dict[str, str]) -> None:
            try:
                carrier.check_header({k: TensorInfo(t.dtype, t.shape) for k, t in tensors.items()}, meta,
                                     shape, config, dim)
            except StateRefused as exc:
                raise refused(exc) from None
        try:
            cap = carrier.max_bytes(shape, config, len(manifest.documents), dim)
            tensors, meta = reader.read_safetensors(member, cap, check)
            return carrier.load(tensors, meta, {d.id for d in manifest.documents}, shape, config)
        except StateRefused as exc:
            raise refused(exc) from None

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

    def _settings_to_write(self, settings: dict[str, Any], replace: bool, weights: set[str],
                           playbooks: bool) -> dict[str, str]:
        out: dict[str, str] = {}
        if "engines" in settings:
            engines = settings["engines"] if replace else list(dict.fromkeys([*self.settings.engines,
                                                                              *settings["engines"]]))
            if engines != list(self.settings.engines):
                out["engines"] = _setting_text(engines)
        for name, value in settings.items():
            section = name.split(".")[0]
            if section in weights or (section == PLAYBOOK_SECTION and replace and playbooks):
                current = getattr(getattr(self.settings, section), name.split(".", 1)[1])
                if current != value:
                    out[name] = _setting_text(value)
        return out

    # --- applying, each step undone if a later one fails ----------------------------------------
    def _apply(self, plan: Plan, reader: BundleReader, stem: str) -> None:
        undo: list[tuple[str, Callable[[], None]]] = []
        try:
            if plan.documents:
                undo.append(("the documents written", self._write_documents(plan, reader, stem)))
            carriers = self.bundle_states()
            for name, state in plan.states.items():
                try:
                    step = carriers[name].put(self._engine(name), self.blobs, state)
                except StateRefused as exc:
                    raise BundleRefused(f"engines/{name}.safetensors:{exc.field}", exc.reason) from None
                undo.append((f"{name}'s learned weights", step))
            if plan.playbooks:
                old = [read_history(self.db, n) for n in sorted(plan.replace_playbooks)]
                write_histories(self.db, plan.playbooks, plan.replace_playbooks)
                names = {p.name for p in plan.playbooks}
                undo.append(("the playbooks", lambda: self._restore_playbooks(names, old)))
            if plan.settings:
                undo.append(("the settings", self._write_settings(plan.settings)))
        except BaseException as exc:
            failed = []
            for what, step in reversed(undo):  # every step, even when one before it fails
                try:
                    step()
                except Exception as undo_exc:
                    log.exception("undoing %s failed", what)
                    failed.append(f"{what}: {type(undo_exc).__name__}: {undo_exc}")
            if failed:
                backup = plan.report.backup
                restore = (f"what was here is saved in {backup}: `engram bundle import --replace {backup}` "
                           "restores it" if backup else "it replaced nothing, so what was here is still here")
                raise ImportInterrupted(
                    f"the import failed ({type(exc).__name__}: {exc}) and undoing it failed too "
                    f"({'; '.join(failed)}): part of the bundle may be in place; {restore}", backup) from exc
            raise
        report = plan.report
        if plan.settings:
            report.notes.append("the settings take effect when Engram starts next")
        if report.keys_left_out or report.pairs_left_out or report.adapters_left_out:
            report.notes.append(
                f"{report.documents_missing} learned document(s) are not in this library: their "
                f"{report.keys_left_out} router keys, {report.pairs_left_out} recalled pairs and "
                f"{report.adapters_left_out} document adapters were left out, so questions about them "
                "get the original model's answer until they are added")

    def _restore_playbooks(self, names: set[str], old: list[PlaybookHistory]) -> None:
        write_histories(self.db, old, replace=names)
        with self.db.transaction() as conn:
            for name in names - {h.name for h in old}:
                delete_history(conn, name)

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

    def _write_documents(self, plan: Plan, reader: BundleReader, stem: str) -> Callable[[], None]:
        """Stream the documents from the bundle beside their final folder, then rename it into
        place."""
        root = self.data_dir / "Imported"
        root.mkdir(parents=True, exist_ok=True)
        safe = _safe_file_name(stem) or "bundle"
        target, n = root / safe, 1
        while target.exists():
            n += 1
            target = root / f"{safe}-{n}"
        staging = root / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            staging.mkdir()
            for name, member in plan.documents.items():
                reader.copy_to(member, staging / name, int(self.settings.max_file_bytes))
            os.replace(staging, target)
            fsync_dir(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        plan.report.documents_folder, plan.report.documents_written = str(target), len(plan.documents)
        plan.report.notes.append(f"{len(plan.documents)} document(s) were written to {target}: add that "
                                 "folder to search and cite them (the engines learn them again there)")
        return lambda: shutil.rmtree(target, ignore_errors=True)


def _alive(pid: int) -> bool:
    import psutil

    return pid > 0 and psutil.pid_exists(pid)


def _write_zip(path: Path, members: dict[str, bytes | Path]) -> int:
    """Write the bundle beside ``path`` and rename it into place; its size in bytes. A member
    given as a path is streamed from that file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.external_attr = 0o100644 << 16  # a plain file
                info.compress_type = zipfile.ZIP_DEFLATED
                if isinstance(data, Path):
                    with open(data, "rb") as src, z.open(info, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                else:
                    z.writestr(info, data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
