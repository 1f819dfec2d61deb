"""The hidden-state tier as an engine: documents in as hidden states, a logit reward out.

- ``learn(document)`` (a learn job in the worker, never on the question path): the neocortex (the
  torch copy of the chat model the weight engines load) reads each chunk on its own and its last
  hidden states, with the chunk's token ids, are stored by chunk id (``store.chunk_states``);
  they leave with the chunk.
- ``consolidate`` (sleep) and ``fill`` (``engram hidden fill``): the same for documents indexed
  before the tier was on.
- ``contribute(query)``: the passages retrieval finds for the question, their stored states, the
  question's own last state, and ``models.hidden_reward`` turn them into a reward over the
  vocabulary, handed to the chat path as a logit bias for the neocortex's vocabulary
  (``Contribution.logit_bias``). The model is loaded only here and in learning: with the engine
  off nothing of it runs.
"""

from __future__ import annotations

import threading
import time
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
    Progress,
    Query,
    no_progress,
)
from engines.hidden.config import HiddenConfig
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

    def __init__(self, context: EngineContext, config: HiddenConfig | None = None) -> None:
        self.context = context
        self.config = config or HiddenConfig()
        self.store = ChunkStateStore(context.db)
        self._head: torch.Tensor | None = None
        self._lock = threading.Lock()

    def cortex(self) -> Neocortex:
        if self.context.neocortex is None:
            raise RuntimeError("the hidden-state tier needs a neocortex (a torch model) and the app gave none")
        return self.context.neocortex()

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
                with cortex.lock:
                    states = last_states(cortex, ids)
                rows.append((chunk_id, states.numpy(), np.asarray(ids, dtype=np.int32)))
                tokens += len(ids)
            progress(n / len(chunks), f"hidden states of chunk {n}/{len(chunks)}")
        self.store.put(cortex.model_name, rows)
        return tokens

    def fill(self, progress: Progress = no_progress, stop=None) -> dict[str, int]:
        """States for every indexed document that lacks some (``stop()`` true: end between
        documents). Returns documents and chunks written."""
        cortex = self.cortex()
        missing = self.store.missing_documents(cortex.model_name)
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

    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        """Sleep fills the documents indexed before the tier was on, within the budget."""
        started = time.perf_counter()
        if not self.store.missing_documents(self.cortex().model_name):
            return ConsolidateReport(engine=self.name, seconds=0.0, changed=False)
        done = self.fill(progress, lambda: budget.interrupted() or time.perf_counter() - started > budget.seconds)
        return ConsolidateReport(engine=self.name, seconds=time.perf_counter() - started,
                                 changed=done["chunks"] > 0, details=done)

    # --- answering ------------------------------------------------------------------------------
    def head(self, cortex: Neocortex) -> torch.Tensor:
        with self._lock:
            if self._head is None:
                self._head = lm_head(cortex)
            return self._head

    def contribute(self, query: Query) -> Contribution:
        if self.config.strength == 0:
            return Contribution(engine=self.name)
        started = time.perf_counter()
        passages = [p for p in self.context.retrieve(query.text, self.config.k)
                    if p.exact or p.score >= self.config.min_similarity]
        if not passages:
            return Contribution(engine=self.name, notes=["hidden-state tier: no passage"])
        cortex = self.cortex()
        stored = self.store.get([p.chunk_id for p in passages], cortex.model_name)
        if not stored:
            return Contribution(engine=self.name, notes=["hidden-state tier: no stored states for the "
                                                         "passages (engram hidden fill)"])
        bias, used = self.reward(cortex, query.text, list(stored.values()))
        ms = 1000 * (time.perf_counter() - started)
        return Contribution(engine=self.name, logit_bias=bias, bias_model=cortex.model_name,
                            notes=[f"hidden-state tier: {used} states of {len(stored)} passage(s) -> "
                                   f"{len(bias)} rewarded tokens, {ms:.0f} ms"],
                            meta={"states": used, "passages": len(stored), "tokens": len(bias)})

    def reward(self, cortex: Neocortex, question: str,
               stored: list[tuple[np.ndarray, np.ndarray]]) -> tuple[dict[int, float], int]:
        """(token id -> logit reward, states used) for a question over passages' (states, ids)."""
        # state t took action ids[t + 1]: the last state of each chunk has none
        states = torch.cat([torch.from_numpy(s[:-1].astype(np.float32)) for s, _ in stored])
        actions = torch.cat([torch.from_numpy(i[1:].astype(np.int64)) for _, i in stored])
        if actions.numel() == 0:
            return {}, 0
        ids = cortex.tokenizer(question, add_special_tokens=False)["input_ids"][-self.config.max_chunk_tokens:]
        with cortex.lock:
            q = last_states(cortex, ids)[-1]
        idx, weights = select(states, q, self.config.states, self.config.temperature)
        reward = reward_vector(states[idx], actions[idx], weights, self.head(cortex))
        return top_rewards(reward, self.config.tokens, self.config.strength), int(idx.numel())

    def stats(self) -> dict[str, Any]:
        """What is stored (any model: the model is not loaded to say so)."""
        return self.store.summary().model_dump(exclude={"missing_documents"}) | {"strength": self.config.strength}
