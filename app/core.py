"""The Engram core: one object that owns the store, the index, the worker and the watcher.

The CLI and the UI both talk to this object and nothing below it. Opening it repairs the
full-text index from SQLite (the truth), and the vector index is repaired the first time anything
uses it (``start`` does at once), so whatever a crash left behind, every stored chunk is
searchable and no vector points at a chunk that is gone.

What a command does not use is not built: the vector index (faiss), the ingestor, the worker, the
embedder (torch) and the engines come on first use, so ``engram status`` loads no model library.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from app.chat.service import ChatService, Grounding
from app import instance
from app.services.checkpoints import AnsweringState, CheckpointService
from app.services.general_text import background_text
from app.ingest.drop_files import DroppedFile, copy_into
from app.ingest.file_rules import display_name, is_document, storable
from app.paths import DataPaths
from app.runtimes.active import ActiveRuntime
from app.services.source_view import SourceView, exchange_view, source_view
from app.settings import Backend, LoadedSettings, Settings, load_settings, save_setting
from engines.base import ConsolidateReport, Draft, Engine, EngineContext, Passage
from engines.generation import Runtime
from engines.rag.hybrid import exact_counts, hybrid_order, is_keyword_query, read_query, rerank_by_windows, term_words
from engines.registry import build_engine, engine_class, registered
from app.jobs.feedback import FeedbackJobs, queue_feedback
from app.jobs.learning import LearnJobs
from app.jobs.refresh import Refresher, StateRefresh
from app.jobs.sleep import PressurePolicy, SleepJobs, SleepScheduler, SleepStatus, run_sleep
from app.services.playbooks import PlaybookService
from app.jobs.worker import Worker, is_paused, set_paused
from store import activity
from store.blobs import BlobStore
from store.chunk_windows import ChunkWindowStore
from store.conversations import ConversationRow, ConversationStore, MessageRow
from store.database import Database
from store.document_listing import DisplayStatus, DocumentPage, list_documents
from store.documents import DocumentRow, DocumentStore
from store.folders import FolderRow, FolderStore
from store.fulltext import FullTextIndex, FullTextRepair
from store.memory_facts import FactRow, MemoryFactStore, conversation_of
from store.metrics_log import MetricsLog
from store.ignored_files import IgnoredFiles
from store.import_journal import interrupted_import, restore_advice
from store.index_sidecar import saved_index
from store.controller_decisions import ControllerDecisionStore
from store.jobs import CONTROLLER, FEEDBACK, LEARN, REEMBED, REFRESH, SLEEP, JobQueue, Progress
from store.next_vectors import NextVectors
from app.jobs.reembed import ReembedJobs, embedder_record, queue_reembed
from store.playbooks import PlaybookStore
from store.state import StateStore
from store.wandb_mirror import WandbMirror

from app.runtimes.catalogue import ChatModel, ModelCatalogue, model_catalogue
from app.services.settings_view import SettingRow, setting_names, setting_row, setting_rows
from store.folders import WatchedFolder
from store.playbook_files import PlaybookFile, read_playbook_file

# --- re-exported for ui/, which imports nothing from app/ but this module ----------------------
from app.chat.service import Citation as Citation, Delta as Delta, Done as Done, Sources as Sources
from app.chat.controller import Decision as Decision, DecisionRow as DecisionRow
from app.chat.revision import Revision as Revision
from app.instance import REFUSED as REFUSED, is_loopback as is_loopback
from app.runtimes.llamacpp import EMBEDDED as EMBEDDED, EMBEDDED_TITLE as EMBEDDED_TITLE
from app.runtimes.registry import BACKENDS as BACKENDS
from app.services.playbooks import Playbook as Playbook
from app.settings import SettingsError as SettingsError
from engines.generation import ChatMessage as ChatMessage
from engines.generation import ModelInfo as ModelInfo
from engines.generation import PromptTooLong as PromptTooLong
from engines.generation import RuntimeUnavailable as RuntimeUnavailable
from store.document_listing import STATUSES as STATUSES, ListedDocument as ListedDocument
from store.playbook_files import PlaybookFileError as PlaybookFileError
from app.services.bench_runs import BENCHES as BENCHES, BenchRun as BenchRun, BenchRuns, BenchStatus as BenchStatus
from app.services.weights_history import WeightsHistory as WeightsHistory
from app.services.memory_history import MemoryHistory as MemoryHistory

if TYPE_CHECKING:
    import numpy as np

    from app.bench.learn import Forgot as Forgot, LearnBenchReport as LearnBenchReport
    from app.chat.bandit import RewardWeights
    from app.ingest.embeddings import Embedder
    from app.ingest.sentence_windows import WindowFill
    from app.memory.episodic import EpisodicMemory
    from app.ingest.query_embedding import QueryEmbedder
    from app.ingest.pipeline import FileResult, Ingestor, ScanReport
    from app.ingest.watcher import FolderWatcher
    from store.vector_index import SyncReport, VectorIndex
    from app.runtimes.torch_runtime import TorchRuntime
    from app.services.bundles import BundleService

log = logging.getLogger(__name__)



class StatusReport(BaseModel):
    data_dir: str
    folders: list[FolderRow]
    documents: int
    indexed: int
    errors: int
    chunks: int
    vectors: int
    index_kind: str
    pending_jobs: int
    progress: Progress
    recent_errors: list[DocumentRow]
    sleep: SleepStatus


class Engram:
    """Everything one Engram process holds open."""

    def __init__(self, loaded: LoadedSettings | None = None, embedder: Embedder | None = None) -> None:
        self.loaded = loaded or load_settings()
        self._given_embedder = embedder  # share one loaded model (tests, benches): it is the target too
        self._target_embedder: Embedder | None = None
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        self.settings: Settings = self.loaded.settings
        self.paths = DataPaths(root=self.settings.data_dir).ensure()
        self.db = Database(self.paths.db)
        self.docs = DocumentStore(self.db)
        self.folders = FolderStore(self.db)
        self.queue = JobQueue(self.db)
        self.state = StateStore(self.db)
        self.conversations = ConversationStore(self.db)
        self.ignored = IgnoredFiles(self.db)
        self.runtime = ActiveRuntime(self.settings)
        self.agent_runtime = self._agent_runtime()
        self._open_lock = threading.RLock()  # the index and the worker are built once, by one thread
        self._index: VectorIndex | None = None
        self._last_sync: SyncReport | None = None
        self._worker: Worker | None = None
        self._save_lock = threading.Lock()
        self._neocortex_lock = threading.Lock()
        self._neocortex: Runtime | None = None
        self._owns_neocortex = True
        self.fulltext = FullTextIndex(self.db)
        self.last_fulltext_repair = self.repair_fulltext()
        self.watcher: FolderWatcher | None = None
        self.sleeper = SleepScheduler(self.settings.sleep, self.db, self.queue, self.pressure_policy,
                                      self._facts_said)
        self._warming: threading.Thread | None = None  # the embedder loading for a served /v1
        self._query_copies: dict[str, QueryEmbedder | None] = {}  # by vector identity: see _query_pair
        self._query_copy_failed: set[Path] = set()  # exports that failed in this process (not tried again)

    # --- components --------------------------------------------------------------------------
    @property
    def index(self) -> VectorIndex:
        """The FAISS index, loaded and repaired from SQLite on first use: commands that never
        search or write chunks (status, playbooks, config) do not load faiss."""
        with self._open_lock:
            if self._index is None:
                from store.vector_index import VectorIndex

                record = self._embedding_record()
                self._index = VectorIndex(self.paths.index, dim=record["dim"],
                                          ann_threshold=self.settings.ann_threshold,
                                          nprobe=self.settings.ann_nprobe, identity=record["identity"])
                self.repair_index()
            return self._index

    @property
    def last_sync(self) -> SyncReport:
        """What opening the index changed to make it match SQLite (opens it when not yet open)."""
        with self._open_lock:
            self.index
            assert self._last_sync is not None
            return self._last_sync

    @property
    def worker(self) -> Worker:
        """The background worker with a handler per job kind, built on first use."""
        with self._open_lock:
            if self._worker is None:
                self._worker = self._build_worker()
            return self._worker

    def _build_worker(self) -> Worker:
        worker = Worker(self.ingestor, self.queue, self.state, self.save_index,
                        batch_files=self.settings.worker_batch_files,
                        save_interval_s=self.settings.index_save_interval_s)
        worker.register(LEARN, LearnJobs(self.db, self.engine))
        worker.register(FEEDBACK, FeedbackJobs(self.db, self.engine))
        from app.jobs.controller_reward import ControllerRewards  # numpy: not on the status path

        worker.register(CONTROLLER, ControllerRewards(self.db, lambda q: [p.support for p in self.search(q)],
                                                      self.reward_weights))
        worker.register(REEMBED, ReembedJobs(self.next_vectors, self.queue, self._settings_embedder,
                                             self._live_identity, self._swap_embedding,
                                             lambda: worker.stopping))
        worker.register(SLEEP, SleepJobs(self.db, lambda: self.engines,
                                         lambda: worker.stopping or worker.holding,
                                         self.sleep_checkpoints, self.consolidate_memory))
        refresh = StateRefresh(self.db, self.queue, self._refreshers, lambda: worker.stopping or worker.holding,
                               self.sleeper.due)
        worker.register(REFRESH, refresh)
        worker.on_idle = lambda: self.sleeper.check() or refresh.check()
        worker.after_ingest = self._export_query_copy
        return worker

    def _refreshers(self) -> list[Refresher]:
        """What the idle worker keeps up to date: the sentence windows where the search re-ranks by
        them, and the engines that read the weights once this process loaded the weights (nothing
        changed them in a process that never did)."""
        found: list[Refresher] = [self.window_fill] if self.settings.rag.window_rerank else []
        if self._neocortex is not None:
            found += [e for e in self.engines if e.reads_weights]
        return found

    def fill_windows(self, progress: Callable[[float, str], None] = lambda f, m: None) -> dict[str, int]:
        """Embed now the sentence windows the search's re-rank reads, as the idle worker would:
        a bench then asks the library as a person's app has it once idle, and ``engram ingest``
        leaves its library searched as the app would. Each batch is stored as it is embedded, so
        an interrupted fill keeps what it did."""
        if not self.settings.rag.window_rerank:
            return {"documents": 0, "chunks": 0, "left": 0}
        return self.window_fill.refresh(progress, lambda: False)

    def windows_missing(self) -> int:
        """Chunks whose sentence windows the search's re-rank would read and that have none."""
        if not self.settings.rag.window_rerank:
            return 0
        return self.windows.count_missing(self.index.identity)

    @cached_property
    def window_fill(self) -> WindowFill:
        from app.ingest.sentence_windows import WindowFill  # numpy: not on the status path

        return WindowFill(self.windows, lambda: self.index.identity, lambda: self.embedder)

    @cached_property
    def windows(self) -> ChunkWindowStore:
        """Each chunk's stored sentence-window vectors (the search's re-rank reads them)."""
        return ChunkWindowStore(self.db)

    def _export_query_copy(self) -> None:
        """Once the embedder is loaded for ingestion, export the ONNX copy questions are embedded
        with (``embedding_query_copy``), once per model. A given embedder (tests, benches) is the
        caller's to manage; a GPU or a failed export leaves questions on the embedder as before."""
        embedder = self.__dict__.get("embedder")
        if (not self.settings.embedding_query_copy or embedder is None or self._given_embedder is not None
                or embedder.device != "cpu" or embedder.backend == "onnx-int8"):
            return  # the int8 file is the one ingestion runs: it is there already
        from app.ingest.onnx_export import cached_onnx, onnx_folder

        folder, name = cached_onnx(embedder.model_path, self._onnx_cache, int8=False)
        if (folder / name).exists() or folder in self._query_copy_failed:
            return
        try:
            import onnxruntime  # noqa: F401  (without it the copy would never be used)

            onnx_folder(embedder.model_path, self._onnx_cache, int8=False)
        except Exception as exc:  # noqa: BLE001 (a speed-up: search works without it)
            self._query_copy_failed.add(folder)
            log.info("questions stay on the torch embedder (no ONNX copy: %s: %s)", type(exc).__name__, exc)

    def _wake(self) -> None:
        """Tell the worker new jobs wait; without a worker in this process they wait in the store."""
        if self._worker is not None:
            self._worker.wake()

    def _agent_runtime(self) -> ActiveRuntime:
        """Where the playbook's Reflector and Curator run: the chat runtime unless ace settings
        name another backend or model."""
        ace, chat = self.settings.ace, self.settings
        if not ace.agent_backend and not ace.agent_model:
            return self.runtime
        backend = ace.agent_backend or chat.chat_backend
        model = ace.agent_model or (chat.chat_model if backend == chat.chat_backend else "embedded")
        return ActiveRuntime(self.settings, backend, model)

    @cached_property
    def embedder(self) -> Embedder:
        """The embedder of the vectors the live index holds: queries and new documents use it.
        Until a re-embedding completes that is the model the library was embedded with, not
        necessarily the one the settings name now."""
        record = self.next_vectors.current()
        if record is None:
            return self._settings_embedder()
        return self._make_embedder(record["model"], record["backend"])

    @property
    def _onnx_cache(self) -> Path:
        return self.paths.cache / "embeddings"

    def _make_embedder(self, model: str, backend: str) -> Embedder:
        from app.ingest.embeddings import Embedder

        return Embedder(model, self.settings.device, self.settings.embed_batch_size, backend=backend,
                        cache_dir=self._onnx_cache)

    def _query_pair(self) -> tuple[VectorIndex, Embedder | QueryEmbedder]:
        """The live index and what embeds a question for it, taken together (a re-embedding
        swaps both). A process that has not loaded the embedder (a one-off CLI search) uses the
        torch-free copy of the index's own model where it is cached: the same vectors, without
        the seconds torch takes to load."""
        if "embedder" not in self.__dict__ and self._given_embedder is None and self.settings.embedding_query_copy:
            with self._open_lock:
                index, record = self.index, self.next_vectors.current()
            if record is not None and record["identity"] == index.identity:
                quick = self._query_copy(record)
                if quick is not None:
                    return index, quick
        self.embedder  # loaded outside the lock
        with self._open_lock:
            return self.index, self.embedder

    def _query_copy(self, record: dict) -> QueryEmbedder | None:
        if record["identity"] not in self._query_copies:
            from app.ingest.embeddings import resolve_model_path
            from app.ingest.query_embedding import load_query_embedder

            try:
                path = resolve_model_path(record["model"])
            except FileNotFoundError:
                quick = None
            else:
                quick = load_query_embedder(path, self._onnx_cache, int8=record["backend"] == "onnx-int8")
            self._query_copies[record["identity"]] = quick
        return self._query_copies[record["identity"]]

    def _settings_embedder(self) -> Embedder:
        """The embedder of the model and backend the settings name (the re-embedding's target)."""
        if self._given_embedder is not None:
            return self._given_embedder
        if self._target_embedder is None:  # one per process: a re-embedding's slices share it
            self._target_embedder = self._make_embedder(self.settings.embedding_model,
                                                        self.settings.embedding_backend)
        return self._target_embedder

    def _wanted_identity(self) -> str:
        """The identity of the vectors the settings ask for (loads no model, but a given one)."""
        from app.ingest.embeddings import embedding_identity

        if self._given_embedder is not None:
            return self._given_embedder.identity
        from app.ingest.embeddings import pick_device

        return embedding_identity(self.settings.embedding_model, self.settings.embedding_backend,
                                  pick_device(self.settings.device))

    @cached_property
    def next_vectors(self) -> NextVectors:
        return NextVectors(self.db)

    @cached_property
    def ingestor(self) -> Ingestor:
        from app.ingest.pipeline import Ingestor

        learners = [n for n in self.settings.engines if engine_class(n).learns_documents]
        learners.sort(key=lambda n: engine_class(n).reads_weights)  # after the weights they read
        return Ingestor(self.settings, self.docs, self.folders, self.queue, self.index,
                        lambda: self.embedder, learners, self.ignored, self._forget_in_engines)

    def _forget_in_engines(self, document_ids: list[int]) -> None:
        """The documents are already gone from the store: an engine failing to drop what it
        keeps of them must not fail the scan, the ingest batch or the start-up that removed them."""
        for engine in self.engines:
            try:
                engine.forget_many(document_ids)
            except Exception:
                log.exception("engine %s could not forget documents %s", engine.name, document_ids)

    @cached_property
    def engine_context(self) -> EngineContext:
        return EngineContext(db=self.db, data_dir=self.paths.root, retrieve=self.search,
                             embed=lambda texts: self.embedder.embed(texts), generator=self.runtime.get,
                             agent=self.agent_runtime.get, answer=self._draft,
                             neocortex=self.neocortex, learned_neocortex=self.learned_neocortex,
                             background=background_text, metrics=self.metrics)

    @cached_property
    def metrics(self) -> MetricsLog:
        """Every training step: DATA_DIR/metrics.jsonl, mirrored to wandb as ``metrics.wandb`` says."""
        config = self.settings.metrics
        return MetricsLog(self.paths.root, WandbMirror(self.paths.root, config.wandb, config.wandb_project))

    def _draft(self, question: str, bullets: list[str], max_tokens: int) -> Draft:
        """The chat path's answer with ``bullets`` as the playbook (replays, offline training)."""
        return self.chat.draft(question, bullets, skip=frozenset({"ace"}), max_tokens=max_tokens)

    def neocortex(self) -> TorchRuntime:
        """The torch model weight-writing engines train and answer with (loaded on first use)."""
        with self._neocortex_lock:
            if self._neocortex is None:
                from app.runtimes.neocortex import load_neocortex

                self._neocortex = load_neocortex(self.settings.neocortex_model, self.settings.device,
                                                 self.paths.cache, self.settings.threads)
            return self._neocortex  # type: ignore[return-value]

    def learned_neocortex(self) -> TorchRuntime:
        """The neocortex with every enabled engine's learned weights in it, as answers compute
        with: each engine loads its own lazily, on first use, so without this a fresh process
        (``engram hidden fill``) could compute with the base model."""
        for engine in self.engines:
            engine.load_weights()
        return self.neocortex()

    def adopt_neocortex(self, runtime: Runtime) -> None:
        """Use an already loaded torch runtime that someone else closes (tests, benches)."""
        with self._neocortex_lock:
            self._neocortex, self._owns_neocortex = runtime, False

    def pressure_policy(self) -> PressurePolicy:
        """Which enabled engines decide idle sleep by their own pressure, from the settings alone
        (the scheduler asks without building any engine)."""
        names = self.settings.engines
        pressured = {n: float(getattr(self.settings, n).sleep_pressure) for n in names
                     if engine_class(n).sleeps_by_pressure}
        return PressurePolicy(thresholds=pressured, others_learn=any(
            engine_class(n).learns_documents and n not in pressured for n in names))

    @cached_property
    def engines(self) -> list[Engine]:
        """The enabled engines, built on first use, in the order the settings list them."""
        return [build_engine(name, self.engine_context, getattr(self.settings, name, None))
                for name in self.settings.engines]

    def engine(self, name: str) -> Engine:
        """The enabled engine called ``name``."""
        for engine in self.engines:
            if engine.name == name:
                return engine
        raise KeyError(f"engine {name!r} is not enabled (settings: engines)")

    @cached_property
    def checkpoints(self) -> CheckpointService:
        return CheckpointService(BlobStore(self.db, self.paths.root), lambda: self.engines)

    @property
    def sleep_checkpoints(self) -> CheckpointService | None:
        """Where a sleep saves the learned state before it begins (None: sleep.checkpoint is off)."""
        return self.checkpoints if self.settings.sleep.checkpoint else None

    def decisions(self, limit: int = 20) -> list[DecisionRow]:
        """What the meta-controller gave each of the newest answers, newest first."""
        from app.chat.controller import decision_rows

        return decision_rows(self.conversations, limit)

    def answering_state(self) -> AnsweringState:
        """Which runtime and which learned weights answer the next question (for the UI)."""
        learned = self.checkpoints.active()
        if learned:
            return AnsweringState(backend="torch", model=self.settings.neocortex_model, learned=learned)
        return AnsweringState(backend=self.runtime.backend, model=self.runtime.model, learned=[])

    @cached_property
    def chat(self) -> ChatService:
        rag = self.settings.rag  # the retrieval engine's settings decide how passages enter prompts
        grounding = Grounding(context_share=rag.context_share, logit_bias_strength=rag.logit_bias_strength)
        from app.chat.bandit import BanditPolicy

        policy = BanditPolicy(ControllerDecisionStore(self.db).model)
        return ChatService(self.settings, self.conversations, self.engines, self.runtime, grounding,
                           on_feedback=self._feedback_given, neocortex=self.neocortex,
                           episodic=self.episodic if self.settings.memory.episodic else None,
                           on_answer=self._answer_given, bandit=policy)

    @cached_property
    def episodic(self) -> EpisodicMemory:
        """The episodic tier: earlier turns, embedded with the chunks' embedder, recalled by
        similarity weighted by age (``memory.half_life_days``)."""
        from app.memory.episodic import EpisodicMemory

        return EpisodicMemory(self.db, lambda texts: self.embedder.embed(texts), self.settings.memory)

    def _follow_embedder(self) -> None:
        """The chat's facts and turns embedded again if a crash left them on the model the
        library had before its last switch (cheap when they match: one state read)."""
        from app.memory.consolidation import follow_embedder

        done = follow_embedder(self.db, lambda texts: self.embedder.embed(texts), self._live_identity())
        if done is not None:
            log.warning("the chat's facts were embedded by the library's previous model: %d embedded again", done)

    def consolidate_memory(self) -> ConsolidateReport:
        """Sleep's memory work: embed the turns not embedded yet, then (``memory.consolidate``)
        make what the person stated or corrected in chat retrievable, citing the conversation."""
        from app.memory.consolidation import ENGINE, consolidate

        turns = self.episodic.embed_new()
        compressed = self.compress_memory()
        if not self.settings.memory.consolidate:
            return ConsolidateReport(engine=ENGINE, seconds=0.0, changed=bool(compressed.get("stretches_compressed")),
                                     details={"turns_embedded": turns, "note": "memory.consolidate is off",
                                              **compressed})
        report = consolidate(self.db, lambda texts: self.embedder.embed(texts), self.index, self.settings.memory)
        self.save_index()
        report.details["turns_embedded"] = turns
        report.details.update(compressed)
        report.changed = report.changed or bool(compressed.get("stretches_compressed"))
        return report

    def compress_memory(self) -> dict[str, Any]:
        """Sleep's compression of old stretches of turns (``memory.compress``); a failure is
        logged and reported, and consolidation goes on."""
        from app.memory.compression import compress_old

        try:
            return compress_old(self.db, lambda texts: self.embedder.embed(texts),
                                lambda request: self.runtime.get().generate(request).text,
                                BlobStore(self.db, self.paths.root), self.settings.memory)
        except Exception as exc:  # noqa: BLE001 - facts still consolidate without compression
            log.exception("compressing old turns failed")
            return {"compress_error": str(exc)}

    def _facts_said(self) -> int:
        """Facts stated or corrected in chat since the last whole sleep (sleep pressure); 0 when
        sleep does not consolidate them."""
        from app.memory.importance import facts_in

        memory = self.settings.memory
        return facts_in(activity.said_since_sleep(self.db), memory.min_importance) if memory.consolidate else 0

    def memory_facts(self, conversation_id: int | None = None) -> list[FactRow]:
        """What sleep found said in chat (all conversations or one), with each fact's status."""
        return MemoryFactStore(self.db).facts(conversation_id)

    def forget_fact(self, fact_id: int) -> None:
        """Stop knowing one consolidated fact: its chunk leaves the index and sleep never adds it
        again (KeyError when there is no such fact)."""
        store = MemoryFactStore(self.db)
        if store.fact(fact_id) is None:
            raise KeyError(f"no consolidated fact with id {fact_id}")
        chunk = store.forget(fact_id)
        if chunk is not None:
            self._drop_vectors([chunk])

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation: its turns, their vectors, and the knowledge consolidated from it
        (its chunks leave the index, so no answer cites it again). KeyError when there is none."""
        existed, chunks = MemoryFactStore(self.db).delete_conversation(conversation_id)
        if not existed:
            raise KeyError(f"no conversation with id {conversation_id}")
        self._drop_vectors(chunks)

    def _drop_vectors(self, chunk_ids: list[int]) -> None:
        import numpy as np

        if chunk_ids:
            self.index.remove(np.asarray(chunk_ids, dtype=np.int64))
            self.save_index()

    def reward_weights(self) -> RewardWeights:
        """The meta-controller's reward weights, as the settings say now."""
        s = self.settings
        from app.chat.bandit import RewardWeights

        return RewardWeights(accuracy=s.controller_reward_accuracy, latency=s.controller_reward_latency,
                             compute=s.controller_reward_compute, calibration=s.controller_reward_calibration)

    def _answer_given(self, message: MessageRow) -> None:
        from app.jobs.controller_reward import log_decision

        if log_decision(self.db, self.queue, message):
            self._wake()

    @cached_property
    def playbooks(self) -> PlaybookService:
        return PlaybookService(PlaybookStore(self.db))

    @cached_property
    def bundles(self) -> BundleService:
        """Export and import of everything learned, as one file (``engram bundle``, Weights tab)."""
        from app.services.bundles import BundleService

        return BundleService(self.db, self.paths.root, self.settings, self.save_setting,
                             self.loaded.config_file, lambda: self.engines, hold=self._worker_held)

    def _worker_held(self) -> AbstractContextManager[None]:
        """No background job runs inside (the one running ends first); no worker here: nothing."""
        return self._worker.held() if self._worker is not None else nullcontext()

    def _feedback_given(self, message: MessageRow) -> None:
        from app.jobs.controller_reward import queue_reward

        queue_reward(self.queue, message.id)  # the controller's reward now follows the feedback
        queue_feedback(self.queue, self.db, self.engines, message.id)
        self._wake()

    def _embedding_record(self) -> dict:
        """What the stored vectors are (model, backend, identity, dimension), remembered in the
        store so opening the index does not load the model. An empty library takes the embedder
        the settings name at once; one with chunks keeps its own until a re-embedding completes."""
        record = self.next_vectors.current()
        if record is not None and (self.docs.counts()["chunks"] or record["identity"] == self._wanted_identity()):
            return record
        if record is not None:  # nothing embedded yet: the old record binds nothing
            self.__dict__["embedder"] = self._settings_embedder()
        record = embedder_record(self.embedder)
        self.next_vectors.set_current(record)
        return record

    def _live_identity(self) -> str | None:
        record = self.next_vectors.current()
        return record["identity"] if record else None

    def embedding_switch_pending(self) -> bool:
        """True when the settings name another embedding model or backend than the library's
        vectors (a re-embedding is due or running)."""
        live = self._live_identity()
        return live is not None and live != self._wanted_identity()

    def queue_embedding_switch(self) -> bool:
        """Queue the re-embedding when the settings name other vectors than the library holds
        (``start`` does); True when one is queued or already waiting."""
        if not self.embedding_switch_pending():
            return False
        queue_reembed(self.queue, "the embedding settings changed")
        self._wake()
        return True

    def _swap_embedding(self, embedder: Embedder, record: dict) -> bool:
        """Make the re-embedded vectors live: the new index is built aside from them (searches go
        on with the old one meanwhile), then the store's vectors, the index and the embedder are
        replaced in one step. False (nothing changed) when a chunk still lacks a new vector."""
        from store.vector_index import VectorIndex

        from app.memory.consolidation import follow_embedder, note_embedder

        fresh = VectorIndex(self.paths.index, dim=record["dim"], ann_threshold=self.settings.ann_threshold,
                            nprobe=self.settings.ann_nprobe, identity=record["identity"])
        fresh.sync(self.next_vectors.ids(), self.next_vectors.vectors)
        note_embedder(self.db, self._live_identity())  # a crash after the swap is caught at start
        with self._open_lock:
            if not self.next_vectors.promote():
                return False
            fresh.sync(self.docs.chunk_ids(), self.docs.vectors)  # chunks that left meanwhile
            self._index = fresh
            if "ingestor" in self.__dict__:
                self.ingestor.index = fresh
            self.__dict__["embedder"] = embedder
        self.save_index()
        follow_embedder(self.db, embedder.embed, record["identity"])  # the chat's facts and turns follow
        return True

    # --- index consistency -------------------------------------------------------------------
    def repair_index(self) -> SyncReport:
        """Load the saved index and make it match SQLite exactly; logs what it changed."""
        with self._open_lock:
            if self._index is None:
                return self.last_sync  # opening the index repairs it
            self._index.load()
            report = self._index.sync(self.docs.chunk_ids(), self.docs.vectors)
            self._last_sync = report
        if report.added or report.removed or report.rebuilt:
            log.info("index repaired from the store: %d added, %d removed%s", report.added,
                     report.removed, ", rebuilt" if report.rebuilt else "")
        return report

    def repair_fulltext(self) -> FullTextRepair:
        """Rebuild the keyword index from the chunks when it was dropped or holds other rows."""
        report = self.fulltext.repair()
        if report.rebuilt:
            log.info("full-text index rebuilt from the store: %d chunks (it held %d)",
                     report.chunks, report.indexed)
        return report

    def save_index(self) -> None:
        with self._save_lock:
            if self._index is not None and self._index.dirty:
                self._index.save()

    # --- folders -----------------------------------------------------------------------------
    def add_folder(self, path: Path, is_default: bool = False) -> tuple[FolderRow, ScanReport]:
        folder = Path(os.path.abspath(Path(path).expanduser()))
        if not folder.is_dir():
            raise NotADirectoryError(f"not a folder: {folder}")
        if not storable(str(folder)):
            raise NotADirectoryError(f"the folder name is not valid UTF-8, rename it: {display_name(str(folder))}")
        row = self.folders.add(str(folder), is_default=is_default)
        if self.watcher:
            self.watcher.watch(folder)
        report = self.ingestor.scan(folder, label=f"add folder {folder}")
        self._wake()
        return row, report

    def remove_folder(self, path: Path) -> int:
        """Stop watching a folder and forget its documents; returns how many were forgotten."""
        folder = str(Path(os.path.abspath(Path(path).expanduser())))
        if self.folders.get(folder) is None:
            raise KeyError(f"not a watched folder: {folder}")
        if self.watcher:
            self.watcher.unwatch(Path(folder))
        self.folders.remove(folder)
        self.ignored.remove_under(folder)
        nested = [f.path for f in self.folders.list() if f.path.startswith(folder.rstrip("/") + "/")]
        paths = [p for p in self.docs.paths_under(folder) if not any(p.startswith(n + "/") for n in nested)]
        forgotten = self.ingestor.forget(paths)
        self.save_index()
        return forgotten

    def ensure_drop_folder(self) -> FolderRow:
        drop = self.settings.effective_drop_folder
        drop.mkdir(parents=True, exist_ok=True)
        existing = self.folders.get(str(Path(os.path.abspath(drop))))
        return existing or self.add_folder(drop, is_default=True)[0]

    def reconcile(self) -> list[ScanReport]:
        """Catch up with what changed while the app was closed."""
        reports = []
        for folder in self.folders.list():
            if Path(folder.path).is_dir():
                reports.append(self.ingestor.scan(Path(folder.path), label=f"start-up scan {folder.path}"))
            else:
                log.warning("watched folder is missing: %s", folder.path)
        self._wake()
        return reports

    # --- single documents (the Library) ---------------------------------------------------------
    def document_page(self, status: DisplayStatus | None = None, text: str = "", limit: int = 50,
                      offset: int = 0) -> DocumentPage:
        """One page of documents (queued new files and forgotten ones included) by path."""
        return list_documents(self.db, lambda p: is_document(Path(p)), status, text, limit, offset)

    def reindex_document(self, path: str) -> None:
        """Read a document again even if unchanged (say after a settings change); a forgotten
        one is learned again."""
        if conversation_of(path) is not None:
            raise ValueError(f"{path} holds facts said in chat: sleep keeps them up to date "
                             "(`engram memory list`), there is no file to read again")
        was_ignored = self.ignored.remove(path)
        if not self.docs.clear_hash(path) and not was_ignored:
            raise KeyError(f"not a known document: {path}")
        self.ingestor.enqueue_paths([Path(path)], label=f"re-index {path}")
        self._wake()

    def forget_document(self, path: str) -> None:
        """Drop a document from the store, the index and the engines; a file still inside a
        watched folder is then ignored until re-learned, or the next scan would bring it back."""
        row = self.docs.get(path)
        if row is None:
            raise KeyError(f"not a known document: {path}")
        if self.folders.owner(path) is not None:
            self.ignored.add(path)
        MemoryFactStore(self.db).forget_conversation_document(path)  # sleep must not add them back
        self.ingestor.forget([path])  # the engines are told too
        self.save_index()

    def add_files(self, files: list[tuple[Path, str]]) -> list[DroppedFile]:
        """Copy (file, original name) pairs into the drop folder and queue them at once."""
        results = copy_into(self.settings.effective_drop_folder, files)
        copied = [Path(r.path) for r in results if r.path]
        if copied:
            self.ingest(copied)
        return results

    def source(self, chunk_id: int, quote: str = "") -> SourceView | None:
        """The stored text around a cited chunk (None when the chunk is gone)."""
        return source_view(self.db, chunk_id, quote)

    def exchange_source(self, conversation_id: int, first: int, last: int,
                        quote: str = "") -> SourceView | None:
        """The conversation around an exchange recalled from it as a source (its turns ``first``
        to ``last``, from 1); None when it is gone."""
        return exchange_view(self.db, conversation_id, first, last, quote)

    # --- settings changed from the app -----------------------------------------------------------
    def save_setting(self, name: str, value: str) -> Path:
        """Persist a setting in this process's config file (validated; used from the next start)."""
        return save_setting(name, value, self.loaded.config_file.parent)

    def use_model(self, backend: Backend, model: str) -> None:
        """Load ``model`` with ``backend`` (a failure leaves the current one), answer with it
        from now on, and keep it as the chat model for the next start."""
        self.runtime.switch(backend, model)
        self.save_setting("chat_backend", backend)
        self.save_setting("chat_model", model)

    # --- one-shot ingestion --------------------------------------------------------------------
    def ingest(self, paths: list[Path]) -> list[ScanReport]:
        """Queue files or folders for ingestion (without watching them)."""
        reports = []
        for path in paths:
            path = Path(os.path.abspath(Path(path).expanduser()))
            if not path.exists():
                raise FileNotFoundError(f"no such file or folder: {path}")
            reports.append(self.ingestor.scan(path, label=f"ingest {path}"))
        self._wake()
        return reports

    def pause(self) -> None:
        set_paused(self.state, True)
        self._wake()

    def resume(self) -> None:
        set_paused(self.state, False)
        self._wake()

    def cancel(self) -> int:
        return self.queue.cancel_pending()

    def person_present(self) -> None:
        """The person used the app (a key or a click): idle time starts again, and a sleep begun
        while idle gives way within a step, as to a question."""
        from store import activity

        activity.record_ui_input(self.db)

    def sleep_now(self) -> bool:
        """Queue a sleep now, whatever the pressure (the Sleep now button); False when one is
        already waiting or running."""
        queued = self.sleeper.queue_sleep("manual")
        self._wake()
        return queued

    # --- background ----------------------------------------------------------------------------
    def start(self, watch: bool = True) -> None:
        """Start-up: recover interrupted jobs, create the drop folder, reconcile, watch, work."""
        recovered = self.queue.recover()
        if recovered:
            log.info("resuming %d interrupted jobs", recovered)
        interrupted = interrupted_import(self.db)
        if interrupted is not None:
            log.warning("%s", restore_advice(interrupted))
        self.index  # opened and repaired here, before the watcher and the worker threads use it
        self._follow_embedder()
        self.queue_embedding_switch()
        self.ensure_drop_folder()
        if watch:
            from app.ingest.watcher import FolderWatcher

            self.watcher = FolderWatcher(self._on_changed, self.settings.watch_debounce_s)
            for folder in self.folders.list():
                if Path(folder.path).is_dir():
                    self.watcher.watch(Path(folder.path))
            self.watcher.start()
        self.reconcile()
        self.worker.start()

    def stop(self) -> None:
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        if self._worker is not None:
            self._worker.stop()
        self.save_index()

    def close(self) -> None:
        if "bench_runs" in self.__dict__:
            self.bench_runs.close()  # a bench started from the app ends with it
        self.stop()
        if self.agent_runtime is not self.runtime:
            self.agent_runtime.close()
        self.runtime.close()
        if self._neocortex is not None and self._owns_neocortex:
            self._neocortex.close()
        if "metrics" in self.__dict__:
            self.metrics.close()  # a wandb run, when one was started, ends complete
        self.db.close()

    # --- the running instance: the command line asks it instead of loading the models -----------
    def announce(self, api_url: str) -> None:
        """This process serves the /v1 API at ``api_url``: record it in the data folder for the
        CLI (``app/instance.py``), and load the embedder in the background so the first search
        asked of it is as quick as the next."""
        instance.announce(self.paths.root, api_url)
        self._warming = threading.Thread(target=self._warm_embedder, name="engram-warm-embedder", daemon=True)
        self._warming.start()

    def _warm_embedder(self) -> None:
        try:
            self.embedder.embed(["warm up"])
        except Exception:
            log.exception("the embedding model did not load; searches will try again")

    def withdraw(self) -> None:
        """This process stops serving /v1: its record leaves the data folder, and a model still
        loading finishes first (torch aborts the process when it exits mid-load)."""
        instance.withdraw(self.paths.root)
        if self._warming is not None:
            self._warming.join(timeout=120)

    def search_settings(self) -> dict:
        """The settings ``search`` ranks with, as JSON values (compared with a CLI's own)."""
        return instance.search_settings(self.settings)

    def answer_settings(self) -> dict:
        """The settings an answer depends on, as JSON values (compared with a CLI's own)."""
        return instance.answer_settings(self.settings)

    def _on_changed(self, paths: list[Path]) -> None:
        self.ingestor.enqueue_paths(paths, label="folder changes")
        self._wake()

    # --- queries ---------------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None) -> list[Passage]:
        """Top chunks for a query, ranked as ``rag.mode`` says: chat, the engines and ``engram
        search`` all rank here. A vector or keyword row whose chunk is gone is never returned."""
        k = k or self.settings.search_k
        if not query.strip() or len(self.index) == 0:
            return []
        rag = self.settings.rag
        depth = max(rag.candidates, k * 2 + 8)
        index, embedder = self._query_pair()
        vec = embedder.embed([query])[0]
        terms = read_query(query)
        dense, cosine = self._dense_ranking(index, vec, depth) if rag.mode != "bm25" else ([], {})
        bm25 = [cid for cid, _ in self.fulltext.search(terms.groups, depth)] if rag.mode != "dense" else []
        exact = self._exact_hits(terms.exact, depth) if rag.mode == "hybrid" else {}
        keywords = is_keyword_query(query)
        bm25_weight = rag.keyword_bm25_weight if keywords else rag.bm25_weight
        order = hybrid_order(dense, bm25, exact, rag.dense_weight, bm25_weight, rag.rrf_k)
        if rag.window_rerank and not keywords:  # typed words: the fused order
            from app.ingest.sentence_windows import best_window_scores

            best = best_window_scores(self.windows, self.docs, order[:rag.sentence_rerank], index.identity,
                                      embedder.embed, vec)
            if best is not None:
                order = rerank_by_windows(order, best, exact, rag.rrf_k)
        return self._passages(order[: k * 2 + 8], vec, cosine, set(exact))[:k]

    def _dense_ranking(self, index: VectorIndex, vec: np.ndarray,
                       depth: int) -> tuple[list[int], dict[int, float]]:
        """Chunk ids nearest the query vector, best first, with their cosine similarity."""
        scores, ids = index.search(vec, min(len(index), depth))
        found = [(int(cid), float(score)) for score, cid in zip(scores[0], ids[0]) if cid >= 0]
        return [cid for cid, _ in found], dict(found)

    def _exact_hits(self, terms: list[str], limit: int) -> dict[int, int]:
        """Chunks holding identifiers, codes or quoted phrases of the query exactly, and how many."""
        texts: dict[int, str] = {}
        for term in terms:
            texts.update(self.fulltext.containing(term_words(term), limit))
        return exact_counts(texts, terms)

    def _passages(self, order: list[int], vec: np.ndarray, cosine: dict[int, float],
                  exact: set[int]) -> list[Passage]:
        """The chunks of ``order`` that still exist, in that order, scored by cosine similarity
        (keyword-only hits are scored from their stored vectors)."""
        rows = self.docs.chunks(order)
        missing = [cid for cid in order if cid in rows and cid not in cosine]
        cosine = {**cosine, **{cid: float(v @ vec) for cid, v in self.docs.vectors_by_id(missing).items()}}
        return [Passage(chunk_id=row.id, document_id=row.document_id, path=row.path, page=row.page,
                        line_start=row.line_start, line_end=row.line_end, text=row.text,
                        score=cosine.get(row.id, 0.0), exact=row.id in exact)
                for row in (rows[cid] for cid in order if cid in rows)]

    def status(self) -> StatusReport:
        counts = self.docs.counts()
        progress = self.queue.progress()
        progress.paused = self.paused
        vectors, index_kind = self._index_size()
        return StatusReport(
            data_dir=str(self.paths.root), folders=self.folders.list(), documents=counts["documents"],
            indexed=counts["indexed"], errors=counts["error"], chunks=counts["chunks"],
            vectors=vectors, index_kind=index_kind, pending_jobs=self.queue.pending_count(),
            progress=progress, recent_errors=self.docs.errors(limit=20), sleep=self.sleep_status(),
        )

    def _index_size(self) -> tuple[int, str]:
        """Vectors and kind of the open index; when this process has not opened it, of the saved
        one by its sidecar, so a status loads neither faiss nor the embedder (whatever the saved
        index lacks is added back from the store the first time anything uses it)."""
        if self._index is not None:
            return len(self._index), self._index.kind
        saved = saved_index(self.paths.index)
        return (saved.count, saved.kind) if saved else (0, "flat")

    def run_pending(self, on_result=None, learn: bool = False) -> list[FileResult]:
        """Foreground: process every queued ingest job now (used by ``engram ingest``), and with
        ``learn`` the learn jobs too."""
        results: list[FileResult] = []
        previous = self.worker.on_result

        def collect(result: FileResult) -> None:
            results.append(result)
            if on_result:
                on_result(result)

        self.worker.on_result = collect
        try:
            self.worker.drain(kinds=[LEARN] if learn else None)
        finally:
            self.worker.on_result = previous
        return results

    # --- for the UI (ui/ calls these, never the store, queue or worker) ------------------------
    def watched_folders(self) -> list[WatchedFolder]:
        """Every watched folder, by path, with how many stored documents it holds."""
        return self.folders.watched()

    def watched_folder(self, path: Path | str) -> WatchedFolder | None:
        """The watched folder at ``path`` (made absolute); None when it is not watched."""
        wanted = os.path.abspath(path)
        return next((f for f in self.watched_folders() if f.path == wanted), None)

    def chat_model(self) -> ChatModel:
        """The model answering chat now, and whether it is loaded yet."""
        return ChatModel(backend=self.runtime.backend, model=self.runtime.model, loaded=self.runtime.loaded)

    def model_catalogue(self, ollama_timeout_s: float) -> ModelCatalogue:
        """Every model Engram could answer with now (Ollama's within the timeout), the answering
        one marked."""
        return model_catalogue(self.settings.effective_models_dir, self.settings.ollama_host,
                               self.chat_model(), ollama_timeout_s)

    def setting_names(self) -> list[str]:
        return setting_names()

    def setting(self, name: str) -> SettingRow:
        """One setting (any accepted spelling of its name) as this process runs with it; the
        config file is not read."""
        return setting_row(self.loaded, name)

    def setting_rows(self) -> list[SettingRow]:
        """Every setting, with the value the config file holds for the next start."""
        return setting_rows(self.loaded)

    def read_playbook_file(self, path: Path) -> PlaybookFile:
        """An uploaded playbook file, validated (``PlaybookFileError`` lists every problem)."""
        return read_playbook_file(path)

    def latest_learn_report(self) -> tuple[LearnBenchReport, Path | None] | None:
        """The newest learning bench report in the data folder, with its plot when there is one."""
        from app.bench.learn import latest_learn_report  # bench code (torch) loads on first use

        return latest_learn_report(self.paths.bench)

    @cached_property
    def bench_runs(self) -> BenchRuns:
        """Benches started from the app: each in its own process, one at a time, with history."""
        return BenchRuns(self.paths.bench, ["--config-dir", str(self.loaded.config_file.parent),
                                            "--data-dir", str(self.settings.data_dir)])

    # --- for the command line (app/cli calls these, never the store, queue or worker) ----------
    @property
    def paused(self) -> bool:
        """Whether background work is paused (the pause survives restarts)."""
        return is_paused(self.state)

    def job_progress(self) -> Progress:
        """How far the queued work is, and whether it is paused."""
        progress = self.queue.progress()
        progress.paused = self.paused
        return progress

    def pending_jobs(self, kind: str | None = None) -> int:
        """Jobs waiting or running (of one kind when given)."""
        return self.queue.pending_count(kind)

    def recover_jobs(self) -> int:
        """Put jobs a crash left running back in the queue; returns how many."""
        return self.queue.recover()

    def feedback_waiting(self) -> int:
        """Feedback events the playbook has not learned from yet."""
        return self.queue.pending_count(FEEDBACK)

    def reflect_now(self) -> int:
        """Learn now, in this thread, from the feedback still waiting; returns how many events."""
        waiting = self.feedback_waiting()
        if waiting:
            self.queue.recover()
            self.worker.drain(kinds=[FEEDBACK])
        return waiting

    def sleep(self, seconds: float | None = None,
              progress: Callable[[float, str], None] | None = None) -> list[ConsolidateReport]:
        """Sleep now, in this thread: each enabled engine consolidates for ``seconds`` (default
        sleep.seconds), recorded like a sleep job; one report per engine."""
        return run_sleep(self.db, self.engines, seconds or self.settings.sleep.seconds, "manual",
                         progress or (lambda _fraction, _message: None),
                         checkpoints=self.sleep_checkpoints, memory=self.consolidate_memory)

    def weights_history(self) -> WeightsHistory:
        """Documents learned into the weights and every sleep, over time (the Weights tab)."""
        from app.services.weights_history import weights_history

        return weights_history(self.db, [n for n, spec in registered().items() if spec.writes_weights])

    def memory_history(self) -> MemoryHistory:
        """The CLS engine's experts, routing, growth and pruning, sleep pressure and sleeps over
        time (the Memory tab); ``enabled`` False when cls is not among the engines."""
        from app.services.memory_history import memory_history

        enabled = "cls" in self.settings.engines
        return memory_history(self.db, enabled, self.settings.cls.sleep_pressure if enabled else None)

    def sleep_status(self) -> SleepStatus:
        """The last sleep, the pressure now and when the next one comes."""
        return self.sleeper.status()

    def conversation_list(self) -> list[ConversationRow]:
        return self.conversations.list()

    def conversation_messages(self, conversation_id: int) -> list[MessageRow]:
        """A conversation's questions and answers in order (KeyError when there is none)."""
        if self.conversations.get(conversation_id) is None:
            raise KeyError(f"no conversation with id {conversation_id}")
        return self.conversations.messages(conversation_id)

    def playbook_exists(self, name: str) -> bool:
        return self.playbooks.store.exists(name)
