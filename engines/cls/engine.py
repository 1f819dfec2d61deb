"""CLS: complementary learning systems over the neocortex (McClelland, McNaughton & O'Reilly 1995).

- **By day** (``learn``): a document is routed by its passages' embeddings to the expert whose
  keys are closest. Nothing close (novelty above ``novelty``): the pool grows, the new expert a
  clone of the nearest one. Only that expert trains (LoRA over the MLP projections of the last
  quarter of layers, ``models.lora_experts``), on the document's windows and the question/answer
  rehearsal TTT uses (``engines.ttt.material``), with its own earlier episodes replayed shuffled
  and background prose beside each batch. The episodes go into the store's replay buffer.
- **Answers** (``route``, the neocortex's router): a question gets its routed experts and the
  consolidated adapter (for experts a sleep refreshed) as far as it is close to an expert's keys (TTT's bounds), so a question
  about nothing learned is answered by the base model exactly. ``cls.router`` picks the experts:
  the nearest key's owner, or a learned gate (softmax, k-WTA: ``engines.cls.gating``) that each
  sleep trains on the replay buffer; keys answer until it is trained.
- **By night** (``consolidate``): the buffer is replayed shuffled; the consolidated adapter learns
  to answer each episode as its expert does (KL distillation, ``models.consolidation``) under an
  EWC penalty whose Fisher comes from background prose (``models.ewc``). A probe measures
  background perplexity drift and background answers lost; past either bound the sleep is rolled
  back and the reason logged. Kept: each expert it covered whose rehearsal answers the adapter
  alone gets as well is refreshed (``B`` zeroed, keys kept, answered and trained on top of the
  adapter from then on) and counts as consolidated, the first to be recycled when the pool is
  full; an expert not refreshed answers alone, as before the sleep. Experts unused for
  ``prune_unused_days`` are recycled.

Experts are saved one blob each (``cls/expert-N``) and loaded when first routed to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel

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
from engines.cls import lm
from engines.cls.config import CLSConfig
from engines.cls.gating import PREFIX as GATE, LearnedGate
from engines.ttt import rehearsal, route_keys
from engines.ttt.config import TTTConfig
from engines.ttt.material import document_material
from engines.ttt.trainer import Piece, chat_piece, text_pieces
from models.consolidation import adam_tensors, distill, kl_to_teacher, load_adam_tensors
from models.ewc import EWC, fisher_diagonal
from models.expert_router import KeyRouter
from models.lora_experts import ExpertPool
from store.blobs import BlobStore
from store.cls_episodes import ClsEpisodeStore, Episode
from store.documents import DocumentStore
from store.metrics_log import MetricsLog
from store.sleep_pressure import PressureReading, SleepPressureLog

log = logging.getLogger(__name__)
NAME = "cls"
INDEX = "cls/index"
RESUME = "cls/sleep-resume"  # a sleep cut short: its adapter so far, resumed by the next sleep
PROBE_QUESTIONS = 16  # background questions the forgetting probe asks


MIN_GATE_WEIGHT = 1e-3  # a learned gate's expert weighing less than this is not run
ROUTER_NAMES = {"keys": "keys", "softmax": "softmax gate", "kwta": "k-WTA gate", "none": "none"}


@dataclass
class Routing:
    """Queries routed: ``weights`` [B, len(slots)] (each row sums to its share), ``share`` [B],
    ``by`` the router that answered each row (keys, softmax, kwta; none: no expert is close),
    ``fallback`` why the learned gate asked for did not answer (None when it did or is not asked for)."""

    slots: list[int]
    weights: torch.Tensor
    share: torch.Tensor
    by: list[str]
    fallback: str | None
    consolidated: torch.Tensor  # [rows] share of the consolidated adapter


class ExpertInfo(BaseModel):
    documents: list[int] = []
    created: float = 0.0
    last_used: float = 0.0
    uses: int = 0
    consolidated: bool = False
    layered: bool = False  # refreshed once: it learns and answers on top of the consolidated adapter


def matches(expert: Sequence[bool], adapter: Sequence[bool]) -> bool:
    """Whether the consolidated adapter can stand in for an expert: it gets right every rehearsal
    answer the expert gets right (teacher-forced), and the expert gets at least one."""
    return any(expert) and all(a for e, a in zip(expert, adapter, strict=True) if e)


class CLSEngine(Engine):
    name = NAME
    learns_documents = True
    writes_weights = True
    sleeps_by_pressure = True

    def __init__(self, context: EngineContext, config: CLSConfig | None = None) -> None:
        self.context = context
        self.config = config or CLSConfig()
        self.blobs = BlobStore(context.db, context.data_dir)
        self.episodes = ClsEpisodeStore(context.db)
        self.metrics = context.metrics or MetricsLog(context.data_dir)
        self.pressure_log = SleepPressureLog(context.db)
        self.autosave = True
        self.training = threading.Lock()
        self.setup = threading.Lock()
        self._cortex: Neocortex | None = None
        self.pool: ExpertPool | None = None
        self.keys = KeyRouter()
        self.gate_state: dict[str, torch.Tensor] | None = None  # the learned gate's tensors (a sleep trains it)
        self._gate_cache: tuple[tuple[str, int], LearnedGate | None] | None = None
        self.experts: dict[int, ExpertInfo] = {}
        self.documents = 0
        self.sleeps = 0
        self._background: list[int] | None = None
        self.origin: str | None = None  # the checkpoint the learned state came from
        self._checked_at = float("-inf")  # when the keys' embedder was last compared with today's

    # --- the model ------------------------------------------------------------------------------
    def cortex(self) -> Neocortex:
        with self.setup:
            if self._cortex is None:
                if self.context.neocortex is None:
                    raise RuntimeError("the cls engine needs a neocortex (a torch model) and the app gave none")
                cortex = self.context.neocortex()
                saved = self.blobs.get(INDEX)
                with cortex.lock:
                    self.pool = lm.install(cortex.model, self.config, saved)
                    cortex.router = self.route
                self._cortex = cortex
                if saved is not None:
                    self._apply_index(saved)
            return self._cortex

    def load_weights(self) -> None:
        self.cortex()

    def close(self) -> None:
        """Put the original layers back (the bench reuses one model for several runs)."""
        with self.setup:
            if self._cortex is not None and self.pool is not None:
                with self._cortex.lock:
                    self.pool.uninstall(self._cortex.model)
                    if self._cortex.router == self.route:
                        self._cortex.router = None
            self._cortex, self.pool = None, None

    def _loaded(self, slot: int) -> None:
        """Bring an expert into memory from its blob (lazily: only when routed to or trained)."""
        assert self.pool is not None
        if slot not in self.pool.slots():
            state = self.blobs.get(f"cls/expert-{slot}")
            if state is None:
                raise RuntimeError(f"expert {slot} has no saved weights")
            self.pool.load(slot, {k: v for k, v in state.items() if isinstance(v, torch.Tensor)})

    # --- answers --------------------------------------------------------------------------------
    def routing(self, queries: Sequence[str]) -> Routing:
        """Which experts each query goes to, and how much of the learned weights it gets.

        The share comes from the keys (TTT's bounds on the best cosine), whatever the router: a
        query about nothing learned gets the base model exactly. Within that share, ``cls.router``
        picks the experts: keys (the nearest key's owner) or a learned gate (softmax: a mixture;
        kwta: the ``gate_k`` best). A gate not trained yet, or a query whose nearest key belongs to
        an expert grown since the gate was trained, goes by keys (``fallback`` says why)."""
        if time.monotonic() - self._checked_at > route_keys.RECHECK_S:  # a model switch swaps the embedder
            self.check_embedder()
        rows = len(queries)
        if not self.experts or self.keys.owners.numel() == 0:
            return Routing([], torch.zeros(rows, 0), torch.zeros(rows), ["none"] * rows, None, torch.zeros(rows))
        x = torch.from_numpy(self.context.embed(list(queries)))
        cos, owner = self.keys.best(x)
        low, high = self.config.route_low, self.config.route_high
        share = ((cos - low) / (high - low)).clamp(0.0, 1.0)
        gate, fallback = self._usable_gate()
        mixed = gate.weights(x, set(self.experts)) if gate is not None else None
        columns: dict[int, torch.Tensor] = {}
        by: list[str] = []
        for row in range(rows):
            if float(share[row]) <= 0.0:
                by.append("none")
            elif gate is not None and mixed is not None and int(owner[row]) in gate.slots:
                for column, slot in enumerate(gate.slots):
                    w = float(mixed[row, column])
                    if w >= MIN_GATE_WEIGHT:  # the rest would add under 0.1%: not run
                        columns.setdefault(slot, torch.zeros(rows))[row] = w * share[row]
                by.append(gate.kind)
            else:
                columns.setdefault(int(owner[row]), torch.zeros(rows))[row] = share[row]
                by.append("keys")
        slots = sorted(columns)
        weights = torch.stack([columns[s] for s in slots], dim=1) if slots else torch.zeros(rows, 0)
        layered = sum((columns[s] for s in slots if self._layered(s)), torch.zeros(rows))
        return Routing(slots, weights, share, by, fallback, layered * self.config.consolidated_share)

    def _layered(self, slot: int) -> bool:
        """Whether ``slot`` learned on top of the consolidated adapter (it was refreshed once), so
        it answers with it; an expert that never was learned and answers alone (the adapter may hold
        part of what it learned: adding both would count that twice)."""
        info = self.experts.get(slot)
        return info is not None and info.layered

    def _adapter_share(self, slot: int) -> float:
        """How much of the consolidated adapter runs beside ``slot`` when it alone is routed to."""
        return self.config.consolidated_share if self._layered(slot) else 0.0

    def _usable_gate(self) -> tuple[LearnedGate | None, str | None]:
        """The learned gate ``cls.router`` asks for, when it can answer; else None and why."""
        kind = self.config.router
        if kind == "keys":
            return None, None
        if self.gate_state is None:
            return None, f"the {kind} gate is not trained yet (two experts and a sleep): keys answered"
        cached = self._gate_cache
        if cached is None or cached[0] != (kind, self.config.gate_k):
            gate = LearnedGate.from_state(kind, self.config.gate_k, self.gate_state)
            cached = self._gate_cache = ((kind, self.config.gate_k), gate)
        gate = cached[1]
        if gate is None or len(gate.covers(set(self.experts))) < 2:
            return None, f"the {kind} gate covers fewer than two experts still here: keys answered"
        return gate, None

    @contextmanager
    def route(self, queries: Sequence[str]) -> Iterator[None]:
        """Row ``b`` answers with its routed experts and the consolidated adapter, by its share
        (the neocortex's router; entered holding the cortex lock). Only routed experts are
        loaded and run."""
        if self.pool is None:
            yield
            return
        found = self.routing(queries)
        now = time.time()
        for slot in found.slots:
            self._loaded(slot)
            info = self.experts[slot]
            info.last_used, info.uses = now, info.uses + 1
        with self.pool.routing(found.weights, found.slots, consolidated=found.consolidated):
            yield

    def contribute(self, query: Query) -> Contribution:
        if not self.experts and self._cortex is None:
            saved = self.blobs.meta(INDEX)
            if not saved or not saved.get("experts"):
                return Contribution(engine=self.name)
            self.cortex()
        if not self.experts:
            return Contribution(engine=self.name)
        asked = routing_query([m.content for m in query.history if m.role == "user"] + [query.text])
        found = self.routing([asked])
        share = float(found.share[0])
        routed = {"routed_share": round(share, 4),  # the meta-controller decides from it
                  "router": found.by[0]}  # which router answered: keys, softmax, kwta (none: no expert)
        if share <= 0.0:
            return Contribution(engine=self.name, learned_states=[self.label], meta=routed,
                                system=self.config.rehearsal_system,
                                notes=["no expert is close: the base model answers"])
        parts = [(slot, float(w)) for slot, w in zip(found.slots, found.weights[0].tolist()) if w > 0]
        experts = ", ".join(f"expert {slot} at {w:.0%}" for slot, w in sorted(parts, key=lambda p: -p[1]))
        notes = [f"answered with {experts} (router: {ROUTER_NAMES[found.by[0]]})"]
        if found.fallback and found.by[0] == "keys":
            notes.append(found.fallback)
        return Contribution(engine=self.name, learned_states=[self.label], meta=routed, notes=notes,
                            system=self.config.rehearsal_system)

    @property
    def label(self) -> str:
        return f"cls: {len(self.experts)} experts, {self.documents} documents, {self.sleeps} sleeps"

    # --- by day ---------------------------------------------------------------------------------
    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        with self.training:
            return self._learn(document, progress)

    def _learn(self, document: DocumentInput, progress: Progress) -> LearnReport:
        started = time.perf_counter()
        cortex, cfg = self.cortex(), self.config
        assert self.pool is not None
        progress(0.0, "preparing the material")
        ttt = TTTConfig(rehearsal_source=cfg.rehearsal_source, batch_tokens=cfg.batch_tokens,
                        max_document_tokens=cfg.max_document_tokens, rehearsal_system=cfg.rehearsal_system)
        material = document_material(cortex, document, ttt, self.context.generator)
        if not material.pieces:
            return LearnReport(engine=NAME, path=document.path, seconds=0.0, changed=False)
        self.check_embedder()  # a model switched since: the experts' keys first, so none are mixed
        keys = route_keys.embedded_keys(self.context.embed, material.text)
        slot, event, routing, parent = self._slot_for(keys)
        if parent is not None:
            progress(0.02, f"distilling the new expert {slot} from expert {parent}")
            routing.update(self._distill_clone(cortex, parent, slot, material.text, document.document_id))
            if routing["distill_steps"]:
                event = (event[0], f"{event[1]}, distilled {routing['distill_steps']} steps "
                                   f"(KL to it {routing['kl_before']:.3g} -> {routing['kl_after']:.3g})")
        own = self._episode_pieces(cortex, self.episodes.shuffled(self.documents, slot, cfg.own_replay))
        pad = cortex.tokenizer.pad_token_id or 0
        batches = lm.batches(material.pieces + own, cfg, pad, cortex.device, self._replay(cortex, 8))
        params = self.pool.parameters(slot)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        first = last = float("nan")
        steps = cfg.passes * len(batches)
        for n in range(steps):
            batch = batches[n % len(batches)]
            with cortex.lock, self._only(slot, batch["input_ids"].shape[0]):
                opt.zero_grad()
                loss = lm.lm_loss(cortex.model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            last = float(loss.detach())
            first = last if n == 0 else first
            self.metrics.append({"engine": NAME, "phase": "learn", "step": n + 1, "loss": last, "expert": slot,
                                 "document_id": document.document_id})
            progress(0.05 + 0.9 * (n + 1) / steps, f"step {n + 1}/{steps} loss {last:.3f}")
        self.keys.add(slot, keys)
        info = self.experts[slot]
        info.documents.append(document.document_id)
        info.consolidated = False
        info.last_used = time.time()
        passages = route_keys.passages(material.text)
        self.episodes.add(slot, document.document_id,
                          [("qa", qa.question, qa.answer) for qa in material.pairs]
                          + [("passage", p, "") for p in passages])
        self.episodes.log(event[0], event[1], slot, {"document_id": document.document_id, **routing})
        self.documents += 1
        if self.autosave:
            self.save()
        self.record_pressure()
        seconds = time.perf_counter() - started
        return LearnReport(engine=NAME, path=document.path, seconds=seconds, changed=True, tokens=material.tokens,
                           details={"steps": steps, "loss_first_pass": first, "loss_last_pass": last,
                                    "expert": slot, "event": event[0], "reason": event[1], **routing,
                                    "experts": len(self.experts), "replayed_episodes": len(own),
                                    "tokens_per_second": material.tokens / seconds if seconds else 0.0})

    @contextmanager
    def _only(self, slot: int, rows: int) -> Iterator[None]:
        """Every row routed to ``slot`` alone (with the consolidated adapter as it answers)."""
        assert self.pool is not None
        with self.pool.routing(torch.ones(rows, 1), [slot], consolidated=self._adapter_share(slot)):
            yield

    def _slot_for(self, keys: torch.Tensor) -> tuple[int, tuple[str, str], dict[str, Any], int | None]:
        """The expert a document trains: its nearest, or a new one when nothing is close or its
        passages spread over many experts; with the routing figures the event log keeps (novelty:
        mean 1 - best cosine of its passages, 1 when there is no expert yet; gate entropy over their
        nearest experts) and, for a grown clone, the expert it was cloned from."""
        assert self.pool is not None
        cfg = self.config
        if not (self.experts and self.keys.owners.numel()):
            slot = self._free_slot()
            self.pool.add(slot)
            self.experts[slot] = ExpertInfo(created=time.time())
            return slot, ("grow", "the first expert"), {"novelty": 1.0, "gate_entropy": 0.0}, None
        cos, owner = self.keys.best(keys)
        novelty, entropy = float((1.0 - cos).mean()), self.keys.entropy(keys)
        routing: dict[str, Any] = {"novelty": round(novelty, 4), "gate_entropy": round(entropy, 4)}
        nearest = int(owner.mode().values)
        self._loaded(nearest)
        why = self._growth_reasons(novelty, entropy)
        if why and cfg.max_experts == 1:  # nothing to recycle but the one expert itself
            return nearest, ("route", f"{', '.join(why)}, but the pool holds one expert: expert {nearest}"), routing, None
        if not why:
            chosen, by = self._document_expert(keys, nearest)
            routing["router"] = by
            self._loaded(chosen)
            return chosen, ("route", f"novelty {novelty:.2f} <= {cfg.novelty}, gate entropy {entropy:.2f} <= "
                                     f"{cfg.gate_entropy}: expert {chosen} ({ROUTER_NAMES[by]})"), routing, None
        slot = self._free_slot(keep=nearest)
        self.pool.clone(nearest, slot, cfg.clone_noise, seed=slot)
        self.experts[slot] = ExpertInfo(created=time.time(), layered=self._layered(nearest))
        routing["grown_by"] = "novelty" if why[0].startswith("novelty") else "gate_entropy"
        return slot, ("grow", f"{', '.join(why)}: cloned from expert {nearest}"), routing, nearest

    def _document_expert(self, keys: torch.Tensor, nearest: int) -> tuple[int, str]:
        """The expert a document that grows none trains: under a learned gate that knows its
        nearest expert, the one the gate weighs most over its passages; else the nearest (keys)."""
        gate, _ = self._usable_gate()
        if gate is None or nearest not in gate.slots:
            return nearest, "keys"
        mean = gate.weights(keys, set(self.experts)).mean(dim=0)
        return gate.slots[int(mean.argmax())], gate.kind

    def _train_gate(self, seed: int) -> dict[str, Any]:
        """The learned gate ``cls.router`` asks for, trained on the replay buffer's (embedding of
        an episode's prompt, its expert) pairs; figures for the sleep's log."""
        if self.config.router == "keys":
            return {"trained": False, "reason": "router is keys"}
        started = time.perf_counter()
        pairs = [e for e in self.episodes.shuffled(seed, limit=None) if e.slot in self.experts]
        pairs = pairs[:self.config.gate_examples]
        if len({e.slot for e in pairs}) < 2:
            return {"trained": False, "reason": "fewer than two experts in the replay buffer: keys answer"}
        x = torch.from_numpy(self.context.embed([e.prompt for e in pairs]))
        gate, fit = LearnedGate.fit(self.config.router, self.config.gate_k, x,
                                    torch.tensor([e.slot for e in pairs]), seed)
        self.gate_state, self._gate_cache = gate.state(), None
        self.metrics.append({"engine": NAME, "phase": "gate", "step": 1, "loss": fit["loss"],
                             "accuracy": fit["accuracy"], "experts": len(gate.slots), "examples": len(pairs)})
        return {"trained": True, "kind": self.config.router, "experts": gate.slots, "examples": len(pairs),
                **fit, "seconds": round(time.perf_counter() - started, 3)}

    def _growth_reasons(self, novelty: float, entropy: float) -> list[str]:
        """Why a document grows a new expert: no expert's keys are close (novelty), or its
        passages' nearest experts spread too widely for one to cover it (gate entropy)."""
        cfg, found = self.config, []
        if novelty > cfg.novelty:
            found.append(f"novelty {novelty:.2f} > {cfg.novelty}")
        if entropy > cfg.gate_entropy:
            found.append(f"gate entropy {entropy:.2f} > {cfg.gate_entropy}")
        return found

    def _distill_clone(self, cortex: Neocortex, parent: int, slot: int, text: str, document_id: int
                       ) -> dict[str, Any]:
        """The grown expert made faithful to its parent on the new material: KL(parent || clone)
        on the document's text, for ``clone_distill_steps`` Adam steps within
        ``clone_distill_seconds``; the KL is measured on the same batches before and after."""
        assert self.pool is not None
        cfg = self.config
        pad = cortex.tokenizer.pad_token_id or 0
        window = max(16, cfg.batch_tokens // 2)
        data = lm.batches(text_pieces(cortex.tokenizer, text, window, "document"), cfg, pad, cortex.device)
        data = data[:max(1, cfg.clone_distill_steps)]
        if not data or cfg.clone_distill_steps == 0:
            return {"distill_steps": 0}
        started = time.perf_counter()
        with cortex.lock:
            teachers = []
            for batch in data:
                with torch.no_grad(), self._only(parent, batch["input_ids"].shape[0]):
                    teachers.append(lm.logits(cortex.model, batch))
            def kl(n: int) -> torch.Tensor:
                batch = data[n]
                with self._only(slot, batch["input_ids"].shape[0]):
                    return kl_to_teacher(lm.logits(cortex.model, batch), teachers[n], lm.label_mask(batch))

            def mean_kl() -> float:
                with torch.no_grad():
                    return sum(float(kl(n)) for n in range(len(data))) / len(data)

            before = mean_kl()
            steps = [0]

            def step_loss(n: object) -> torch.Tensor:
                value = kl(int(n))  # type: ignore[call-overload]
                steps[0] += 1
                self.metrics.append({"engine": NAME, "phase": "clone", "step": steps[0], "kl": float(value.detach()),
                                     "expert": slot, "parent": parent, "document_id": document_id})
                return value

            deadline = started + cfg.clone_distill_seconds
            order = [n % len(data) for n in range(cfg.clone_distill_steps)]
            report = distill(self.pool.parameters(slot), order, step_loss, cfg.clone_distill_lr,
                             stop=lambda: time.perf_counter() > deadline)
            after = mean_kl()
        return {"distill_steps": report.steps, "kl_before": float(f"{before:.4g}"), "kl_after": float(f"{after:.4g}"),
                "distill_seconds": round(time.perf_counter() - started, 3)}

    def _free_slot(self, keep: int | None = None) -> int:
        """A new slot; with the pool full, the least recently used expert (consolidated ones
        first; never ``keep``, the one being cloned) is recycled to make room."""
        candidates = [s for s in self.experts if s != keep]
        if len(self.experts) >= self.config.max_experts and candidates:
            victim = min(candidates, key=lambda s: (not self.experts[s].consolidated, self.experts[s].last_used))
            self._recycle(victim, "the pool is full" + (" (it was consolidated)" if self.experts[victim].consolidated
                                                        else " (least recently used)"))
        return max([*self.experts, -1]) + 1

    def _recycle(self, slot: int, reason: str) -> None:
        assert self.pool is not None
        self.pool.drop(slot)
        self.keys.drop(slot)
        self.experts.pop(slot, None)
        self.blobs.delete(f"cls/expert-{slot}")
        self.episodes.log("prune", reason, slot)

    def _episode_pieces(self, cortex: Neocortex, episodes: list[Episode]) -> list[Piece]:
        out: list[Piece] = []
        for e in episodes:
            if e.kind == "qa":
                out.append(chat_piece(cortex.tokenizer, e.prompt, e.answer, self.config.rehearsal_system, "recall"))
            else:
                out += text_pieces(cortex.tokenizer, e.prompt, self.config.batch_tokens, "recall")
        return out

    def _replay(self, cortex: Neocortex, n: int) -> list[Piece]:
        """Background prose windows replayed beside the material (none without background)."""
        ids = self._background_ids(cortex)
        if not ids or self.config.replay_tokens == 0:
            return []
        return lm.windows(ids[4096:], self.config.replay_tokens, self.config.replay_tokens * n)

    def _background_ids(self, cortex: Neocortex) -> list[int]:
        if self._background is None:
            text = self.context.background() if self.context.background is not None else ""
            self._background = cortex.tokenizer(text[:60_000], add_special_tokens=False)["input_ids"]
        return self._background

    # --- by night -------------------------------------------------------------------------------
    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        with self.training:
            return self._consolidate(budget, progress)

    def _consolidate(self, budget: Budget, progress: Progress) -> ConsolidateReport:
        started = time.perf_counter()
        cortex, cfg = self.cortex(), self.config
        assert self.pool is not None
        pool = self.pool
        episodes = self.episodes.shuffled(1000 + self.sleeps, limit=cfg.sleep_episodes)
        episodes = [e for e in episodes if e.slot in self.experts]
        if not episodes:
            return ConsolidateReport(engine=NAME, seconds=0.0, changed=False, details={"reason": "nothing to replay"})
        budget.started()  # the app checkpoints here
        before = pool.consolidated()
        resume = self._resume(episodes, before)
        pad = cortex.tokenizer.pad_token_id or 0
        probe = lm.batches(lm.windows(self._background_ids(cortex), 128, cfg.probe_tokens), cfg, pad, cortex.device)
        questions = self._probe_questions(cortex, pad)
        if resume is not None:  # measured on the same adapter when the sleep began
            ppl_before, known_before = resume["ppl_before"], [bool(k) for k in resume["known_before"]]
        else:
            with cortex.lock, pool.routing(None, consolidated=1.0):
                ppl_before = lm.perplexity(cortex.model, probe) if probe else None
                known_before = lm.exact_answers(cortex.model, questions)
        for slot in sorted({e.slot for e in episodes}):
            self._loaded(slot)  # the teacher runs only experts in memory
        work = self._sleep_batches(cortex, episodes, pad)
        done = int(resume["steps"]) if resume is not None else 0
        if budget.interrupted():
            return self._cut_short(started, done, len(work), None)
        params = pool.parameters(None)
        ewc = self._ewc(cortex, params, pad) if cfg.ewc_strength > 0 else None  # anchored at ``before``
        if budget.interrupted():
            return self._cut_short(started, done, len(work), None)
        if resume is not None:
            with cortex.lock:
                pool.load_consolidated({k[len("partial."):]: v for k, v in resume.items() if k.startswith("partial.")})
        deadline = started + budget.seconds
        taken = [done]

        def stop() -> bool:
            return (budget.interrupted() or time.perf_counter() > deadline
                    or (budget.steps is not None and taken[0] - done >= budget.steps))

        def loss(item: object) -> torch.Tensor:
            batch, slots = item  # type: ignore[misc]
            taken[0] += 1
            progress(min(0.95, taken[0] / max(1, len(work))), f"sleep step {taken[0]}/{len(work)}")
            with torch.no_grad(), self._teacher(slots, before):
                teacher = lm.logits(cortex.model, batch)
            with pool.routing(None, consolidated=1.0):
                student = lm.logits(cortex.model, batch)
            value = kl_to_teacher(student, teacher, lm.label_mask(batch))
            self.metrics.append({"engine": NAME, "phase": "sleep", "step": taken[0], "kl": float(value.detach())})
            return value

        opt = torch.optim.Adam(params, lr=cfg.sleep_lr)
        restored = resume is not None and load_adam_tensors(opt, resume)  # Adam goes on as it was
        with cortex.lock:
            report = distill(params, work[done:], loss, cfg.sleep_lr, ewc, stop, opt=opt)
            cut = report.stopped and budget.interrupted()
            if cut:  # the person is back: no probe, answers as before the sleep
                partial = pool.consolidated()
                pool.load_consolidated(before)
        if cut:
            aside = {"ppl_before": ppl_before, "known_before": known_before, "steps": done + report.steps,
                     "episodes": [e.id for e in episodes]}
            return self._cut_short(started, done + report.steps, len(work), {
                **aside, **{f"before.{k}": v for k, v in before.items()},
                **{f"partial.{k}": v for k, v in partial.items()}, **adam_tensors(opt)})
        with cortex.lock:
            with pool.routing(None, consolidated=1.0):
                ppl_after = lm.perplexity(cortex.model, probe) if probe else None
                known_after = lm.exact_answers(cortex.model, questions)
        figures = self._probe_figures(ppl_before, ppl_after, known_before, known_after)
        figures.update(steps=done + report.steps, resumed_from=done, optimizer_restored=restored,
                       stopped=report.stopped, episodes=len(episodes),
                       loss_first=report.first_loss, loss_last=report.last_loss)
        self.blobs.delete(RESUME)
        reason = self._rollback_reason(figures)
        figures["gate"] = self._train_gate(1000 + self.sleeps)  # kept either way: it reads the buffer, not the adapter
        self.sleeps += 1
        if reason is not None:
            with cortex.lock:
                pool.load_consolidated(before)
            self.episodes.log("rollback", reason, None, figures)
            changed = False
        else:
            fidelity = self._fidelity(cortex, self._covered(work, done + report.steps, episodes), before, pad,
                                      budget.interrupted)
            refreshed = [slot for slot, (expert, adapter) in fidelity.items() if matches(expert, adapter)]
            for slot in refreshed:
                self._refresh(slot)
            figures.update(refreshed=sorted(refreshed), fidelity={  # right by the expert, by the adapter, asked
                str(slot): [sum(expert), sum(adapter), len(expert)] for slot, (expert, adapter) in fidelity.items()})
            self.episodes.log("sleep", f"kept: drift {figures['drift']}, forgetting {figures['forgetting']}",
                              None, figures)
            self._prune()
            changed = report.steps > 0
        if self.autosave:
            self.save()
        self.record_pressure()
        details = {**figures, "rolled_back": reason is not None, "reason": reason or "kept"}
        return ConsolidateReport(engine=NAME, seconds=time.perf_counter() - started, changed=changed, details=details)

    def _covered(self, work: list[object], taken: int, episodes: list[Episode]) -> set[int]:
        """Experts every episode of which this sleep replayed at least once: what they held, the
        consolidated adapter now holds (a sleep cut by its time covers the experts it finished)."""
        per_epoch = len(work) // max(1, self.config.sleep_epochs)
        rows = Counter(s for _, slots in work[:per_epoch] for s in slots)  # type: ignore[misc]
        seen = Counter(s for _, slots in work[:min(taken, per_epoch)] for s in slots)  # type: ignore[misc]
        sampled, stored = Counter(e.slot for e in episodes), self.episodes.count_by_slot()
        return {s for s in rows if seen[s] == rows[s] and sampled[s] == stored.get(s, 0)}

    def _fidelity(self, cortex: Neocortex, slots: set[int], before: dict[str, torch.Tensor], pad: int,
                  interrupted: Callable[[], bool]) -> dict[int, tuple[list[bool], list[bool]]]:
        """Per expert, its rehearsal answers (teacher-forced, exactly right or not): as it answered
        before this sleep, and from the consolidated adapter alone as answers would get it. Empty
        when the person comes back meanwhile (the lock is taken per batch)."""
        found: dict[int, tuple[list[bool], list[bool]]] = {}
        share = self.config.consolidated_share
        for slot in sorted(slots):
            self._loaded(slot)
            documents = set(self.experts[slot].documents)  # not a recycled slot's earlier episodes
            qa = [e for e in self.episodes.shuffled(0, slot) if e.kind == "qa" and e.document_id in documents]
            expert: list[bool] = []
            adapter: list[bool] = []
            for batch in lm.batches(self._episode_pieces(cortex, qa), self.config, pad, cortex.device):
                if interrupted():
                    return {}
                with cortex.lock:
                    with self._teacher([slot] * batch["input_ids"].shape[0], before):
                        expert += lm.exact_answers(cortex.model, [batch])
                    with self.pool.routing(None, consolidated=share):  # type: ignore[union-attr]
                        adapter += lm.exact_answers(cortex.model, [batch])
            found[slot] = (expert, adapter)
        return found

    def _refresh(self, slot: int) -> None:
        """An expert the consolidated adapter matches starts again from zero, keeping its keys: its
        questions get the adapter, which learned to answer as it did, and new material routed there
        trains it anew on top of the adapter (``layered``)."""
        assert self.pool is not None
        self._loaded(slot)
        state = self.pool.expert(slot)  # B = 0 adds nothing; A stays, so B's gradient is not zero
        self.pool.load(slot, {k: (torch.zeros_like(v) if k.endswith(".B") else
                                  torch.ones_like(v) if k.endswith(".open_rows") else v) for k, v in state.items()})
        self.experts[slot].consolidated = self.experts[slot].layered = True

    def _resume(self, episodes: list[Episode], before: dict[str, torch.Tensor]) -> dict[str, Any] | None:
        """The sleep cut short last time, when it can go on: same episodes, same adapter since."""
        aside = self.blobs.get(RESUME)
        if aside is None:
            return None
        same = (aside.get("episodes") == [e.id for e in episodes] and all(
            f"before.{k}" in aside and torch.equal(aside[f"before.{k}"], v) for k, v in before.items()))
        if not same:
            self.blobs.delete(RESUME)
            return None
        return aside

    def _cut_short(self, started: float, steps: int, planned: int, aside: dict[str, Any] | None) -> ConsolidateReport:
        """The person came back: what the sleep did so far is kept aside (not answering, it has not
        been probed) and the next sleep resumes from it; the pressure stays."""
        if aside is not None:
            self.blobs.put(RESUME, "cls-sleep-resume", aside, {"steps": steps})
        self.episodes.log("interrupted", f"the person came back after step {steps} of {planned}: resumed at the next sleep",
                          None, {"steps": steps, "planned": planned})
        return ConsolidateReport(engine=NAME, seconds=time.perf_counter() - started, changed=False,
                                 details={"interrupted": True, "steps": steps, "planned": planned,
                                          "reason": "cut short: resumes at the next sleep"})

    @contextmanager
    def _teacher(self, slots: list[int], consolidated: dict[str, torch.Tensor]) -> Iterator[None]:
        """Each row answered as by day: its expert, beside the consolidated adapter as it was
        before this sleep (swapped in for the teacher's pass, then back)."""
        assert self.pool is not None
        pool, current = self.pool, self.pool.consolidated()
        routed = sorted(set(slots))
        weights = torch.tensor([[1.0 if s == r else 0.0 for r in routed] for s in slots])
        shares = torch.tensor([self._adapter_share(s) for s in slots])
        pool.load_consolidated(consolidated)
        try:
            with pool.routing(weights, routed, consolidated=shares):
                yield
        finally:
            pool.load_consolidated(current)

    def _sleep_batches(self, cortex: Neocortex, episodes: list[Episode], pad: int) -> list[object]:
        """Shuffled episodes, ``sleep_epochs`` times, in batches that remember each row's expert."""
        from engines.ttt.trainer import collate

        rows: list[tuple[Piece, int]] = []
        for e in episodes:
            rows += [(p, e.slot) for p in self._episode_pieces(cortex, [e])]
        per = max(1, self.config.batch_tokens // max(1, max(len(p) for p, _ in rows)))
        out: list[object] = []
        for epoch in range(self.config.sleep_epochs):
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(epoch)).tolist()
            for i in range(0, len(order), per):
                group = [rows[j] for j in order[i:i + per]]
                batch = collate([p for p, _ in group], pad, cortex.device)
                batch.pop("counted", None)
                out.append((batch, [s for _, s in group]))
        return out

    def _ewc(self, cortex: Neocortex, params: list[torch.nn.Parameter], pad: int) -> EWC | None:
        """EWC anchored at the consolidated adapter as it is, Fisher from background prose."""
        assert self.pool is not None
        data = lm.batches(lm.windows(self._background_ids(cortex)[8192:], 64, self.config.fisher_tokens),
                          self.config, pad, cortex.device)
        if not data:
            return None
        with cortex.lock, self.pool.routing(None, consolidated=1.0):
            fisher = fisher_diagonal(params, data, lambda b: lm.lm_loss(cortex.model, b))  # type: ignore[arg-type]
        return EWC(params, fisher, self.config.ewc_strength)

    def _probe_questions(self, cortex: Neocortex, pad: int) -> list[dict[str, torch.Tensor]]:
        if self.context.background is None:
            return []
        pairs, _ = rehearsal.extract(self.context.background()[:20_000])
        pieces = lm.question_pieces(cortex.tokenizer, [(p.question, p.answer) for p in pairs[:PROBE_QUESTIONS]],
                                    self.config.rehearsal_system)
        return lm.batches(pieces, self.config, pad, cortex.device)

    @staticmethod
    def _probe_figures(ppl_before: float | None, ppl_after: float | None, known_before: list[bool],
                       known_after: list[bool]) -> dict[str, Any]:
        drift = None if not ppl_before or ppl_after is None else ppl_after / ppl_before - 1.0
        had = sum(known_before)
        lost = sum(1 for b, a in zip(known_before, known_after) if b and not a)
        return {"perplexity_before": ppl_before, "perplexity_after": ppl_after, "drift": drift,
                "known_before": had, "known_after": sum(known_after),
                "forgetting": lost / had if had else 0.0}

    def _rollback_reason(self, figures: dict[str, Any]) -> str | None:
        cfg = self.config
        if figures["drift"] is not None and figures["drift"] > cfg.drift_bound:
            return f"perplexity drift {figures['drift']:.4f} > bound {cfg.drift_bound}"
        if figures["forgetting"] > cfg.forgetting_bound:
            return f"forgetting ratio {figures['forgetting']:.3f} > bound {cfg.forgetting_bound}"
        return None

    def _prune(self) -> None:
        limit = time.time() - self.config.prune_unused_days * 86_400
        for slot, info in list(self.experts.items()):
            if info.last_used and info.last_used < limit:
                self._recycle(slot, f"not used in {self.config.prune_unused_days} days")

    # --- sleep pressure -------------------------------------------------------------------------
    def pressure(self) -> PressureReading:
        """How much this engine needs sleep, three parts of 0 to 1: saturation (the share of the
        pool's capacity holding experts not yet consolidated), novelty (mean novelty of the
        documents learned since the last kept sleep) and forgetting (the last probe's ratio)."""
        fresh = sum(not info.consolidated for info in self.experts.values())
        arrived = [float(e.figures["novelty"]) for e in self.episodes.since_last("sleep")
                   if e.kind in ("grow", "route") and "novelty" in e.figures]
        probe = self.episodes.last(("sleep", "rollback"))
        forgetting = float(probe.figures.get("forgetting") or 0.0) if probe is not None else 0.0
        return PressureReading(
            engine=NAME, saturation=min(1.0, fresh / self.config.max_experts),
            novelty=min(1.0, sum(arrived) / len(arrived)) if arrived else 0.0, forgetting=min(1.0, forgetting),
            figures={"experts": len(self.experts), "unconsolidated": fresh, "capacity": self.config.max_experts,
                     "documents": len(arrived), "threshold": self.config.sleep_pressure})

    def record_pressure(self) -> PressureReading:
        reading = self.pressure()
        self.pressure_log.record(reading)
        return reading

    # --- state ----------------------------------------------------------------------------------
    def _index(self) -> dict[str, Any]:
        assert self.pool is not None
        keys = self.keys.state()
        state: dict[str, Any] = {f"consolidated.{k}": v for k, v in self.pool.consolidated().items()}
        if "probe" in keys:
            state["router.probe"] = keys["probe"]
        if self.gate_state is not None:
            state.update(self.gate_state)
        state.update({"router.keys": keys["keys"], "router.owners": keys["owners"],
                      "experts": {str(s): i.model_dump() for s, i in self.experts.items()},
                      "documents": self.documents, "sleeps": self.sleeps})
        return state

    def save(self) -> None:
        """The index (router, consolidated adapter, bookkeeping) and each loaded expert, one blob each."""
        assert self.pool is not None
        for slot in self.pool.slots():
            self.blobs.put(f"cls/expert-{slot}", "cls-expert", self.pool.expert(slot))
        index = self._index()
        self.blobs.put(INDEX, "cls-index", index, {"experts": len(self.experts), "documents": self.documents})

    def _apply_index(self, state: dict[str, Any]) -> None:
        assert self.pool is not None
        prefix = "consolidated."
        self.pool.load_consolidated({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.keys.load({"keys": state["router.keys"], "owners": state["router.owners"],
                        "probe": state.get("router.probe")})
        self.gate_state = {k: v for k, v in state.items() if k.startswith(GATE)} or None
        self._gate_cache = None
        # saved before experts could answer alone: each learned and answered on top of the adapter
        self.experts = {int(s): ExpertInfo(**{"layered": True, **i}) for s, i in state.get("experts", {}).items()}
        self.documents, self.sleeps = int(state.get("documents", 0)), int(state.get("sleeps", 0))
        self.check_embedder()

    def check_embedder(self) -> None:
        """Embed each expert's keys again (from its documents' stored text) when the embedding
        model is not the one that made them: questions of one model are never compared with
        another's keys."""
        self._checked_at = time.monotonic()
        current = route_keys.probe(self.context.embed)
        if route_keys.matches(self.keys, current):
            return
        log.warning("the cls router's keys were made by another embedding model: embedding them again")
        store = DocumentStore(self.context.db)
        fresh = KeyRouter(self.keys.low)
        for slot, info in sorted(self.experts.items()):
            keys = list(route_keys.stored_keys(self.context.embed, store, set(info.documents)).values())
            if keys:
                fresh.add(slot, torch.cat(keys))
        fresh.probe = current
        if self.gate_state is not None:  # trained on the other model's vectors: keys until the next sleep
            log.warning("the cls gate was trained on another embedding model's vectors: keys route until the next sleep")
            self.gate_state, self._gate_cache = None, None
        self.keys = fresh  # one assignment: a question routed meanwhile reads the old or the new keys
        if self.autosave and self.pool is not None and self.training.acquire(blocking=False):
            try:  # saved now unless learning or a sleep runs (they save, and a load checks again)
                self.save()
            finally:
                self.training.release()

    def state_dict(self) -> dict[str, Any]:
        """Everything (every expert loaded first): what a checkpoint holds."""
        self.cortex()
        assert self.pool is not None
        for slot in self.experts:
            self._loaded(slot)
        state = self._index()
        for slot in self.experts:
            state.update({f"expert.{slot}.{k}": v for k, v in self.pool.expert(slot).items()})
        return state

    def load_state_dict(self, state: dict[str, Any], origin: str | None = None) -> None:
        self.cortex()
        assert self.pool is not None
        with self.training:
            for slot in self.pool.slots():
                self.pool.drop(slot)
            self._apply_index(state)
            self.origin = origin
            for slot in self.experts:
                prefix = f"expert.{slot}."
                self.pool.load(slot, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            self.blobs.delete(RESUME)
            if self.autosave:
                self.save()
            self.record_pressure()

    # --- a bundle import ----------------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[None]:
        """No model load, learning or sleep while a bundle import puts a saved state in place."""
        with self.setup, self.training:
            yield

    def loaded_shapes(self) -> dict[str, list[int]] | None:
        """Each adapted module's consolidated LoRA shapes when the model is loaded (else None):
        what a state put in place must fit. Call inside ``held``."""
        if self.pool is None:
            return None
        return {f"{name}.{part}": list(t.shape) for name, layer in self.pool.layers.items()
                for part, t in layer.consolidated.tensors().items()}

    def reload_saved(self) -> None:
        """Read the saved index again and drop the experts held in memory (they load from their
        blobs when routed to), after a bundle import wrote them or undid that. Call inside ``held``."""
        self.origin = None
        if self._cortex is None or self.pool is None:
            return  # the next load reads the saved index
        for slot in self.pool.slots():
            self.pool.drop(slot)
        saved = self.blobs.get(INDEX)
        if saved is not None:
            self._apply_index(saved)
            return
        blank = {}
        for name, layer in self.pool.layers.items():
            lora = layer.consolidated
            blank.update({f"{name}.A": lora.A.detach(), f"{name}.B": torch.zeros_like(lora.B),
                          f"{name}.open_rows": torch.ones_like(lora.open_rows)})
        self.pool.load_consolidated(blank)
        self.keys, self.experts, self.documents, self.sleeps = KeyRouter(self.keys.low), {}, 0, 0
        self.gate_state, self._gate_cache = None, None

    def forget_many(self, document_ids: list[int]) -> None:
        """Their episodes leave the replay buffer (what their training wrote into an expert stays
        until that expert is recycled; a checkpoint goes back)."""
        self.episodes.drop_documents(document_ids)

    def rehearsed(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        """Up to ``n`` of the question/answer pairs the experts were trained on (the episodic
        buffer), for the learning bench to ask closed-book (as ttt's ``rehearsed``)."""
        pairs = [(e.prompt, e.answer) for e in self.episodes.shuffled(seed)
                 if e.kind == "qa" and e.slot in self.experts and e.document_id in self.experts[e.slot].documents]
        return list(dict.fromkeys(pairs))[:n]  # only what the experts in the pool now learned, once each

    def stats(self) -> dict[str, Any]:
        saved = self.blobs.meta(INDEX) or {}
        events = self.episodes.events(20)
        return {"experts": len(self.experts) if self._cortex is not None else saved.get("experts", 0),
                "loaded": [] if self.pool is None else self.pool.slots(),
                "documents": self.documents if self._cortex is not None else saved.get("documents", 0),
                "label": self.label if self._cortex is not None else f"cls: {saved.get('experts', 0)} experts",
                "origin": self.origin, "sleeps": self.sleeps, "episodes": self.episodes.count(),
                "consolidated_experts": sum(i.consolidated for i in self.experts.values()),
                "router": self.config.router,
                "gate_experts": [] if self.gate_state is None else self.gate_state[f"{GATE}slots"].tolist(),
                "events": [f"{e.kind}: {e.reason}" for e in events]}
