"""Sparse memory gating: which neurons' rows a document, or a sleep, may change.

The neurons that fire far more on a document than in general use (TF-IDF against background
rates on prose and chat questions, measured once and cached by ``calibration``), among those
that general use rarely wakes, are the only ones opened for training, at most ``gate_top_k``
per layer. Rows general use never runs through can change without changing how it is answered.
With the gate off (or in ``full`` mode) every neuron is open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from engines.base import EngineContext, Neocortex, Progress
from engines.ttt.calibration import background_rates
from engines.ttt.material import Background
from engines.ttt.state import Part, TTTState
from engines.ttt.trainer import Prefix, firing_counts
from models.neuron_gate import quiet, tfidf, top_neurons
from store.blobs import BlobStore


def count(neurons: Sequence[Tensor]) -> int:
    """Neurons over every learning layer."""
    return sum(int(ids.numel()) for ids in neurons)


class Gate(Part):
    """Chooses the rows each training opens, from firing counts against the background's."""

    def __init__(self, context: EngineContext, state: TTTState, blobs: BlobStore, background: Background) -> None:
        super().__init__(context, state)
        self.blobs = blobs
        self.background = background

    def rates(self, cortex: Neocortex, progress: Callable[[float], None]) -> tuple[Tensor, int]:
        """Each learning neuron's firing count over the background (cached in the store), and
        the tokens counted."""
        background = self.context.background() if self.context.background else ""
        if not background:
            raise RuntimeError("sparse gating needs background text to calibrate on")
        return background_rates(self.blobs, cortex, self.state.duals, self.state.layer_ids, background,
                                self.config.fire_fraction, self.config.calibration_tokens, progress,
                                questions=self.background.question_pieces(cortex.tokenizer))

    def quiet(self, counts: Tensor, tokens: int) -> Tensor | None:
        """[L, I] bool: the neurons general use leaves quiet enough to change (None: every one)."""
        cfg = self.config
        if cfg.gate_max_background <= 0:
            return None
        return quiet(counts, tokens, cfg.gate_max_background * cfg.fire_fraction)

    def for_document(self, cortex: Neocortex, prefixes: list[Prefix], progress: Progress) -> list[Tensor]:
        """Per learning layer, the neurons this document may change (counted over the
        document's own material: not replay, not recalled pairs)."""
        every = torch.arange(self.state.duals[0].neurons)
        cfg = self.config
        if not cfg.gate or cfg.mode == "full":
            return [every for _ in self.state.duals]
        counts, tokens = self.rates(cortex, lambda f: progress(0.05 + 0.03 * f, "calibrating neuron statistics"))
        progress(0.08, "ranking neurons")
        doc = firing_counts(cortex.model, cortex.lock, self.state.duals, prefixes, self.state.span,
                            cfg.fire_fraction)
        allowed = self.quiet(counts, tokens)
        return top_neurons(tfidf(doc, counts, tokens), cfg.gate_top_k, cfg.gate_min_score, allowed)

    def for_sleep(self, cortex: Neocortex, progress: Progress) -> list[list[Tensor]]:
        """The neurons each try of a sleep opens, per learning layer, widest first. With
        ``sleep_open = "quiet"`` (gated), every neuron gating could ever choose (the pool rehearsed
        together needs more room than each document's own top-k left it), then, should the probe
        roll that back, only those documents changed; otherwise only the latter."""
        changed = [dual.touched_ids() for dual in self.state.duals]
        cfg = self.config
        if cfg.sleep_open == "changed" or not cfg.gate or cfg.mode == "full":
            return [changed]
        if cfg.gate_max_background <= 0:  # no neuron is too busy to change
            wide = [torch.arange(dual.neurons) for dual in self.state.duals]
        else:
            allowed = self.quiet(*self.rates(
                cortex, lambda f: progress(0.0, f"calibrating neuron statistics ({f:.0%})")))
            assert allowed is not None
            wide = [torch.cat([ids.cpu(), row.nonzero().flatten()]).unique() for ids, row in zip(changed, allowed)]
        return [wide, changed] if count(wide) > count(changed) else [changed]
