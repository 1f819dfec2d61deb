"""Doc-to-LoRA: each document written into its own LoRA adapter by one hypernetwork pass.

- ``learn(document)``: the frozen neocortex reads the document (chunk by chunk), the trained
  hypernetwork (``models.hypernetwork``) turns its activations into a rank-r LoRA for the
  target modules of every adapted layer, and the adapter is saved in peft's format
  (``store.adapters``) with the document's router keys (its passages embedded, as TTT's are).
  An untrained hypernetwork refuses: ``engram d2l train`` (or a sleep) trains it first.
- ``contribute(query)``: names the learned state, so chat answers with the neocortex, whose
  router (this engine's ``route``) gives each answer row the adapters of the documents its
  question is close to (concatenated, closest first, up to ``budget`` ranks; each scaled by its
  route share). A question about nothing learned gets no adapter: the original model, exactly.
- ``consolidate(budget)``: meta-trains the hypernetwork on the stored documents in idle time.
- ``forget``: the document's adapter and keys leave.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from engines.base import (
    Budget,
    ConsolidateReport,
    Contribution,
    DocumentInput,
    Engine,
    EngineContext,
    LearnReport,
    Neocortex,
    Progress,
    Query,
    no_progress,
    routing_query,
)
from engines.d2l import persistence
from engines.d2l.config import D2LConfig
from engines.d2l.reading import (
    Adapter,
    adapted_layers,
    from_peft_weights,
    gguf_architecture,
    peft_config,
    peft_weights,
    target_modules,
)
from engines.d2l.training import (
    MetaTrainer,
    TrainingDocument,
    with_questions,
    write_adapter,
)
from engines.generation import LoraUse
from engines.ttt import route_keys
from models.delta_router import DeltaRouter
from models.hypernetwork import Hypernetwork, HyperShape, compose
from models.lora_hooks import LoRAHooks, batch_adapters
from store.adapters import AdapterStore
from store.blobs import BlobStore
from store.documents import DocumentStore
from store.lora_gguf import GGUF_NAME, write_lora_gguf

log = logging.getLogger(__name__)
NAME = "d2l"
SAVE_EVERY = 60.0  # seconds between saves of a meta-training run (and one at its end)
CURVE_EVERY = 10  # steps averaged into one point of the loss curve


class UntrainedHypernetwork(RuntimeError):
    """The hypernetwork has never been meta-trained: its adapters would be noise (or nothing)."""


class D2LEngine(Engine):
    name = NAME
    learns_documents = True
    writes_weights = True

    def __init__(self, context: EngineContext, config: D2LConfig | None = None) -> None:
        self.context = context
        self.config = config or D2LConfig()
        self.blobs = BlobStore(context.db, context.data_dir)
        self.store = AdapterStore(context.data_dir, NAME)
        self.router = DeltaRouter(self.config.route_low, self.config.route_high)
        self.adapters: dict[int, Adapter] = {}
        # Routed from the saved keys alone (no torch model): document -> the model its GGUF copy
        # was written for. Chat on llama.cpp then never loads the torch model to answer.
        self._keyed: dict[int, str] = {}
        self.autosave = True  # the bench turns it off: it throws its adapters away
        self._cortex: Neocortex | None = None
        self._hyper: Hypernetwork | None = None
        self._record: dict[str, Any] = persistence.record(None)
        self._opt_saved: dict[str, torch.Tensor] = {}
        self._hooks: dict[str, LoRAHooks] = {}
        self._adamw: torch.optim.Optimizer | None = None
        self._layer_ids: list[int] = []
        self._outer: Any = None  # a router set before ours (another engine's), kept in the chain
        self._checked_at = float("-inf")  # when the keys' embedder was last compared with today's
        self._setup = threading.RLock()
        self._keeping = threading.Lock()
        self._training = threading.Lock()

    # --- the model, the hooks, the hypernetwork -------------------------------------------------
    def cortex(self) -> Neocortex:
        """The neocortex with this engine's LoRA hooks and router installed, adapters loaded."""
        with self._setup:
            if self._cortex is None:
                if self.context.neocortex is None:
                    raise RuntimeError("the d2l engine needs a neocortex (a torch model) and the app gave none")
                cortex = self.context.neocortex()
                self._layer_ids = adapted_layers(cortex, self.config.layers)
                with cortex.lock:
                    cortex.model.requires_grad_(False)
                    self._hooks = {t: LoRAHooks(target_modules(cortex, self._layer_ids, t), self.config.scale)
                                   for t in self.config.targets}
                    for hooks in self._hooks.values():
                        hooks.install()
                    self._outer, cortex.router = cortex.router, self.route
                self._cortex = cortex
                with self._keeping:  # keys read without the model: read again with the adapters
                    if self._keyed:
                        self.router.clear()
                        self._keyed = {}
                self._load_adapters()
            return self._cortex

    def shape(self, cortex: Neocortex) -> HyperShape:
        cfg, mc = self.config, cortex.model.config
        sizes = {"down_proj": (mc.intermediate_size, mc.hidden_size), "up_proj": (mc.hidden_size, mc.intermediate_size),
                 "gate_proj": (mc.hidden_size, mc.intermediate_size)}
        return HyperShape(layers=len(self._layer_ids), hidden=mc.hidden_size,
                          modules=tuple((t, *sizes[t]) for t in cfg.targets), rank=cfg.rank,
                          latent_dim=cfg.latent_dim, heads=cfg.heads, blocks=cfg.blocks)

    def hypernetwork(self) -> Hypernetwork:
        """The hypernetwork as saved (a fresh, untrained one when none is)."""
        cortex = self.cortex()
        with self._setup:
            if self._hyper is None:
                hyper, self._record, self._opt_saved = persistence.load(self.blobs, self.shape(cortex),
                                                                        cortex.model_name)
                self._hyper = hyper.to(cortex.device).eval()
            return self._hyper

    @property
    def trained_steps(self) -> int:
        return int(self.training_record().get("steps", 0))

    def close(self) -> None:
        """Take the hooks out and give the router back (the bench reuses one model)."""
        with self._setup:
            if self._cortex is not None:
                with self._cortex.lock:
                    for hooks in self._hooks.values():
                        hooks.remove()
                    if self._cortex.router == self.route:
                        self._cortex.router = self._outer
                self._cortex, self._hooks = None, {}

    # --- learning ------------------------------------------------------------------------------
    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        """One forward pass of the hypernetwork over the document -> its adapter, saved."""
        started = time.perf_counter()
        hyper = self.hypernetwork()
        if self.trained_steps == 0:
            raise UntrainedHypernetwork(
                "the d2l hypernetwork has not been trained, so it cannot write adapters yet: run "
                "`engram d2l train --seconds 600` (or let a sleep train it) and learn again")
        cortex, cfg = self.cortex(), self.config
        text = document.text
        if not text.strip():
            return LearnReport(engine=self.name, path=document.path, seconds=0.0, changed=False)
        progress(0.1, "reading the document")
        with torch.no_grad(), cortex.lock:
            adapter, tokens = write_adapter(cortex, hyper, self._layer_ids, text, cfg.chunk_tokens,
                                            cfg.max_document_tokens)
        adapter = {t: (a.cpu(), b.cpu()) for t, (a, b) in adapter.items()}
        self.check_embedder()  # a model switched since: the others' keys first, so none are mixed
        keys = route_keys.embedded_keys(self.context.embed, text)
        with self._keeping:
            self.adapters[document.document_id] = adapter
            self.router.add(document.document_id, keys)
        self.gguf_path(document.document_id).unlink(missing_ok=True)  # written again from this adapter
        if self.autosave:
            self._save_adapter(document, adapter, keys)
        progress(1.0, "adapter written")
        return LearnReport(engine=self.name, path=document.path, seconds=time.perf_counter() - started,
                           changed=True, tokens=tokens,
                           details={"rank": cfg.rank, "layers": len(self._layer_ids),
                                    "hypernetwork_steps": self.trained_steps})

    def _save_adapter(self, document: DocumentInput, adapter: Adapter, keys: torch.Tensor) -> None:
        cortex, cfg = self.cortex(), self.config
        config = peft_config(cortex.model_name, cfg.rank, cfg.scale, cfg.targets, self._layer_ids)
        weights = peft_weights(adapter, self._layer_ids)
        folder = self.store.save(document.document_id, config, weights, keys,
                                 meta={"path": document.path, "hypernetwork_steps": self.trained_steps},
                                 probe=self.router.probe)
        write_lora_gguf(folder, weights, config, gguf_architecture(cortex))

    def gguf_path(self, document_id: int) -> Path:
        """The document adapter's llama.cpp copy (written beside peft's files)."""
        return self.store.folder(document_id) / GGUF_NAME

    def _gguf(self, document_id: int) -> Path | None:
        """The adapter's llama.cpp copy, written now from memory when missing (an adapter saved
        before copies existed, or the bench's, which saves nothing); None: no such adapter."""
        path = self.gguf_path(document_id)
        if path.is_file():
            return path
        with self._keeping:
            adapter = self.adapters.get(document_id)
        if adapter is None or self._cortex is None:
            return None
        cfg = self.config
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_lora_gguf(path.parent, peft_weights(adapter, self._layer_ids),
                               peft_config(self._cortex.model_name, cfg.rank, cfg.scale, cfg.targets, self._layer_ids),
                               gguf_architecture(self._cortex))

    def _load_adapters(self) -> None:
        """The saved adapters of documents still in the store (others are deleted)."""
        present = set(DocumentStore(self.context.db).ids_by_path().values())
        for document_id in self.store.documents():
            if document_id not in present:
                self.store.delete(document_id)
                continue
            saved = self.store.load(document_id)
            if saved is None:
                continue
            try:
                adapter = from_peft_weights(saved.weights, self._layer_ids, self.config.targets)
            except KeyError:
                log.warning("adapter of document %s does not fit the d2l settings: left unused", document_id)
                continue
            self.adapters[document_id] = adapter
            self.router.add(document_id, saved.keys)
            if saved.probe is not None:
                self.router.probe = saved.probe.float()
        self.check_embedder()

    def check_embedder(self) -> None:
        """Embed the router keys again when the embedding model is not the one that made them
        (a model switch): questions embedded by one model are never compared with another's keys."""
        self._checked_at = time.monotonic()
        current = route_keys.probe(self.context.embed)
        with self._keeping:
            if route_keys.matches(self.router, current):
                return
            documents = set(self.router.owners.tolist())
        log.warning("the d2l router's keys were made by another embedding model: embedding them again")
        fresh = route_keys.stored_keys(self.context.embed, DocumentStore(self.context.db), documents)
        with self._keeping:
            self.router.clear()
            for document_id, keys in fresh.items():
                self.router.add(document_id, keys)
            self.router.probe = current
        if self.autosave:
            for document_id, keys in fresh.items():
                self.store.save_keys(document_id, keys, current)

    # --- answering -----------------------------------------------------------------------------
    def contribute(self, query: Query) -> Contribution:
        """Names the learned state (chat then answers with the neocortex, or with the adapters'
        GGUF copies on llama.cpp) once there is one."""
        if not self.adapters and not self._keyed and self._cortex is None:  # keys are read once
            if not self.store.documents():
                return Contribution(engine=self.name)
            if not self._route_from_keys():
                self.cortex()
        if not self.learned_documents:
            return Contribution(engine=self.name)
        asked = routing_query([m.content for m in query.history if m.role == "user"] + [query.text])
        chosen = self.routed([asked])[0]
        uses = self.lora_uses(chosen)
        if chosen and not uses and self._cortex is None:  # only the torch model can answer this one
            self.cortex()
            chosen = self.routed([asked])[0]
            uses = self.lora_uses(chosen)
        note = (f"answered with the adapters of {len(chosen)} of {self.learned_documents} learned documents"
                if chosen else "no learned document is close to the question: the original model answered")
        return Contribution(engine=self.name, learned_states=[self.label], notes=[note], adapters=uses,
                            meta={"d2l_documents": [d for d, _ in chosen],
                                  "routed_share": round(chosen[0][1], 4) if chosen else 0.0})

    def _route_from_keys(self) -> bool:
        """Fill the router from the saved keys alone when llama.cpp answers with the GGUF copies:
        no torch model, no adapter weights in memory. False (the model is needed): another
        answer runtime, an adapter that does not fit today's settings or has no GGUF copy."""
        cfg = self.config
        if cfg.answer_runtime != "llamacpp":
            return False
        present = set(DocumentStore(self.context.db).ids_by_path().values())
        keyed: dict[int, tuple[torch.Tensor, str]] = {}
        probe = None
        for document_id in self.store.documents():
            if document_id not in present:
                return False  # the model's load deletes it
            saved = self.store.load_keys(document_id)
            if saved is None or not self.gguf_path(document_id).is_file():
                return False
            config, keys, found = saved
            if config.get("r") != cfg.rank or sorted(config.get("target_modules", [])) != sorted(cfg.targets):
                return False
            keyed[document_id] = (keys, str(config.get("base_model_name_or_path", "")))
            probe = found if found is not None else probe
        with self._setup, self._keeping:
            if self._cortex is not None or self.adapters or self._keyed:
                return True  # another thread got there first
            for document_id, (keys, _) in keyed.items():
                self.router.add(document_id, keys)
            if probe is not None:
                self.router.probe = probe.float()
            self._keyed = {d: model for d, (_, model) in keyed.items()}
        self.check_embedder()
        return bool(keyed)

    @property
    def learned_documents(self) -> int:
        """Documents with an adapter: loaded, or routed from their keys alone."""
        return len(self.adapters) or len(self._keyed)

    def lora_uses(self, chosen: list[tuple[int, float]]) -> list[LoraUse]:
        """The chosen documents' GGUF copies at their route shares, within the rank budget, for
        a llama.cpp chat runtime (none: the torch model answers, as with ``answer_runtime`` torch)."""
        if self.config.answer_runtime != "llamacpp":
            return []
        most = max(1, self.config.budget // self.config.rank)  # as compose keeps them: closest first
        if self._cortex is None:
            with self._keeping:
                keyed = dict(self._keyed)
            found = [(self.gguf_path(d), share, keyed.get(d)) for d, share in chosen[:most]]
            if any(model is None or not path.is_file() for path, _, model in found):
                return []
            return [LoraUse(path=str(path), scale=round(share, 4), base_model=str(model))
                    for path, share, model in found]
        paths = [(self._gguf(d), share) for d, share in chosen[:most]]
        if any(path is None for path, _ in paths):
            return []
        return [LoraUse(path=str(path), scale=round(share, 4), base_model=self._cortex.model_name)
                for path, share in paths]

    @property
    def label(self) -> str:
        return f"d2l: {self.learned_documents} document adapters"

    def routed(self, queries: Sequence[str]) -> list[list[tuple[int, float]]]:
        """Per query, the (document, share) pairs whose adapters it gets, closest first."""
        if time.monotonic() - self._checked_at > route_keys.RECHECK_S:  # a model switch swaps the embedder
            self.check_embedder()
        with self._keeping:
            keys, owners = self.router.keys, self.router.owners
        if not len(owners):
            return [[] for _ in queries]
        q = torch.from_numpy(self.context.embed(list(queries))).float()
        sims = q @ keys.float().t()  # [B, N]
        docs = torch.unique(owners)
        best = torch.stack([sims[:, owners == d].max(1).values for d in docs], dim=1)  # [B, D]
        shares = self.router.shares_at(best)
        out = []
        for row in shares:
            order = torch.argsort(row, descending=True)
            out.append([(int(docs[i]), float(row[i])) for i in order if row[i] > 0])
        return out

    def _row_adapter(self, chosen: list[tuple[int, float]]) -> Adapter | None:
        out: Adapter = {}
        for target in self.config.targets:
            parts = [(self.adapters[d][target][0], self.adapters[d][target][1] * share)
                     for d, share in chosen if d in self.adapters]
            both = compose(parts, self.config.budget)
            if both is None:
                return None
            out[target] = both
        return out

    @contextmanager
    def route(self, queries: Sequence[str]) -> Iterator[None]:
        """The cortex's router: row b of the next batches gets the adapters ``queries[b]`` is
        routed to (none: the original model). Enter it holding the cortex lock."""
        with ExitStack() as stack:
            if self._outer is not None:
                stack.enter_context(self._outer(queries))
            rows = [self._row_adapter(c) for c in self.routed(queries)] if self.adapters else []
            for target, hooks in self._hooks.items():
                batch = batch_adapters([None if r is None else r[target] for r in rows]) if rows else None
                stack.enter_context(hooks.active(*(batch or (None, None))))
            yield

    # --- forgetting, state ---------------------------------------------------------------------
    def forget(self, document_id: int) -> None:
        self.forget_many([document_id])

    def forget_many(self, document_ids: list[int]) -> None:
        """The documents' adapters and router keys leave (memory and disk)."""
        with self._keeping:
            for document_id in document_ids:
                self.adapters.pop(document_id, None)
                self._keyed.pop(document_id, None)
            self.router.drop(set(document_ids))
        for document_id in document_ids:
            self.store.delete(document_id)

    def reset(self) -> None:
        """Every adapter leaves (the hypernetwork stays trained)."""
        with self._keeping:
            gone = list(self.adapters)
            self.adapters.clear()
            self._keyed = {}
            self.router.clear()
        if self.autosave:
            for document_id in gone + self.store.documents():
                self.store.delete(document_id)

    def state_dict(self) -> dict[str, Any]:
        with self._keeping:
            state: dict[str, Any] = {"d2l.documents": sorted(self.adapters)}
            for d, adapter in self.adapters.items():
                for target, (a, b) in adapter.items():
                    state[f"adapter.{d}.{target}.A"], state[f"adapter.{d}.{target}.B"] = a, b
            router = self.router.state()
        state["router.keys"], state["router.owners"] = router["keys"], router["owners"]
        if "probe" in router:
            state["router.probe"] = router["probe"]
        return state

    def load_state_dict(self, state: dict[str, Any], origin: str | None = None) -> None:
        """Make ``state``'s adapters the learned ones (checked first: a mismatch changes nothing)."""
        self.cortex()
        documents = [int(d) for d in state.get("d2l.documents", [])]
        try:
            adapters = {d: {t: (state[f"adapter.{d}.{t}.A"].float(), state[f"adapter.{d}.{t}.B"].float())
                            for t in self.config.targets} for d in documents}
        except KeyError as exc:
            raise ValueError(f"not a d2l state for these settings (missing {exc})") from None
        router = DeltaRouter(self.config.route_low, self.config.route_high)
        router.load({"keys": state.get("router.keys"), "owners": state.get("router.owners"),
                     "probe": state.get("router.probe")})
        with self._keeping:
            self.adapters, self.router = adapters, router
        for document_id in adapters:  # llama.cpp copies of what was there before: written again
            self.gguf_path(document_id).unlink(missing_ok=True)
        self.check_embedder()

    def stats(self) -> dict[str, Any]:
        hyper = self.training_record()  # the saved one until the model loads (was: steps 0)
        return {"documents": len(self.adapters) if self._cortex is not None else len(self.store.documents()),
                "loaded": self._cortex is not None, "rank": self.config.rank, "targets": self.config.targets,
                "layers": self._layer_ids, "router_keys": len(self.router),
                "hypernetwork_steps": int(hyper.get("steps", 0)),
                "hypernetwork_seconds": float(hyper.get("seconds", 0.0)),
                "hypernetwork_loss": hyper["curve"][-1][1] if hyper.get("curve") else None,
                "hypernetwork_sources": list(hyper.get("sources", []))}

    def training_record(self) -> dict[str, Any]:
        """The hypernetwork's training record: steps, seconds, loss curve and what it was trained
        on (the one in memory once the hypernetwork is loaded, else the saved one: no model load)."""
        if self._hyper is None:
            return persistence.saved_record(self.blobs)
        found = self._record
        return persistence.record({**found, "curve": list(found["curve"]), "sources": list(found.get("sources", []))})

    # --- a bundle import ----------------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[None]:
        """No model load, meta-training or learning step starts while a bundle import puts a
        saved state in place (a running meta-training finishes its save first)."""
        with self._setup, self._training:
            yield

    def saved_shape(self) -> dict[str, Any] | None:
        """This engine's hypernetwork shape when its model is loaded (None: not loaded)."""
        with self._setup:
            return None if self._cortex is None else persistence.shape_json(self.shape(self._cortex))

    def reload_saved(self) -> None:
        """Forget the hypernetwork, optimizer and adapters held in memory and read the saved ones
        again (after a bundle import wrote them; call inside ``held``)."""
        with self._setup:
            self._hyper, self._adamw, self._opt_saved = None, None, {}
            self._record = persistence.record(None)
            with self._keeping:
                self.adapters, self._keyed = {}, {}
                self.router = DeltaRouter(self.config.route_low, self.config.route_high)
            if self._cortex is not None:
                self._load_adapters()
                self.hypernetwork()

    # --- meta-training -------------------------------------------------------------------------
    def stored_documents(self) -> list[TrainingDocument]:
        """The person's stored documents, with the extractors' questions (for meta-training)."""
        store = DocumentStore(self.context.db)
        texts = ["\n\n".join(store.chunk_texts(d)) for d in sorted(store.ids_by_path().values())]
        return [with_questions(t) for t in texts if t.strip()]

    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        """Sleep: meta-train the hypernetwork on the stored documents within the budget."""
        seconds = min(budget.seconds, self.config.sleep_seconds)
        documents = self.stored_documents() if seconds > 0 else []
        if not any(d.pairs for d in documents):
            return ConsolidateReport(engine=self.name, seconds=0.0, changed=False,
                                     details={"skipped": "no stored document with questions to train on"})
        budget.started()
        found = self.meta_train(documents, Budget(seconds=seconds, steps=budget.steps, stop=budget.stop),
                                persistence.STORED_SOURCE, progress)
        return ConsolidateReport(engine=self.name, seconds=found["seconds"], changed=found["steps"] > 0,
                                 details={**found, "interrupted": budget.interrupted()})

    def meta_train(self, documents: list[TrainingDocument], budget: Budget, source: str,
                   progress: Progress = no_progress) -> dict[str, Any]:
        """Context distillation (``engines.d2l.training``) until the budget ends; resumes from
        the saved step and saves every ``SAVE_EVERY`` seconds and at the end. Returns what ran."""
        with self._training:
            cortex, cfg = self.cortex(), self.config
            hyper = self.hypernetwork()
            trainer = MetaTrainer(cortex, hyper, self._layer_ids, self._hooks, documents, cfg.teacher_top_k,
                                  cfg.questions_per_step, cfg.chunk_tokens, cfg.max_document_tokens, cfg.seed)
            optimizer = self._optimizer(hyper)
            record = self._record
            record["sources"] = list(dict.fromkeys([*record.get("sources", []), source]))
            record["model"] = cortex.model_name
            start_step, began = int(record["steps"]), time.perf_counter()
            started = saved_at = began  # started: since the last save, for the record's seconds
            window: list[float] = []
            hyper.train()
            try:
                while not self._spent(budget, began, int(record["steps"]) - start_step):
                    loss = self._step(cortex, trainer, optimizer, int(record["steps"]))
                    record["steps"] += 1
                    if loss is not None:
                        window.append(loss)
                    if len(window) >= CURVE_EVERY:
                        record["curve"].append([record["steps"], sum(window) / len(window)])
                        window = []
                    elapsed = time.perf_counter() - began
                    shown = "n/a" if loss is None else f"{loss:.3f}"
                    progress(min(1.0, elapsed / budget.seconds), f"step {record['steps']}, distillation loss {shown}")
                    if time.perf_counter() - saved_at > SAVE_EVERY:
                        self._save_hyper(hyper, optimizer, record, started)
                        started, saved_at = time.perf_counter(), time.perf_counter()
            finally:
                hyper.eval()
                if window:
                    record["curve"].append([record["steps"], sum(window) / len(window)])
                self._save_hyper(hyper, optimizer, record, started)
            return {"steps": int(record["steps"]) - start_step, "total_steps": int(record["steps"]),
                    "seconds": time.perf_counter() - began, "trained_seconds": float(record["seconds"]),
                    "documents": len(trainer.documents),
                    "source": source, "loss_last": record["curve"][-1][1] if record["curve"] else None}

    def _spent(self, budget: Budget, started: float, steps: int) -> bool:
        return (time.perf_counter() - started >= budget.seconds or budget.interrupted()
                or (budget.steps is not None and steps >= budget.steps))

    def _step(self, cortex: Neocortex, trainer: MetaTrainer, optimizer: torch.optim.Optimizer,
              step: int) -> float | None:
        with cortex.lock:  # an answer never runs with the training adapter set
            loss = trainer.loss(step)
            if loss is None:
                return None
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.hyper.parameters(), self.config.max_grad_norm)
        optimizer.step()
        return float(loss.detach())

    def _save_hyper(self, hyper: Hypernetwork, optimizer: torch.optim.Optimizer, record: dict[str, Any],
                    started: float) -> None:
        record["seconds"] = float(record.get("seconds", 0.0)) + time.perf_counter() - started
        persistence.save(self.blobs, hyper, optimizer, record)

    def _optimizer(self, hyper: Hypernetwork) -> torch.optim.Optimizer:
        """AdamW over the hypernetwork, its moments restored from the last save once."""
        if self._adamw is None:
            self._adamw = torch.optim.AdamW(hyper.parameters(), lr=self.config.lr, weight_decay=0.0)
            persistence.restore_optimizer(self._adamw, self._opt_saved)
            self._opt_saved = {}
        return self._adamw
