"""The hidden-state tier as an engine: documents in as hidden states, a logit reward out.

- ``learn(document)`` (a learn job in the worker, never on the question path): the neocortex (the
  torch copy of the chat model the weight engines load) reads each chunk on its own and its last
  hidden states, with the chunk's token ids, are stored by chunk id (``store.chunk_states``) with
  the fingerprint of the weights that computed them (``engines.hidden.fingerprint``); they leave
  with the chunk.
- ``consolidate`` (sleep), ``fill`` (``engram hidden fill``) and ``refresh`` (the idle worker,
  once ttt or cls changed the weights: ``app.jobs.refresh``): the same for documents indexed
  before the tier was on, and for states gone stale (the weights changed since). The tier reads
  the weights (``reads_weights``): sleep runs it after the engines that change them.
- States are always computed with every enabled engine's learned weights loaded first
  (``EngineContext.learned_neocortex``), as answers are: ttt and cls load theirs lazily, so a fresh
  process would otherwise fill with the base model.
- ``contribute(query)``: the passages the retrieval engine chooses for the question (the same
  search: ``Query.search``), their stored states, the question's own last state, and
  ``models.hidden_reward`` turn them into a reward over the vocabulary, handed to the chat path
  as a logit bias for the neocortex's vocabulary (``Contribution.logit_bias``). States computed
  with other weights than the question's are left out (a note says so). The model is loaded only
  here and in learning: with the engine off nothing of it runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
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
    Passage,
    Progress,
    Query,
    no_progress,
)
from engines.hidden.config import HiddenConfig
from engines.hidden.fingerprint import WeightFingerprint
from engines.passages import question_passages
from models.hidden_reward import reward_vector, select, top_rewards
from store.chunk_states import ChunkStateStore


@torch.no_grad()
def last_states(cortex: Neocortex, ids: list[int]) -> torch.Tensor:
    """[T, H]: the last hidden states (after the final norm: what the LM head reads) of ``ids``."""
    x = torch.tensor([ids], device=cortex.device)
    out = cortex.model(input_ids=x, output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1][0].float().cpu()


def lm_head(cortex: Neocortex) -> torch.Tensor:
    """[V, H]: the output embedding (tied to the input one in SmolLM2)."""
    return cortex.model.get_output_embeddings().weight.detach().float().cpu()


class HiddenStateEngine(Engine):
    name = "hidden"
    learns_documents = True
    reads_weights = True

    def __init__(self, context: EngineContext, config: HiddenConfig | None = None) -> None:
        self.context = context
        self.config = config or HiddenConfig()
        self.store = ChunkStateStore(context.db)
        self.fingerprint = WeightFingerprint()
        self._head: tuple[str, torch.Tensor] | None = None  # (weights, LM head)
        self._lock = threading.Lock()

    def cortex(self) -> Neocortex:
        """The neocortex with every enabled engine's learned weights loaded (what answers compute
        with): states filled before ttt or cls loaded theirs would be stale at the first answer."""
        get = self.context.learned_neocortex or self.context.neocortex
        if get is None:
            raise RuntimeError("the hidden-state tier needs a neocortex (a torch model) and the app gave none")
        return get()

    def weights(self, cortex: Neocortex) -> str:
        """The fingerprint of the weights ``cortex`` computes with now."""
        with cortex.lock:
            return self.fingerprint(cortex.model)

    def states(self, cortex: Neocortex, ids: list[int]) -> tuple[torch.Tensor, str]:
        """(last states of ``ids``, the weights' fingerprint), in one hold of the model's lock."""
        with cortex.lock:
            return last_states(cortex, ids), self.fingerprint(cortex.model)

    # --- filling --------------------------------------------------------------------------------
    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        started = time.perf_counter()
        chunks = self.store.chunks_of(document.document_id)
        tokens = self.write(chunks, progress)
        return LearnReport(engine=self.name, path=document.path, seconds=time.perf_counter() - started,
                           changed=bool(chunks), tokens=tokens, details={"chunks": len(chunks)})

    def write(self, chunks: list[tuple[int, str]], progress: Progress = no_progress) -> int:
        """Store the states of (chunk id, text) pairs; returns the tokens read."""
        cortex = self.cortex()
        rows, tokens = [], 0
        for n, (chunk_id, text) in enumerate(chunks, 1):
            ids = cortex.tokenizer(text, add_special_tokens=False)["input_ids"][: self.config.max_chunk_tokens]
            if ids:
                states, weights = self.states(cortex, ids)
                rows.append((chunk_id, states.numpy(), np.asarray(ids, dtype=np.int32), weights))
                tokens += len(ids)
            progress(n / len(chunks), f"hidden states of chunk {n}/{len(chunks)}")
        self.store.put(cortex.model_name, rows)
        return tokens

    def fill(self, progress: Progress = no_progress, stop=None, missing: list[int] | None = None) -> dict[str, int]:
        """States for every indexed document that lacks some, or has stale ones (``stop()`` true:
        end between documents; ``missing``: those documents, when the caller found them already).
        Returns documents and chunks written."""
        if missing is None:
            missing = self.documents_to_fill()
        chunks = 0
        for n, document_id in enumerate(missing, 1):
            if stop is not None and stop():
                return {"documents": n - 1, "chunks": chunks, "left": len(missing) - n + 1}
            found = self.store.chunks_of(document_id)
            self.write(found, lambda f, m, n=n: progress((n - 1 + f) / len(missing),
                                                         f"document {n}/{len(missing)}: {m}"))
            chunks += len(found)
        progress(1.0, f"{len(missing)} document(s) filled")
        return {"documents": len(missing), "chunks": chunks, "left": 0}

    def documents_to_fill(self) -> list[int]:
        """Indexed documents with a chunk lacking states of the weights answers compute with now."""
        return self.stale_documents()[1]

    def stale_documents(self) -> tuple[str, list[int]]:
        cortex = self.cortex()
        weights = self.weights(cortex)
        return weights, self.store.missing_documents(cortex.model_name, weights)

    def refresh(self, progress: Progress, stop: Callable[[], bool]) -> dict[str, int]:
        """The idle worker's fill, once a weight engine changed the weights (``app.jobs.refresh``)."""
        return self.fill(progress, stop)

    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        """Sleep fills the documents indexed before the tier was on, and those whose states went
        stale, within the budget."""
        started = time.perf_counter()
        missing = self.documents_to_fill()
        if not missing:
            return ConsolidateReport(engine=self.name, seconds=0.0, changed=False)
        done = self.fill(progress, lambda: budget.interrupted() or time.perf_counter() - started > budget.seconds,
                         missing)
        return ConsolidateReport(engine=self.name, seconds=time.perf_counter() - started,
                                 changed=done["chunks"] > 0, details=done)

    # --- answering ------------------------------------------------------------------------------
    def head(self, cortex: Neocortex, weights: str) -> torch.Tensor:
        """The LM head of the weights ``weights`` names (read again once they changed)."""
        with self._lock:
            if self._head is None or self._head[0] != weights:
                with cortex.lock:  # kept under the fingerprint of what was read
                    self._head = (self.fingerprint(cortex.model), lm_head(cortex))
            return self._head[1]

    def passages(self, query: Query) -> list[Passage]:
        """The passages whose states are read: chosen as the retrieval engine chooses them, from
        the same search (with ``k`` and the cut equal to rag's, the passages in the prompt)."""
        return question_passages(query, self.context.retrieve, self.config.k, self.config.min_similarity)

    def contribute(self, query: Query) -> Contribution:
        if self.config.strength == 0:
            return Contribution(engine=self.name)
        started = time.perf_counter()
        passages = self.passages(query)
        if not passages:
            return Contribution(engine=self.name, notes=["hidden-state tier: no passage"])
        cortex = self.cortex()
        ids = cortex.tokenizer(query.text, add_special_tokens=False)["input_ids"][-self.config.max_chunk_tokens:]
        question, weights = self.states(cortex, ids)
        chunk_ids = [p.chunk_id for p in passages]
        stored = self.store.get(chunk_ids, cortex.model_name, weights)
        stale = self.store.stale(chunk_ids, cortex.model_name, weights)
        notes = [f"hidden-state tier: the states of {len(stale)} passage(s) were computed with other "
                 "weights (the model changed since): left out until they are computed again (when the "
                 "app is next idle, in sleep or by engram hidden fill)"] if stale else []
        meta: dict[str, Any] = {"chunks": [c for c in chunk_ids if c in stored], "stale": stale}
        if not stored:
            notes.append("hidden-state tier: no stored states for the passages (engram hidden fill)")
            return Contribution(engine=self.name, notes=notes, meta=meta)
        bias, used = self.reward(cortex, question[-1], weights, [stored[c] for c in chunk_ids if c in stored])
        ms = 1000 * (time.perf_counter() - started)
        notes.append(f"hidden-state tier: {used} states of {len(stored)} passage(s) -> {len(bias)} rewarded "
                     f"tokens, {ms:.0f} ms")
        return Contribution(engine=self.name, logit_bias=bias, bias_model=cortex.model_name, notes=notes,
                            meta=meta | {"states": used, "passages": len(stored), "tokens": len(bias)})

    def reward(self, cortex: Neocortex, question: torch.Tensor, weights: str,
               stored: list[tuple[np.ndarray, np.ndarray]]) -> tuple[dict[int, float], int]:
        """(token id -> logit reward, states used) for the question's last state [H] over
        passages' (states, ids), all computed with the weights ``weights`` names."""
        # state t took action ids[t + 1]: the last state of each chunk has none
        states = torch.cat([torch.from_numpy(s[:-1].astype(np.float32)) for s, _ in stored])
        actions = torch.cat([torch.from_numpy(i[1:].astype(np.int64)) for _, i in stored])
        if actions.numel() == 0:
            return {}, 0
        idx, share = select(states, question, self.config.states, self.config.temperature)
        reward = reward_vector(states[idx], actions[idx], share, self.head(cortex, weights))
        return top_rewards(reward, self.config.tokens, self.config.strength), int(idx.numel())

    def stats(self) -> dict[str, Any]:
        """What is stored (any model: the model is not loaded to say so)."""
        return (self.store.summary().model_dump(exclude={"missing_documents", "stale_chunks"})
                | {"strength": self.config.strength})
