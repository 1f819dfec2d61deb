"""Sleep for the ttt engine: everything learned so far rehearsed at once, kept only if harmless.

Learning a document rehearses only a few earlier pairs beside it; sleep (``sleep.rehearse``)
has time for the whole recall pool, with the rows ``gating`` names open and the original
model's predictions held on background text. It keeps the steps it took within its budget or
until told to stop, and nothing when it fails, when it made background prose (a probe measured
before and after) more perplexing than the bound, or when another process saved a learned
state meanwhile (that one is kept instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from engines.base import Budget, ConsolidateReport, EngineContext, Neocortex, Progress
from engines.ttt import sleep
from engines.ttt.gating import Gate, count
from engines.ttt.material import Background, recall_pieces
from engines.ttt.persistence import LiveState
from engines.ttt.recall import RecallEntry
from engines.ttt.state import NAME, Part, TTTState
from engines.ttt.trainer import (
    Piece,
    Prefix,
    collate,
    frozen_prefix,
    labelled_loss,
    pack,
)
from models.dual_mlp import original

Batch = dict[str, Any]


def unchanged(reason: str, progress: Progress) -> ConsolidateReport:
    """A sleep that changed nothing, and why."""
    progress(1.0, f"nothing consolidated: {reason}")
    return ConsolidateReport(engine=NAME, seconds=0.0, changed=False, details={"reason": reason})


@dataclass
class Tries:
    """How the tries of a sleep ended: the last one's run, rows and probe, and those rolled back."""

    run: sleep.SleepRun
    neurons: list[Tensor]
    kept: bool
    before: float | None
    after: float | None
    base: float | None
    retried: list[str] = field(default_factory=list)


class Consolidation(Part):
    """Sleep over the recall pool (the caller holds the training lock)."""

    def __init__(self, context: EngineContext, state: TTTState, background: Background, gate: Gate,
                 live: LiveState, cortex: Callable[[], Neocortex]) -> None:
        super().__init__(context, state)
        self.background = background
        self.gate = gate
        self.live = live
        self.cortex = cortex

    def consolidate(self, budget: Budget, progress: Progress) -> ConsolidateReport:
        if budget.interrupted():
            report = unchanged("told to stop before it began", progress)
            report.details["interrupted"] = True
            return report
        if self.state.cortex is None and not self.live.meta().get("documents"):
            return unchanged("nothing learned yet", progress)  # without loading the model
        cortex = self.cortex()
        started = time.perf_counter()
        entries = self.state.recall.draw(len(self.state.recall), self.state.revision)
        reason = self._nothing_to_rehearse(entries)
        if reason:
            return unchanged(reason, progress)
        attempts = self.gate.for_sleep(cortex, progress)
        budget.started()  # checkpoints first: under the training lock, before any change
        batches = self._batches(cortex, entries)
        order = sleep.plan(len(batches), self.config.sleep_epochs, self.state.revision, budget.steps)
        try:
            tries = self._tries(cortex, attempts, batches, order, budget, started, progress)
        except BaseException:
            self.state.discard()
            raise
        details = {**tries.run.details(), "pairs": len(entries), "probe_before": tries.before,
                   "probe_after": tries.after, "probe_original": tries.base, "retried": tries.retried}
        if not tries.kept:
            return self._rolled_back(tries, details, started, progress)
        return self._keep(tries, details, len(order), started, progress)

    def _nothing_to_rehearse(self, entries: list[RecallEntry]) -> str:
        """Why a sleep cannot start with the model loaded ("": it can)."""
        if not any(dual.touched_ids().numel() for dual in self.state.duals):
            return "nothing learned yet"
        if not entries:
            return "no recalled pairs to rehearse"
        if not self.background.present:
            return "no background text to hold general use with"
        return ""

    def _batches(self, cortex: Neocortex, entries: list[RecallEntry]) -> list[Batch]:
        pad = cortex.tokenizer.pad_token_id or 0
        pieces = sorted(recall_pieces(cortex.tokenizer, entries, self.config.rehearsal_system),
                        key=len)  # similar lengths: little padding
        return [collate(b, pad, cortex.device) for b in pack(pieces, self.config.batch_tokens)]

    def _tries(self, cortex: Neocortex, attempts: list[list[Tensor]], batches: list[Batch], order: list[int],
               budget: Budget, started: float, progress: Progress) -> Tries:
        """Rehearse with each try's rows open, widest first, until one keeps the probe within its
        bound (or the budget, a stop or the last try ends it); each rolled-back try is discarded."""
        cfg, pad = self.config, cortex.tokenizer.pad_token_id or 0

        def held() -> Batch | None:
            distilled = self._distilled(cortex.tokenizer)
            return collate(distilled, pad, cortex.device) if distilled else None

        retried: list[str] = []
        probe = self.probe(cortex)
        before, base = self.perplexity(cortex, probe), self.perplexity(cortex, probe, as_original=True)
        for n, neurons in enumerate(attempts):
            run = sleep.rehearse(cortex.model, cortex.lock, self.state.open(neurons), batches, order,
                                 self.state.first, held, lambda: original(self.state.duals), cfg.sleep_lr,
                                 cfg.max_grad_norm, cfg.replay_weight,
                                 budget.seconds - (time.perf_counter() - started), progress,
                                 lambda: self.state.wanted.is_set() or budget.interrupted())
            after = self.perplexity(cortex, probe)
            kept = sleep.probe_keeps(before, after, base, cfg.sleep_probe_bound)
            out_of_time = time.perf_counter() - started >= budget.seconds
            if kept or run.interrupted or out_of_time or n == len(attempts) - 1:
                break
            self.state.discard()
            retried.append(f"{count(neurons)} neurons open rolled back (background prose's perplexity "
                           f"{before:.3f} -> {after:.3f})")
            progress(0.0, f"sleep {retried[-1]}: again with only the {count(attempts[n + 1])} "
                          "neurons documents changed")
        return Tries(run, neurons, kept, before, after, base, retried)

    def _rolled_back(self, tries: Tries, details: dict[str, Any], started: float,
                     progress: Progress) -> ConsolidateReport:
        self.state.discard()
        reason = (f"rolled back: background prose's perplexity rose from {tries.before:.3f} to "
                  f"{tries.after:.3f}, more than {self.config.sleep_probe_bound:.1%} above both that and "
                  f"the original model's {tries.base:.3f}")
        progress(1.0, f"nothing consolidated: {reason}")
        return ConsolidateReport(engine=NAME, seconds=time.perf_counter() - started, changed=False,
                                 details={**details, "reason": reason})

    def _keep(self, tries: Tries, details: dict[str, Any], planned: int, started: float,
              progress: Progress) -> ConsolidateReport:
        """Commit and save the rehearsed rows, unless another process saved meanwhile."""
        s, live = self.state, self.live
        with s.saving:  # checked and saved as one: no other writer between
            if live.autosave and live.meta().get("token") != s.token:
                s.discard()
                return unchanged("another Engram process saved a learned state while this one "
                                 "slept: that state is kept, the sleep is not", progress)
            changed = s.commit()
            if changed:
                s.revision += 1
                if live.autosave:
                    live.put()
        seconds = time.perf_counter() - started
        progress(1.0, f"consolidated in {len(tries.run.losses)} of {planned} steps, {seconds:.1f} s")
        return ConsolidateReport(engine=NAME, seconds=seconds, changed=changed > 0, details={
            **details, "neurons_open": count(tries.neurons), "neurons_changed": changed})

    def probe(self, cortex: Neocortex) -> Prefix | None:
        """The last ``sleep_probe_tokens`` of the background's everyday prose, as the first
        learning layer receives them (the layers below never change: computed once per sleep)."""
        n = self.config.sleep_probe_tokens
        if not n:
            return None
        ids = cortex.tokenizer(self.background.prose(), add_special_tokens=False)["input_ids"][-n:]
        window = self.config.batch_tokens
        pieces = [Piece(ids[i:i + window], ids[i:i + window], "probe") for i in range(0, len(ids), window)]
        batch = collate(pieces, cortex.tokenizer.pad_token_id or 0, cortex.device)
        with cortex.lock:
            return frozen_prefix(cortex.model, batch, self.state.first)

    def perplexity(self, cortex: Neocortex, probe: Prefix | None, as_original: bool = False) -> float | None:
        """The probe's perplexity now, or as the original model had it (``as_original``): a sleep
        may bring it back up to the original's (replay in learning can push it below), not past."""
        if probe is None:
            return None
        with cortex.lock, torch.no_grad(), original(self.state.duals) if as_original else nullcontext():
            return float(torch.exp(labelled_loss(cortex.model, probe, self.state.first)))

    def _distilled(self, tokenizer: Any) -> list[Piece]:
        """The next background prose and questions, held where the original model had them."""
        n = self.config.sleep_distill_tokens
        return ([self.background.piece(tokenizer, n)] if n else []) + self.background.questions(tokenizer)
