"""A learning step: one document's material -> gate -> train -> keep.

1. material (``material``): the document's windows and rehearsal pieces, earlier documents'
   pairs recalled beside them, packed into mini-batches with background text replayed in each;
2. gate (``gating``): the rows this document may change;
3. ``alpha`` decays one notch (towards ``alpha_floor``), then Adam steps on the open rows
   (``trainer``), each step's loss reported as progress;
4. the rows are written back, the document's pairs join the recall pool and its keys the
   router, and the learned state is saved through the store (so the next start answers with it).

Nothing is committed until the document is fully learned: a process that dies mid-document
leaves the previous learned state, and its learn job runs again on the next start.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch import Tensor
from torch.nn import Parameter

from engines.base import DocumentInput, EngineContext, LearnReport, Neocortex, Progress
from engines.ttt import rehearsal
from engines.ttt.config import TTTConfig
from engines.ttt.gating import Gate, count
from engines.ttt.material import (
    Background,
    batches,
    document_material,
    recall_pieces,
    trained_tokens,
)
from engines.ttt.persistence import LiveState
from engines.ttt.routing import Routing
from engines.ttt.state import NAME, Part, TTTState
from engines.ttt.trainer import Piece, Prefix, TrainReport, frozen_prefixes, train
from models.dual_mlp import original


def next_alpha(config: TTTConfig, alpha: float) -> float:
    """``alpha`` one notch down towards ``alpha_floor`` (``full`` mode: the learned copy alone)."""
    if config.mode == "full":
        return 0.0
    return max(config.alpha_floor, alpha * config.alpha_decay)


class Learner(Part):
    """Learns one document at a time into the open rows (the caller holds the training lock)."""

    def __init__(self, context: EngineContext, state: TTTState, background: Background, gate: Gate,
                 routing: Routing, live: LiveState, cortex: Callable[[], Neocortex]) -> None:
        super().__init__(context, state)
        self.background = background
        self.gate = gate
        self.routing = routing
        self.live = live
        self.cortex = cortex

    def learn(self, document: DocumentInput, progress: Progress) -> LearnReport:
        started = time.perf_counter()
        cortex = self.cortex()
        progress(0.0, "preparing the material")
        material = document_material(cortex, document, self.config, self.context.generator)
        self.state.forgotten.discard(document.document_id)  # it is back
        self.state.recall.drop({document.document_id})  # an earlier version's pairs are stale
        if not material.pieces:
            progress(1.0, "nothing to learn (empty document)")
            return LearnReport(engine=NAME, path=document.path, seconds=0.0, changed=False)
        # recall rehearses pairs only where the documents' own pairs are trained
        pairs = material.pairs if self.config.rehearsal_qa else []
        keys = self.routing.keys(material.text)
        recalled = self._recalled(cortex, document.document_id, len(pairs))
        pieces = sorted(material.pieces + recalled, key=len)  # similar lengths share a batch: less padding
        own, distilled = batches(cortex, pieces, self.config, self.background)
        prefixes, replayed = self._prefixes(cortex, own, distilled, progress)
        neurons = self.gate.for_document(cortex, prefixes, progress)
        self.state.set_alpha(next_alpha(self.config, self.state.alpha))
        params = self.state.open(neurons)
        if not params:
            progress(1.0, "no neuron passed the gate: nothing learned")
            return LearnReport(engine=NAME, path=document.path, changed=False, tokens=material.tokens,
                               seconds=time.perf_counter() - started)
        result = self._train(cortex, params, prefixes, replayed, progress)
        changed = self.state.commit()
        self._keep(document.document_id, pairs, keys)
        if self.live.autosave:
            progress(0.99, "saving the learned state")
            self.live.save()
        seconds = time.perf_counter() - started
        progress(1.0, f"learned in {seconds:.1f} s (loss {result.first_loss:.2f} -> {result.last_loss:.2f})")
        return LearnReport(
            engine=NAME, path=document.path, seconds=seconds, changed=changed > 0, tokens=material.tokens,
            details={"steps": result.steps, "loss_first_pass": result.first_loss,
                     "loss_last_pass": result.last_loss, "neurons_changed": changed,
                     "neurons_open": count(neurons), "alpha": self.state.alpha,
                     "material_tokens": sum(len(p) for p in pieces), "recalled_pairs": len(recalled),
                     "trained_tokens": trained_tokens(own, distilled) * self.config.passes,
                     "tokens_per_second": material.tokens / seconds if seconds > 0 else 0.0},
        )

    def _recalled(self, cortex: Neocortex, document_id: int, new_pairs: int) -> list[Piece]:
        """``recall_per_pair`` earlier pairs per new pair, drawn at random from the pool (seeded
        by the revision: the same state learning the same document draws the same pairs)."""
        drawn = self.state.recall.draw(self.config.recall_per_pair * new_pairs, self.state.revision,
                                       exclude=document_id)
        return recall_pieces(cortex.tokenizer, drawn, self.config.rehearsal_system)

    def _prefixes(self, cortex: Neocortex, own: list[dict[str, Tensor]], distilled: list[dict[str, Tensor]],
                  progress: Progress) -> tuple[list[Prefix], list[Prefix]]:
        """What the frozen layers below the first learning one make of the material batches and
        of the distillation batches (they never change: run once per document)."""
        prefixes = list(frozen_prefixes(cortex.model, cortex.lock, own + distilled, self.state.first,
                                        lambda f: progress(0.05 * f, "running the frozen layers")))
        return prefixes[:len(own)], prefixes[len(own):]

    def _train(self, cortex: Neocortex, params: list[Parameter], prefixes: list[Prefix],
               replayed: list[Prefix], progress: Progress) -> TrainReport:
        """``passes`` Adam steps per batch on the open rows; on any failure they close unwritten."""
        cfg = self.config

        def report(step: int, steps: int, loss: float) -> None:
            progress(0.1 + 0.88 * step / steps, f"step {step}/{steps} loss {loss:.3f}")

        try:
            return train(cortex.model, cortex.lock, params, prefixes, cfg.passes, cfg.lr, cfg.max_grad_norm,
                         report, first=self.state.first, replay=replayed,
                         original=lambda: original(self.state.duals), replay_weight=cfg.replay_weight)
        except BaseException:
            self.state.discard()
            raise

    def _keep(self, document_id: int, pairs: list[rehearsal.QA], keys: Tensor) -> None:
        """The document's pairs join the recall pool and its keys the router (unless it was
        forgotten while being learned), and it counts as learned."""
        s = self.state
        with s.keeping:
            if document_id not in s.forgotten:
                s.recall.add(document_id, [(qa.question, qa.answer) for qa in pairs], s.revision)
                s.router.add(document_id, keys)
        s.documents += 1
        s.revision += 1
