"""TTT-E2E with sparse memory finetuning: documents written into the neocortex's MLP weights.

Test-time training (TTT-E2E) keeps learning at use time by taking gradient steps on the MLPs of
the last quarter of the decoder layers. Here each of those MLPs becomes a ``DualMLP`` (the
original frozen beside a trainable copy, mixed by ``alpha``). This module is the engine protocol
over the parts, one job each:

- ``state``: the neocortex with its DualMLPs, what is learned, and the locks around it;
- ``material``: what a document is trained as, with recalled pairs and background replay;
- ``gating``: which neurons' rows a training may change (``calibration`` measures general use);
- ``learning``: a learning step, material -> gate -> train (``trainer``) -> keep;
- ``consolidation``: sleep, everything learned rehearsed at once (``sleep``);
- ``routing``: how much of the learned weights each question gets;
- ``persistence``: the learned state saved through the store, and loaded back.

Chat must answer with the torch model for the learned weights to count, so ``contribute`` names
the learned state once there is one; the chat service then switches to the neocortex, whose
router (set when the model is loaded) routes each answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

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
from engines.ttt.config import TTTConfig
from engines.ttt.consolidation import Consolidation
from engines.ttt.gating import Gate
from engines.ttt.learning import Learner
from engines.ttt.material import Background
from engines.ttt.persistence import LiveState
from engines.ttt.routing import Routing
from engines.ttt.state import NAME, TTTState
from engines.ttt.trainer import Piece, Prefix
from models.delta_router import DeltaRouter
from models.dual_mlp import DualMLP
from store.blobs import BlobStore


class TTTEngine(Engine):
    name = NAME
    learns_documents = True
    writes_weights = True

    def __init__(self, context: EngineContext, config: TTTConfig | None = None) -> None:
        self.context = context
        self.blobs = BlobStore(context.db, context.data_dir)
        self.state = TTTState(config or TTTConfig())
        self.background = Background(context, self.state)
        self.gate = Gate(context, self.state, self.blobs, self.background)
        self.routing = Routing(context, self.state)
        self.live = LiveState(context, self.state, self.blobs, self.routing, self.cortex)
        self.learner = Learner(context, self.state, self.background, self.gate, self.routing, self.live,
                               self.cortex)
        self.consolidation = Consolidation(context, self.state, self.background, self.gate, self.live, self.cortex)

    def cortex(self) -> Neocortex:
        """The neocortex with DualMLPs installed and the saved learned state restored."""
        with self.state.setup:
            if self.state.cortex is None:
                if self.context.neocortex is None:
                    raise RuntimeError("the ttt engine needs a neocortex (a torch model) and the app gave none")
                cortex = self.context.neocortex()
                self.state.install(cortex, self.routing.route)
                # the token before the state: a save in between makes a sleep refuse, not overwrite
                self.state.token = self.live.meta().get("token")
                self.live.restore(cortex.model_name)
            return self.state.cortex  # type: ignore[return-value]

    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        with self.state.training:  # one training at a time: learning and sleep open the same rows
            return self.learner.learn(document, progress)

    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        """Sleep (``engines.ttt.consolidation``): up to ``sleep_epochs`` passes over every recalled
        pair with the rows ``sleep_open`` names open, holding general use where the original model
        had it. Stops at the budget (or when it says stop) and keeps the steps taken, unless
        another process saved a learned state meanwhile (that one is kept instead)."""
        with self.state.training:
            return self.consolidation.consolidate(budget, progress)

    def contribute(self, query: Query) -> Contribution:
        """Names the learned state, so that chat answers with the neocortex, once there is one."""
        if self.state.documents == 0 and self.state.cortex is None:
            if not self.live.meta().get("documents"):
                return Contribution(engine=self.name)
            self.cortex()  # load the saved state so that the label below is right
        if self.state.documents == 0:
            return Contribution(engine=self.name)
        asked = routing_query([m.content for m in query.history if m.role == "user"] + [query.text])
        shares = self.routing.shares([asked])
        share = "" if shares is None else f"{float(shares[0]):.0%} of the "
        routed = {} if shares is None else {"routed_share": round(float(shares[0]), 4)}
        return Contribution(engine=self.name, learned_states=[self.state_label], meta=routed,
                            system=self.config.rehearsal_system,
                            notes=[f"answered with {share}weights learned from {self.state.documents} documents"])

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.live.state_dict()

    def load_state_dict(self, state: dict[str, Any], origin: str | None = None) -> None:
        """Make ``state`` the learned weights (validated first: a mismatch changes nothing);
        waits for a document being learned to finish (a sleep stops at its next step)."""
        self.cortex()
        with self.state.exclusive():
            self.live.apply(state)
            self.state.origin = origin
            if self.autosave:
                self.save_live()

    def reset(self) -> None:
        """Forget every learned weight: the model answers as the original again (after a
        document being learned finishes; a sleep stops at its next step)."""
        self.cortex()
        with self.state.exclusive():
            self.state.fresh()
            if self.autosave:
                self.save_live()

    def save_live(self) -> None:
        """One writer at a time: a forget (scan thread) may save while a learn (worker) does."""
        self.live.save()

    def load_weights(self) -> None:
        self.cortex()

    def close(self) -> None:
        """Take the DualMLPs out of the model (the bench reuses one model for several runs)."""
        with self.state.setup:
            self.state.uninstall(self.routing.route)

    def forget(self, document_id: int) -> None:
        self.forget_many([document_id])

    def forget_many(self, document_ids: list[int]) -> None:
        """Stop recalling the documents' pairs and routing questions to what they taught (their
        router keys leave). (What their training wrote into the rows stays:
        weights cannot un-learn one document; ``reset`` or a checkpoint goes back.) Before the
        model is loaded there is nothing to do: a saved pool is matched against the store when
        it is loaded."""
        ids, s = set(document_ids), self.state
        with s.keeping:
            s.forgotten |= ids
            if s.cortex is None:
                return
            dropped = s.recall.drop(ids)
            unrouted = s.router.drop(ids)
        if (dropped or unrouted) and self.autosave:
            self.save_live()

    def rehearsed(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        """Up to ``n`` of the question/answer pairs the weights were trained on (from the recall
        pool): asked closed-book, they tell weights that never took the material in from weights
        that took it in but do not answer it when it is asked another way."""
        return [(e.question, e.answer) for e in self.state.recall.draw(n, seed)]

    def stats(self) -> dict[str, Any]:
        """What is learned; before the model is loaded, the saved state's summary (no loading)."""
        s, cfg = self.state, self.config
        if s.cortex is None:
            saved = self.live.meta()
            return {"documents": int(saved.get("documents", 0)), "revision": int(saved.get("revision", 0)),
                    "label": saved.get("label", s.label), "origin": saved.get("origin"),
                    "mode": cfg.mode, "gate": cfg.gate, "loaded": False}
        touched = {i: int(d.touched.sum()) for i, d in zip(s.layer_ids, s.duals)}
        return {"documents": s.documents, "revision": s.revision, "alpha": s.alpha,
                "label": s.label, "layers": s.layer_ids, "mode": cfg.mode,
                "gate": cfg.gate, "neurons_touched": touched, "origin": s.origin,
                "recall_pairs": len(s.recall),
                "router_keys": len(s.router), "routed": cfg.route,
                "loaded": True}

    # --- what other code reads off the engine ---------------------------------------------------
    @property
    def config(self) -> TTTConfig:
        """The settings every part works under (replaceable: the bench and the tests do)."""
        return self.state.config

    @config.setter
    def config(self, config: TTTConfig) -> None:
        self.state.config = config

    @property
    def autosave(self) -> bool:
        """Whether every change is saved (the bench turns it off: it throws its states away)."""
        return self.live.autosave

    @autosave.setter
    def autosave(self, on: bool) -> None:
        self.live.autosave = on

    @property
    def state_label(self) -> str:
        return self.state.label

    @property
    def documents(self) -> int:
        return self.state.documents

    @property
    def revision(self) -> int:
        return self.state.revision

    @property
    def router(self) -> DeltaRouter:
        return self.state.router

    # --- the parts the tests reach in to check -------------------------------------------------
    @property
    def _duals(self) -> list[DualMLP]:
        return self.state.duals

    @property
    def _layer_ids(self) -> list[int]:
        return self.state.layer_ids

    @property
    def _training(self) -> threading.Lock:
        return self.state.training

    def _background_question_pieces(self, cortex: Neocortex) -> list[Piece]:
        return self.background.question_pieces(cortex.tokenizer)

    def _background_rates(self, cortex: Neocortex, progress: Callable[[float], None]) -> tuple[Tensor, int]:
        return self.gate.rates(cortex, progress)

    def _quiet(self, counts: Tensor, tokens: int) -> Tensor | None:
        return self.gate.quiet(counts, tokens)

    def _probe(self, cortex: Neocortex) -> Prefix | None:
        return self.consolidation.probe(cortex)

    def _perplexity(self, cortex: Neocortex, probe: Prefix | None, as_original: bool = False) -> float | None:
        return self.consolidation.perplexity(cortex, probe, as_original)
