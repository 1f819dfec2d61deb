"""TTT-E2E with sparse memory finetuning: documents written into the neocortex's MLP weights.

Test-time training (TTT-E2E) keeps learning at use time by taking gradient steps on the MLPs of
the last quarter of the decoder layers. Here each of those MLPs becomes a ``DualMLP`` (the
original frozen beside a trainable copy, mixed by ``alpha``), and learning a document is:

1. material: the document's tokens, plus rehearsal of its facts as questions/answers and
   paraphrases (``rehearsal``), plus a sample of earlier documents' question/answer pairs
   (recall: without it each document overwrites the ones learned before it), packed into
   mini-batches with background text replayed in each;
2. gating: the neurons that fire far more on this document than in general use (TF-IDF against
   background rates on prose and chat questions, measured once and cached), among those that
   general use rarely wakes, are the only ones opened for training, at most ``gate_top_k`` per
   layer; with the gate off every neuron is;
3. ``alpha`` decays one notch (towards ``alpha_floor``), then Adam steps on the open rows, with
   each step's loss reported as progress; the rows are written back and the learned state
   saved through the store (so the next start answers with it).

Chat must answer with the torch model for the learned weights to count, so ``contribute`` names
the learned state once there is one; the chat service then switches to the neocortex. Each
learned document also leaves keys (embeddings of its passages): answers are routed
(``models.delta_router``), so a question gets the learned weights as far as it is about a learned
document, and one about nothing learned is answered by the original model.

Nothing is committed until a document is fully learned: a process that dies mid-document leaves
the previous learned state, and its learn job runs again on the next start. Sleep
(``consolidate``, ``engines.ttt.sleep``) rehearses everything learned so far at once; it keeps
the steps it took within its budget or until told to stop, and nothing when it fails or when it
made background prose (a probe measured before and after) more perplexing than the bound.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

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
from engines.ttt import rehearsal, route_keys, sleep
from engines.ttt.calibration import background_rates
from engines.ttt.config import TTTConfig
from engines.ttt.recall import RecallEntry, RecallPool, RecallPoolError
from engines.ttt.trainer import (
    Piece,
    Prefix,
    chat_piece,
    collate,
    firing_counts,
    frozen_prefix,
    frozen_prefixes,
    labelled_loss,
    pack,
    text_pieces,
    train,
)
from models.delta_router import DeltaRouter
from models.dual_mlp import DualMLP, decoder_layers, install, layer_range, original, shared, uninstall
from models.neuron_gate import quiet, tfidf, top_neurons
from store.blobs import BlobStore
from store.documents import DocumentStore

log = logging.getLogger(__name__)

LIVE_KEY = "ttt/live"
BACKGROUND_PROSE_CHARS = 40_000  # the background opens with everyday prose (app.services.general_text)
DISTILLED_BATCHES = 8  # distinct distillation batches per document, cycled (each holds its teacher)
STATE_FORMAT = 1


class RouterKeysError(ValueError):
    """A learned state's router keys cannot be read."""


class TTTEngine(Engine):
    name = "ttt"
    learns_documents = True
    writes_weights = True

    def __init__(self, context: EngineContext, config: TTTConfig | None = None) -> None:
        self.context = context
        self.config = config or TTTConfig()
        self.blobs = BlobStore(context.db, context.data_dir)
        self.autosave = True  # the bench turns it off: it throws its states away
        self.documents = 0
        self.alpha = 1.0
        self.revision = 0
        self.origin: str | None = None  # the checkpoint the current state was loaded from
        self._cortex: Neocortex | None = None
        self._duals: list[DualMLP] = []
        self._layer_ids: list[int] = []
        self._replay_ids: list[int] | None = None
        self._replay_at = 0
        self._background_questions: list[Piece] | None = None
        self._question_at = 0
        self.recall = RecallPool(self.config.recall_pool)
        self.router = DeltaRouter(self.config.route_low, self.config.route_high)  # kept even when off
        self._forgotten: set[int] = set()  # forgotten while being learned: not to be recalled
        self._keeping = threading.Lock()  # a document's pairs and keys kept, or forgotten, as one
        self._setup = threading.RLock()
        self._saving = threading.Lock()
        self._training = threading.Lock()
        self._wanted = threading.Event()  # a reset or a load waits for the training lock: sleep yields
        self._token: str | None = None  # the saved state this process holds (see ``_put_live``)

    # --- the model ---------------------------------------------------------------------------
    def cortex(self) -> Neocortex:
        """The neocortex with DualMLPs installed and the saved learned state restored."""
        with self._setup:
            if self._cortex is None:
                if self.context.neocortex is None:
                    raise RuntimeError("the ttt engine needs a neocortex (a torch model) and the app gave none")
                cortex = self.context.neocortex()
                total = len(decoder_layers(cortex.model))
                self._layer_ids = layer_range(total, 0.75, self.config.layers)
                with cortex.lock:
                    cortex.model.requires_grad_(False)
                    self._duals = install(cortex.model, self._layer_ids)
                    cortex.router = self.route  # type: ignore[misc]
                self._cortex = cortex
                # the token before the state: a save in between makes a sleep refuse, not overwrite
                self._token = self._saved_meta().get("token")
                saved = self.blobs.get(LIVE_KEY)
                if saved is not None:
                    self._restore(saved, cortex.model_name)
                else:
                    self._apply_fresh()
            return self._cortex

    def _restore(self, saved: dict[str, Any], model_name: str) -> None:
        """The live state at start-up. An unreadable recall pool costs only the pool: the
        weights learned beside it are kept, and recall starts again from the next document.
        Unreadable router keys are embedded again from the stored documents."""
        try:
            try:
                self._apply(saved)
            except RecallPoolError as exc:
                log.warning("%s; keeping the learned weights, recall starts afresh", exc)
                self._apply({**saved, "recall": None})
            except RouterKeysError as exc:
                log.warning("%s; keeping the learned weights, embedding the keys again", exc)
                self._apply({k: v for k, v in saved.items() if not k.startswith("router.")})
            self.origin = saved.get("origin")
        except ValueError as exc:
            log.warning("the saved ttt state does not fit %s (%s); starting afresh", model_name, exc)
            self._apply_fresh()

    def _set_alpha(self, alpha: float) -> None:
        self.alpha = alpha
        for dual in self._duals:
            dual.alpha = alpha

    def _next_alpha(self) -> float:
        if self.config.mode == "full":
            return 0.0
        return max(self.config.alpha_floor, self.alpha * self.config.alpha_decay)

    # --- learning ----------------------------------------------------------------------------
    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        with self._training:  # one training at a time: learning and sleep open the same rows
            return self._learn(document, progress)

    def _learn(self, document: DocumentInput, progress: Progress) -> LearnReport:
        started = time.perf_counter()
        cortex = self.cortex()
        progress(0.0, "preparing the material")
        pieces, doc_tokens, pairs, text = self.material(cortex, document)
        self._forgotten.discard(document.document_id)  # it is back
        self.recall.drop({document.document_id})  # an earlier version's pairs are stale
        if not pieces:
            progress(1.0, "nothing to learn (empty document)")
            return LearnReport(engine=self.name, path=document.path, seconds=0.0, changed=False)
        if not self.config.rehearsal_qa:
            pairs = []  # recall rehearses pairs only where the documents' own pairs are trained
        keys = self._keys(text)
        recalled = self._recalled(cortex, document.document_id, len(pairs))
        pieces = sorted(pieces + recalled, key=len)  # similar lengths share a batch: less padding
        first = min(self._layer_ids)
        batches, replay = self._batches(cortex, pieces)
        prefixes = list(frozen_prefixes(cortex.model, cortex.lock, batches + replay, first,
                                        lambda f: progress(0.05 * f, "running the frozen layers")))
        prefixes, replayed = prefixes[:len(batches)], prefixes[len(batches):]
        neurons = self.select_neurons(cortex, prefixes, progress)
        self._set_alpha(self._next_alpha())
        params = self._open(neurons)
        if not params:
            progress(1.0, "no neuron passed the gate: nothing learned")
            return LearnReport(engine=self.name, path=document.path, changed=False, tokens=doc_tokens,
                               seconds=time.perf_counter() - started)

        def report(step: int, steps: int, loss: float) -> None:
            progress(0.1 + 0.88 * step / steps, f"step {step}/{steps} loss {loss:.3f}")

        try:
            result = train(cortex.model, cortex.lock, params, prefixes, self.config.passes,
                           self.config.lr, self.config.max_grad_norm, report, first=first,
                           replay=replayed, original=lambda: original(self._duals),
                           replay_weight=self.config.replay_weight)
        except BaseException:
            self._discard()
            raise
        changed = self._commit()
        with self._keeping:
            if document.document_id not in self._forgotten:
                self.recall.add(document.document_id, [(qa.question, qa.answer) for qa in pairs], self.revision)
                self.router.add(document.document_id, keys)
        self.documents += 1
        self.revision += 1
        if self.autosave:
            progress(0.99, "saving the learned state")
            self.save_live()
        seconds = time.perf_counter() - started
        progress(1.0, f"learned in {seconds:.1f} s (loss {result.first_loss:.2f} -> {result.last_loss:.2f})")
        return LearnReport(
            engine=self.name, path=document.path, seconds=seconds, changed=changed > 0,
            tokens=doc_tokens,
            details={"steps": result.steps, "loss_first_pass": result.first_loss,
                     "loss_last_pass": result.last_loss, "neurons_changed": changed,
                     "neurons_open": _count(neurons), "alpha": self.alpha,
                     "material_tokens": sum(len(p) for p in pieces), "recalled_pairs": len(recalled),
                     "trained_tokens": _trained_tokens(batches, replay) * self.config.passes,
                     "tokens_per_second": doc_tokens / seconds if seconds > 0 else 0.0},
        )

    def material(self, cortex: Neocortex, document: DocumentInput
                 ) -> tuple[list[Piece], int, list[rehearsal.QA], str]:
        """The document's own windows and its rehearsal pieces; its token count; its pairs; the
        text learned (up to ``max_document_tokens``)."""
        cfg = self.config
        window = max(16, cfg.batch_tokens // 2)
        doc = text_pieces(cortex.tokenizer, document.text, window, "document", limit=cfg.max_document_tokens)
        doc_tokens = sum(len(p) for p in doc)
        text = cortex.tokenizer.decode([t for p in doc for t in p.ids])
        pairs: list[rehearsal.QA] = []
        restated: list[str] = []
        if cfg.rehearsal_qa or cfg.rehearsal_paraphrase:
            if cfg.rehearsal_source == "model":
                pairs = rehearsal.generate(self.context.generator(), text)
            else:
                pairs, restated = rehearsal.extract(text)
        extra: list[Piece] = []
        if cfg.rehearsal_qa:
            extra += [chat_piece(cortex.tokenizer, qa.question, qa.answer, cfg.rehearsal_system)
                      for qa in pairs]
        if cfg.rehearsal_paraphrase and restated:
            extra += text_pieces(cortex.tokenizer, "\n".join(restated), window, "paraphrase")
        return doc + extra, doc_tokens, pairs, text

    def _keys(self, text: str) -> Tensor:
        """The document's router keys: its passages embedded (its opening, if it has none).
        Keys of another embedding model (a checkpoint from elsewhere) are embedded again first."""
        keys = route_keys.embedded_keys(self.context.embed, text)
        if self.router.dim() not in (None, keys.shape[1]):
            log.warning("the router's keys have %s dimensions, the embedder gives %s: embedding them again",
                        self.router.dim(), keys.shape[1])
            self._rekey(self.router, set(self.router.owners.tolist()))
        return keys

    def _rekey(self, router: DeltaRouter, documents: set[int]) -> None:
        """Embed these stored documents' keys again (from their stored text)."""
        router.clear()
        store = DocumentStore(self.context.db)
        for document_id in sorted(documents):
            text = "\n\n".join(store.chunk_texts(document_id))
            if text.strip():
                router.add(document_id, route_keys.embedded_keys(self.context.embed, text))

    def _recalled(self, cortex: Neocortex, document_id: int, new_pairs: int) -> list[Piece]:
        """``recall_per_pair`` earlier pairs per new pair, drawn at random from the pool (seeded
        by the revision: the same state learning the same document draws the same pairs)."""
        drawn = self.recall.draw(self.config.recall_per_pair * new_pairs, self.revision, exclude=document_id)
        return self._recall_pieces(cortex, drawn)

    def _recall_pieces(self, cortex: Neocortex, entries: list[RecallEntry]) -> list[Piece]:
        return [chat_piece(cortex.tokenizer, e.question, e.answer, self.config.rehearsal_system, kind="recall")
                for e in entries]

    def _open(self, neurons: list[torch.Tensor]) -> list[torch.nn.Parameter]:
        """Open these neurons' rows in each layer for training; their parameters."""
        return [p for dual, ids in zip(self._duals, neurons) if ids.numel()
                for p in dual.open_rows(ids, self.config.values_only).trainable()]

    def _commit(self) -> int:
        """Write the trained rows back (every layer at once, between two answers)."""
        with self._cortex.lock:  # type: ignore[union-attr]
            return sum(dual.commit() for dual in self._duals)

    def _discard(self) -> None:
        for dual in self._duals:
            dual.discard()

    def _batches(self, cortex: Neocortex, pieces: list[Piece]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The training mini-batches, and the distillation batches cycled beside them.

        Background text is replayed by its own next-token loss inside each material batch
        (``replay_loss = lm``) or distilled from the original model in a batch of its own
        (``distill``); background questions are always distilled (what is held is how the
        original model answered them, not the extracted answer). At most ``DISTILLED_BATCHES``
        distinct distillation batches per document: each keeps its teacher's output in memory.
        """
        cfg, pad = self.config, cortex.tokenizer.pad_token_id or 0
        replaying = self.context.background is not None and cfg.replay_tokens > 0
        text_lm = replaying and cfg.replay_loss == "lm"
        text_distilled = replaying and cfg.replay_loss == "distill"
        if text_lm:
            packed = pack(pieces, max(16, cfg.batch_tokens - cfg.replay_tokens))
            batches = [collate([*b, self._replay_piece(cortex, cfg.replay_tokens)], pad, cortex.device)
                       for b in packed]
        else:
            batches = [collate(b, pad, cortex.device) for b in pack(pieces, cfg.batch_tokens)]
        if self.context.background is None:
            return batches, []
        distilled = []
        for _ in range(min(len(batches), DISTILLED_BATCHES)):
            text = [self._replay_piece(cortex, cfg.replay_tokens)] if text_distilled else []
            distilled.append(text + self._replay_questions(cortex))
        return batches, [collate(d, pad, cortex.device) for d in distilled if d]

    def _replay_piece(self, cortex: Neocortex, n: int) -> Piece:
        if self._replay_ids is None:
            assert self.context.background is not None
            self._replay_ids = cortex.tokenizer(self.context.background(), add_special_tokens=False)["input_ids"]
        ids = self._replay_ids
        start = self._replay_at % max(1, len(ids) - n)
        self._replay_at = start + n
        chunk = ids[start:start + n]
        return Piece(chunk, chunk, "replay")

    def _background_question_pieces(self, cortex: Neocortex) -> list[Piece]:
        """Questions about the background prose, asked in the chat template the rehearsal uses."""
        if self._background_questions is None:
            assert self.context.background is not None
            pairs, _ = rehearsal.extract(self.context.background()[:BACKGROUND_PROSE_CHARS])
            self._background_questions = [chat_piece(cortex.tokenizer, qa.question, qa.answer,
                                                     self.config.rehearsal_system, kind="replay")
                                          for qa in pairs]
        return self._background_questions

    def _replay_questions(self, cortex: Neocortex) -> list[Piece]:
        """``replay_questions`` background questions: distilled, they hold how the model answers
        questions in general."""
        k = self.config.replay_questions
        if k == 0:
            return []
        pool = self._background_question_pieces(cortex)
        if not pool:
            return []
        self._question_at += k
        return [pool[(self._question_at - j) % len(pool)] for j in range(k)]

    def select_neurons(self, cortex: Neocortex, prefixes: list[Prefix],
                       progress: Progress) -> list[torch.Tensor]:
        """Per learning layer, the neurons this document may change (counted over the
        document's own material: not replay, not recalled pairs)."""
        every = torch.arange(self._duals[0].neurons)
        if not self.config.gate or self.config.mode == "full":
            return [every for _ in self._duals]
        cfg = self.config
        bg_counts, bg_tokens = self._background_rates(
            cortex, lambda f: progress(0.05 + 0.03 * f, "calibrating neuron statistics"))
        progress(0.08, "ranking neurons")
        doc = firing_counts(cortex.model, cortex.lock, self._duals, prefixes,
                            (min(self._layer_ids), max(self._layer_ids)), cfg.fire_fraction)
        allowed = self._quiet(bg_counts, bg_tokens)
        return top_neurons(tfidf(doc, bg_counts, bg_tokens), cfg.gate_top_k, cfg.gate_min_score, allowed)

    def _background_rates(self, cortex: Neocortex, progress: Callable[[float], None]) -> tuple[Tensor, int]:
        """Each learning neuron's firing count over the background (cached in the store), and
        the tokens counted."""
        background = self.context.background() if self.context.background else ""
        if not background:
            raise RuntimeError("sparse gating needs background text to calibrate on")
        return background_rates(self.blobs, cortex, self._duals, self._layer_ids, background,
                                self.config.fire_fraction, self.config.calibration_tokens, progress,
                                questions=self._background_question_pieces(cortex))

    def _quiet(self, bg_counts: Tensor, bg_tokens: int) -> Tensor | None:
        """[L, I] bool: the neurons general use leaves quiet enough to change (None: every one)."""
        cfg = self.config
        if cfg.gate_max_background <= 0:
            return None
        return quiet(bg_counts, bg_tokens, cfg.gate_max_background * cfg.fire_fraction)

    def _sleep_neurons(self, cortex: Neocortex, progress: Progress) -> list[list[Tensor]]:
        """The neurons each try of a sleep opens, per learning layer, widest first. With
        ``sleep_open = "quiet"`` (gated), every neuron gating could ever choose (the pool rehearsed
        together needs more room than each document's own top-k left it), then, should the probe
        roll that back, only those documents changed; otherwise only the latter."""
        changed = [dual.touched_ids() for dual in self._duals]
        cfg = self.config
        if cfg.sleep_open == "changed" or not cfg.gate or cfg.mode == "full":
            return [changed]
        if cfg.gate_max_background <= 0:  # no neuron is too busy to change
            wide = [torch.arange(dual.neurons) for dual in self._duals]
        else:
            allowed = self._quiet(*self._background_rates(
                cortex, lambda f: progress(0.0, f"calibrating neuron statistics ({f:.0%})")))
            assert allowed is not None
            wide = [torch.cat([ids.cpu(), row.nonzero().flatten()]).unique() for ids, row in zip(changed, allowed)]
        return [wide, changed] if _count(wide) > _count(changed) else [changed]

    # --- sleep -------------------------------------------------------------------------------
    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        """Sleep (``engines.ttt.sleep``): up to ``sleep_epochs`` passes over every recalled pair
        with the rows ``sleep_open`` names open, holding general use where the original model
        had it. Stops at the budget (or when it says stop) and keeps the steps taken, unless
        another process saved a learned state meanwhile (that one is kept instead)."""
        with self._training:
            return self._consolidate(budget, progress)

    def _consolidate(self, budget: Budget, progress: Progress) -> ConsolidateReport:
        if budget.interrupted():
            report = self._unchanged("told to stop before it began", progress)
            report.details["interrupted"] = True
            return report
        if self._cortex is None and not self._saved_meta().get("documents"):
            return self._unchanged("nothing learned yet", progress)  # without loading the model
        cortex = self.cortex()
        started, cfg = time.perf_counter(), self.config
        entries = self.recall.draw(len(self.recall), self.revision)
        if not any(dual.touched_ids().numel() for dual in self._duals):
            return self._unchanged("nothing learned yet", progress)
        if not entries:
            return self._unchanged("no recalled pairs to rehearse", progress)
        if self.context.background is None:
            return self._unchanged("no background text to hold general use with", progress)
        attempts = self._sleep_neurons(cortex, progress)
        budget.started()  # checkpoints first: under the training lock, before any change
        pad = cortex.tokenizer.pad_token_id or 0
        pieces = sorted(self._recall_pieces(cortex, entries), key=len)  # similar lengths: little padding
        batches = [collate(b, pad, cortex.device) for b in pack(pieces, cfg.batch_tokens)]
        order = sleep.plan(len(batches), cfg.sleep_epochs, self.revision, budget.steps)

        def held() -> dict[str, Any] | None:
            distilled = self._sleep_distilled(cortex)
            return collate(distilled, pad, cortex.device) if distilled else None

        retried: list[str] = []
        try:
            probe = self._probe(cortex)
            before, base = self._perplexity(cortex, probe), self._perplexity(cortex, probe, as_original=True)
            for n, neurons in enumerate(attempts):
                run = sleep.rehearse(cortex.model, cortex.lock, self._open(neurons), batches, order,
                                     min(self._layer_ids), held, lambda: original(self._duals), cfg.sleep_lr,
                                     cfg.max_grad_norm, cfg.replay_weight,
                                     budget.seconds - (time.perf_counter() - started), progress,
                                     lambda: self._wanted.is_set() or budget.interrupted())
                after = self._perplexity(cortex, probe)
                kept = sleep.probe_keeps(before, after, base, cfg.sleep_probe_bound)
                out_of_time = time.perf_counter() - started >= budget.seconds
                if kept or run.interrupted or out_of_time or n == len(attempts) - 1:
                    break
                self._discard()
                retried.append(f"{_count(neurons)} neurons open rolled back (background prose's perplexity "
                               f"{before:.3f} -> {after:.3f})")
                progress(0.0, f"sleep {retried[-1]}: again with only the {_count(attempts[n + 1])} "
                              "neurons documents changed")
        except BaseException:
            self._discard()
            raise
        details = {**run.details(), "pairs": len(entries), "probe_before": before, "probe_after": after,
                   "probe_original": base, "retried": retried}
        if not kept:
            self._discard()
            reason = (f"rolled back: background prose's perplexity rose from {before:.3f} to {after:.3f}, "
                      f"more than {cfg.sleep_probe_bound:.1%} above both that and the original model's "
                      f"{base:.3f}")
            progress(1.0, f"nothing consolidated: {reason}")
            return ConsolidateReport(engine=self.name, seconds=time.perf_counter() - started, changed=False,
                                     details={**details, "reason": reason})
        with self._saving:  # checked and saved as one: no other writer between
            if self.autosave and self._saved_meta().get("token") != self._token:
                self._discard()
                return self._unchanged("another Engram process saved a learned state while this one "
                                       "slept: that state is kept, the sleep is not", progress)
            changed = self._commit()
            if changed:
                self.revision += 1
                if self.autosave:
                    self._put_live()
        seconds = time.perf_counter() - started
        progress(1.0, f"consolidated in {len(run.losses)} of {len(order)} steps, {seconds:.1f} s")
        return ConsolidateReport(engine=self.name, seconds=seconds, changed=changed > 0, details={
            **details, "neurons_open": _count(neurons), "neurons_changed": changed})

    def _probe(self, cortex: Neocortex) -> Prefix | None:
        """The last ``sleep_probe_tokens`` of the background's everyday prose, as the first
        learning layer receives them (the layers below never change: computed once per sleep)."""
        n = self.config.sleep_probe_tokens
        if not n:
            return None
        assert self.context.background is not None
        prose = self.context.background()[:BACKGROUND_PROSE_CHARS]
        ids = cortex.tokenizer(prose, add_special_tokens=False)["input_ids"][-n:]
        window = self.config.batch_tokens
        pieces = [Piece(ids[i:i + window], ids[i:i + window], "probe") for i in range(0, len(ids), window)]
        batch = collate(pieces, cortex.tokenizer.pad_token_id or 0, cortex.device)
        with cortex.lock:
            return frozen_prefix(cortex.model, batch, min(self._layer_ids))

    def _perplexity(self, cortex: Neocortex, probe: Prefix | None, as_original: bool = False) -> float | None:
        """The probe's perplexity now, or as the original model had it (``as_original``): a sleep
        may bring it back up to the original's (replay in learning can push it below), not past."""
        if probe is None:
            return None
        with cortex.lock, torch.no_grad(), original(self._duals) if as_original else nullcontext():
            return float(torch.exp(labelled_loss(cortex.model, probe, min(self._layer_ids))))

    def _saved_meta(self) -> dict[str, Any]:
        """The saved live state's summary (read without loading the state)."""
        return self.blobs.meta(LIVE_KEY) or {}

    def _unchanged(self, reason: str, progress: Progress) -> ConsolidateReport:
        progress(1.0, f"nothing consolidated: {reason}")
        return ConsolidateReport(engine=self.name, seconds=0.0, changed=False, details={"reason": reason})

    def _sleep_distilled(self, cortex: Neocortex) -> list[Piece]:
        """The next background prose and questions, held where the original model had them."""
        n = self.config.sleep_distill_tokens
        return ([self._replay_piece(cortex, n)] if n else []) + self._replay_questions(cortex)

    # --- answering ---------------------------------------------------------------------------
    @property
    def state_label(self) -> str:
        origin = f", from checkpoint '{self.origin}'" if self.origin else ""
        return f"ttt rev {self.revision}: {self.documents} documents{origin}"

    @contextmanager
    def route(self, queries: Sequence[str]) -> Iterator[None]:
        """Answer row ``b`` of the next batches with the share of the learned weights that
        ``queries[b]`` calls for (the cortex's router; enter it holding the cortex lock)."""
        shares = self._shares(queries) if self.alpha < 1.0 and self._duals else None
        if shares is None:
            yield
            return
        with shared(self._duals, shares):
            yield

    def _shares(self, queries: Sequence[str]) -> Tensor | None:
        """Each query's share of the learned weights (None: unrouted, all of them)."""
        if not self.config.route:
            return None
        try:
            return self.router.shares(torch.from_numpy(self.context.embed(list(queries))))
        except ValueError as exc:
            log.warning("answering unrouted: %s", exc)
            return None

    def contribute(self, query: Query) -> Contribution:
        if self.documents == 0 and self._cortex is None:
            meta = self._saved_meta()
            if not meta.get("documents"):
                return Contribution(engine=self.name)
            self.cortex()  # load the saved state so that the label below is right
        if self.documents == 0:
            return Contribution(engine=self.name)
        asked = routing_query([m.content for m in query.history if m.role == "user"] + [query.text])
        shares = self._shares([asked])
        share = "" if shares is None else f"{float(shares[0]):.0%} of the "
        return Contribution(engine=self.name, learned_states=[self.state_label],
                            notes=[f"answered with {share}weights learned from {self.documents} documents"])

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cortex = self.cortex()
        with cortex.lock:  # a consistent snapshot: not halfway through a commit
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": STATE_FORMAT, "documents": self.documents, "alpha": self.alpha,
            "revision": self.revision, "layers": self._layer_ids, "mode": self.config.mode,
            "neurons": self._duals[0].neurons, "hidden": int(self._duals[0].gate.shape[1]),
            "replay_at": self._replay_at, "origin": self.origin,
            "recall": self.recall.to_json(),
        }
        state.update({f"router.{k}": v for k, v in self.router.state().items()})
        for i, dual in zip(self._layer_ids, self._duals):
            for part, tensor in dual.learned().items():
                state[f"layer{i}.{part}"] = tensor
        return state

    def load_state_dict(self, state: dict[str, Any], origin: str | None = None) -> None:
        """Make ``state`` the learned weights (validated first: a mismatch changes nothing);
        waits for a document being learned to finish (a sleep stops at its next step)."""
        self.cortex()
        with self._exclusive():
            self._apply(state)
            self.origin = origin
            if self.autosave:
                self.save_live()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The training lock for a reset or a load, asking a running sleep to stop first."""
        self._wanted.set()
        try:
            with self._training:
                self._wanted.clear()
                yield
        finally:
            self._wanted.clear()

    def _apply(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown ttt state format {state.get('format')!r}")
        if list(state.get("layers", [])) != self._layer_ids:
            raise ValueError(f"the state was learned in layers {state.get('layers')}, this model "
                             f"learns in {self._layer_ids} (setting ttt.layers)")
        parts = {i: {p: state.get(f"layer{i}.{p}") for p in ("ids", "gate", "up", "down")}
                 for i in self._layer_ids}
        if any(t is None for layer in parts.values() for t in layer.values()):
            raise ValueError("the state misses some layers' rows")
        for i, dual in zip(self._layer_ids, self._duals):
            dual.check_learned(parts[i])  # type: ignore[arg-type]
        try:
            documents, alpha = int(state["documents"]), float(state["alpha"])
            revision, replay_at = int(state.get("revision", documents)), int(state.get("replay_at", 0))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"the state's counters are missing or not numbers ({exc})") from None
        recall = RecallPool.from_json(state.get("recall"), self.config.recall_pool)
        present = DocumentStore(self.context.db).document_ids()
        recall.keep(present)  # not those that left since
        router = self._loaded_router(state, present, recall)
        with self._cortex.lock:  # type: ignore[union-attr]
            for i, dual in zip(self._layer_ids, self._duals):
                dual.load_learned(parts[i])  # type: ignore[arg-type]
            self.documents, self.revision, self._replay_at = documents, revision, replay_at
            self.recall, self.router = recall, router
            self._set_alpha(alpha)
        self.origin = None

    def _loaded_router(self, state: dict[str, Any], present: set[int], recall: RecallPool) -> DeltaRouter:
        """The state's router, kept to the documents still present. A state learned before
        routing has no keys: those of the documents it recalls are embedded from the store."""
        router = DeltaRouter(self.config.route_low, self.config.route_high)
        if "router.keys" in state:
            try:
                router.load({"keys": state["router.keys"], "owners": state.get("router.owners")})
            except ValueError as exc:
                raise RouterKeysError(f"unreadable router keys ({exc})") from None
            router.keep(present)
        else:
            self._rekey(router, recall.documents() & present)
        return router

    def _apply_fresh(self) -> None:
        with self._cortex.lock:  # type: ignore[union-attr]
            for dual in self._duals:
                dual.reset()
            self.documents = self.revision = self._replay_at = 0
            self.recall = RecallPool(self.config.recall_pool)
            self.router.clear()
            self._set_alpha(1.0)
        self.origin = None

    def save_live(self) -> None:
        """One writer at a time: a forget (scan thread) may save while a learn (worker) does."""
        with self._saving:
            self._put_live()

    def _put_live(self) -> None:
        """Save, under a new token: a sleep saves only over the state its process holds."""
        token = uuid.uuid4().hex
        self.blobs.put(LIVE_KEY, "state", self.state_dict(),
                       meta={"documents": self.documents, "revision": self.revision,
                             "label": self.state_label, "origin": self.origin, "token": token})
        self._token = token

    def reset(self) -> None:
        """Forget every learned weight: the model answers as the original again (after a
        document being learned finishes; a sleep stops at its next step)."""
        self.cortex()
        with self._exclusive():
            self._apply_fresh()
            if self.autosave:
                self.save_live()

    def close(self) -> None:
        """Take the DualMLPs out of the model (the bench reuses one model for several runs)."""
        with self._setup:
            if self._cortex is not None:
                with self._cortex.lock:
                    uninstall(self._cortex.model)
                    if getattr(self._cortex, "router", None) == self.route:
                        self._cortex.router = None  # type: ignore[misc]
                self._cortex = None
                self._duals = []

    def forget(self, document_id: int) -> None:
        self.forget_many([document_id])

    def forget_many(self, document_ids: list[int]) -> None:
        """Stop recalling the documents' pairs and routing questions to what they taught (their
        router keys leave). (What their training wrote into the rows stays:
        weights cannot un-learn one document; ``reset`` or a checkpoint goes back.) Before the
        model is loaded there is nothing to do: a saved pool is matched against the store when
        it is loaded."""
        ids = set(document_ids)
        with self._keeping:
            self._forgotten |= ids
            if self._cortex is None:
                return
            dropped = self.recall.drop(ids)
            unrouted = self.router.drop(ids)
        if (dropped or unrouted) and self.autosave:
            self.save_live()

    def stats(self) -> dict[str, Any]:
        """What is learned; before the model is loaded, the saved state's summary (no loading)."""
        if self._cortex is None:
            saved = self._saved_meta()
            return {"documents": int(saved.get("documents", 0)), "revision": int(saved.get("revision", 0)),
                    "label": saved.get("label", self.state_label), "origin": saved.get("origin"),
                    "mode": self.config.mode, "gate": self.config.gate, "loaded": False}
        touched = {i: int(d.touched.sum()) for i, d in zip(self._layer_ids, self._duals)}
        return {"documents": self.documents, "revision": self.revision, "alpha": self.alpha,
                "label": self.state_label, "layers": self._layer_ids, "mode": self.config.mode,
                "gate": self.config.gate, "neurons_touched": touched, "origin": self.origin,
                "recall_pairs": len(self.recall),
                "router_keys": len(self.router), "routed": self.config.route,
                "loaded": True}


def _trained_tokens(batches: list[dict[str, Any]], replay: list[dict[str, Any]]) -> int:
    """Tokens one pass runs forward and back: each material batch and the distillation batch
    cycled beside it."""
    material = sum(int(b["attention_mask"].sum()) for b in batches)
    distilled = sum(int(replay[n % len(replay)]["attention_mask"].sum()) for n in range(len(batches))) if replay else 0
    return material + distilled


def _count(neurons: list[Tensor]) -> int:
    """Neurons over every learning layer."""
    return sum(int(ids.numel()) for ids in neurons)
