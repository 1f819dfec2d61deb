"""The one protocol every knowledge writer implements, and the values that cross it.

Engines differ in *where* they write what a document teaches (retrievable context, playbook
bullets, weights, adapters, experts), but the app, the bench and the UI treat them alike:

- ``learn(document)`` writes the document's knowledge, reporting progress, and returns a report;
- ``contribute(query)`` hands the chat path what the engine knows about a question: passages to
  put in the context, playbook bullets, a logit bias, learned states that must be active;
- ``learn_feedback(feedback)`` learns from a thumbs up/down or a correction (engines that set
  ``learns_feedback``: the app queues a durable job per feedback event);
- ``consolidate(budget)`` does offline work during sleep (replay, curation, distillation);
- ``state_dict()`` / ``load_state_dict()`` move learned state through the store;
- ``stats()`` says what the engine holds, for the UI and the bench.

Engines never import ``app``: what they need from it (retrieval, the generation runtime, the
store) reaches them through ``EngineContext``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, Field, PrivateAttr

from engines.feedback import FeedbackInput
from engines.generation import ChatMessage, LoraUse, Runtime
from store.conversations import SourceLocation
from store.database import Database

if TYPE_CHECKING:
    from store.metrics_log import MetricsLog
    import numpy as np  # annotations only: the settings and the CLI import this module

Progress = Callable[[float, str], None]
"""Progress callback: (fraction done in [0, 1], what is happening now)."""


def no_progress(fraction: float, message: str) -> None:
    """The default progress callback: reports go nowhere."""


class Passage(SourceLocation):
    """A stored chunk retrieved for a query, with where it comes from (for citations).

    ``score`` is the chunk's cosine similarity to the query; the order of a result list is the
    retrieval mode's ranking (fused in hybrid), not the score's.
    """

    text: str
    exact: bool = Field(False, description="The chunk holds an identifier, code or quoted phrase "
                        "of the query exactly (such chunks rank first).")
    evidence: str | None = Field(None, description="What the critic may count as support, where "
                                 "that is less than the text (None: all of it): of an earlier exchange, "
                                 "the person's turns only. Engram's own answers record what it said, "
                                 "not that it is true.")

    @property
    def support(self) -> str:
        """The text the critic checks an answer against."""
        return self.text if self.evidence is None else self.evidence


Retrieve = Callable[[str, int], list[Passage]]
"""(query text, k) -> the top ``k`` passages, best first (the app's search)."""


class DocumentInput(BaseModel):
    """A stored document handed to ``learn``: its text, already parsed and chunked."""

    document_id: int
    path: str
    chunks: list[str]

    @property
    def text(self) -> str:
        return "\n\n".join(self.chunks)


class Query(BaseModel):
    """A question on its way to an answer, with the conversation so far.

    One Query goes to every engine contributing to the answer, and carries the searches made for
    it (``search``): engines that need passages (rag, the hidden-state tier) share one.
    """

    text: str = Field(min_length=1)
    history: list[ChatMessage] = Field(default_factory=list)
    _searches: dict[str, tuple[int, list[Passage]]] = PrivateAttr(default_factory=dict)

    def search(self, retrieve: Retrieve, text: str, k: int) -> list[Passage]:
        """``retrieve(text, k)``, searched once for this question: a later engine asking for no
        more passages gets the head of the ranking already found (the app's search fuses the same
        candidates for any ``k`` up to about ``rag.candidates / 2``), so one answer pays for one
        search and its engines see the same passages."""
        asked, found = self._searches.get(text, (0, []))
        if asked < k:
            found = retrieve(text, k)
            self._searches[text] = (k, found)
        return found[:k]


class Contribution(BaseModel):
    """What one engine adds to the answer of one query (every part optional)."""

    engine: str
    passages: list[Passage] = Field(default_factory=list)
    bullets: list[str] = Field(default_factory=list, description="Playbook strategies to follow.")
    bias_text: list[str] = Field(
        default_factory=list,
        description="Text whose tokens the generator should favour (turned into a logit bias "
        "with the active model's tokenizer).",
    )
    logit_bias: dict[int, float] = Field(
        default_factory=dict, description="Token id -> logit added at every step, in the vocabulary "
        "of the model ``bias_model`` names (the chat path applies it only on that model).",
    )
    bias_model: str = Field("", description="The model whose token ids ``logit_bias`` uses.")
    learned_states: list[str] = Field(
        default_factory=list, description="Learned weights that must be active to answer."
    )
    adapters: list[LoraUse] = Field(
        default_factory=list, description="The learned states as LoRA adapter files, when every "
        "learned state has one: a chat runtime that applies them (llama.cpp on the same model) "
        "answers in place of the torch model.",
    )
    system: str = Field("", description="The system message the learned weights were trained to "
                        "answer under: chat asks under it where no passage is shown ('': chat's own).")
    notes: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="What the engine wants kept with the stored answer (e.g. which playbook "
        "bullets it used), so learning from feedback on that answer can find it again.",
    )


class Draft(BaseModel):
    """An answer generated as chat would, but not stored (replays, offline training)."""

    text: str
    passages: list[Passage] = Field(default_factory=list)


class LearnReport(BaseModel):
    engine: str
    path: str
    seconds: float
    changed: bool = Field(description="Whether the engine's knowledge changed.")
    tokens: int = 0
    details: dict[str, Any] = Field(default_factory=dict)


class Budget(BaseModel):
    """How much offline work ``consolidate`` may do (it stops at whichever limit comes first).

    ``stop`` is asked between steps: sleep gives way as soon as the person is back or new work
    arrives, keeping the steps already taken, as at the end of its time. A weight-writing engine
    calls ``begin`` once it holds its state for the work and before it changes anything: the app
    saves the state there, so nothing (not even a checkpoint load) comes between that save and
    the sleep. An error from ``begin`` means the work does not begin.
    """

    seconds: float = Field(60.0, gt=0)
    steps: int | None = Field(None, ge=1)
    stop: Callable[[], bool] | None = Field(None, exclude=True)
    begin: Callable[[], None] | None = Field(None, exclude=True)

    def interrupted(self) -> bool:
        return self.stop is not None and bool(self.stop())

    def started(self) -> None:
        if self.begin is not None:
            self.begin()


class ConsolidateReport(BaseModel):
    engine: str
    seconds: float
    changed: bool
    details: dict[str, Any] = Field(default_factory=dict)


Embed = Callable[[list[str]], "np.ndarray"]
Answer = Callable[[str, list[str], int], Draft]
"""(question, playbook bullets, max new tokens) -> the chat path's answer with those bullets."""


Router = Callable[[Sequence[str]], AbstractContextManager[None]]
"""(one query per row of the next batch) -> a context in which each row gets as much of the
learned weights as its query calls for (``engines.ttt``: by its closeness to learned documents)."""


class Neocortex(Protocol):
    """The torch model the weight-writing engines change and the chat answers with.

    ``lock`` guards the model: generation holds it for an answer, training for each step, so an
    answer never sees weights half-way through an update. ``router`` routes answers (see
    ``routed``): None until an engine that routes its learned weights sets it, and again after
    that engine closes.
    """

    model: Any  # a transformers causal LM (torch.nn.Module)
    tokenizer: Any
    lock: Any  # threading.Lock
    device: str
    model_name: str
    router: Router | None


def routing_query(user_turns: Sequence[str]) -> str:
    """What an answer is routed by: the question with the one before it, so that a follow-up
    ("and when was she born?") goes where the question it follows went."""
    return "\n".join(user_turns[-2:])


def routed(cortex: Neocortex, queries: Sequence[str] | None) -> AbstractContextManager[None]:
    """The context to run a batch of answers in, one query per row (enter it holding the lock).
    No router installed, or no queries given (training, probes): the learned weights as they are."""
    router = cortex.router
    return router(queries) if router is not None and queries is not None else nullcontext()


@dataclass
class EngineContext:
    """What the app hands every engine: the store and the parts it may call (built lazily).

    ``generator`` returns the runtime that answers chat; ``agent`` the runtime that agent roles
    (ACE's Reflector and Curator) run on, which may be a bigger model (None: the chat runtime).
    ``answer`` generates an answer exactly as chat would, with given playbook bullets in place of
    the engines' own (None where no chat path exists). ``neocortex`` returns the torch model that
    weight-writing engines train (loaded on first call); ``learned_neocortex`` returns it with
    every enabled weight-writing engine's learned state loaded into it, the weights answers compute
    with (each engine loads its own lazily, so ``neocortex`` alone may still be the base model);
    ``background`` returns general English text (the shipped corpus) for calibration and replay.
    """

    db: Database
    data_dir: Path
    retrieve: Retrieve
    embed: Embed
    generator: Callable[[], Runtime]
    agent: Callable[[], Runtime] | None = None
    answer: Answer | None = None
    neocortex: Callable[[], Neocortex] | None = None
    learned_neocortex: Callable[[], Neocortex] | None = None  # None: ``neocortex`` (no app: no other engine)
    background: Callable[[], str] | None = None
    metrics: MetricsLog | None = None  # where training steps go (None: DATA_DIR/metrics.jsonl alone)

    def agent_runtime(self) -> Runtime:
        return self.agent() if self.agent is not None else self.generator()


class Engine(ABC):
    """A knowledge writer. Subclasses set ``name`` and implement ``learn`` and ``contribute``."""

    name: ClassVar[str]
    learns_documents: ClassVar[bool] = False
    """True when ``learn`` does work of its own: ingestion then queues a learn job per document."""
    learns_feedback: bool = False
    """True when ``learn_feedback`` does work: each feedback event then queues a job for it."""
    writes_weights: ClassVar[bool] = False
    """True when what it learns lives in the neocortex's weights: chat then answers with the
    torch runtime (or with its adapter files on llama.cpp), and checkpoints save its ``state_dict``."""
    sleeps_by_pressure: ClassVar[bool] = False
    """True when it records its own sleep pressure (``store.sleep_pressure``) and its config has a
    ``sleep_pressure`` threshold: the idle sleeper then waits for that instead of counting documents."""
    reads_weights: ClassVar[bool] = False
    """True when what it keeps was computed by the neocortex's weights (the hidden-state tier):
    sleep and a document's learning run it after the engines that change those weights, and the
    worker refreshes it when idle once they changed (``stale_documents``, ``refresh``)."""

    @abstractmethod
    def learn(self, document: DocumentInput, progress: Progress = no_progress) -> LearnReport:
        """Write what ``document`` teaches into this engine's knowledge."""

    @abstractmethod
    def contribute(self, query: Query) -> Contribution:
        """What this engine adds to the answer of ``query``."""

    def learn_feedback(self, feedback: FeedbackInput, progress: Progress = no_progress) -> LearnReport:
        """Learn from a person's reaction to an answer (nothing by default)."""
        return LearnReport(engine=self.name, path=f"message {feedback.message_id}", seconds=0.0,
                           changed=False)

    def forget(self, document_id: int) -> None:
        """The document left the store: drop what was learned only from it, where possible."""

    def forget_many(self, document_ids: list[int]) -> None:
        """``forget`` each (an engine that saves state overrides this to save once)."""
        for document_id in document_ids:
            self.forget(document_id)

    def consolidate(self, budget: Budget, progress: Progress = no_progress) -> ConsolidateReport:
        """Offline work while the person is idle (nothing by default)."""
        return ConsolidateReport(engine=self.name, seconds=0.0, changed=False)

    def stale_documents(self) -> tuple[str, list[int]]:
        """(the weights' fingerprint now, the documents whose kept results were computed with
        other weights or not yet): an engine that ``reads_weights`` says what to refresh."""
        return "", []

    def refresh(self, progress: Progress, stop: Callable[[], bool]) -> dict[str, int]:
        """Compute again what ``stale_documents`` names, ending between documents when ``stop()``
        is true; returns documents, chunks and documents left."""
        return {"documents": 0, "chunks": 0, "left": 0}

    def rehearsed(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        """Up to ``n`` of the (question, answer) pairs the learned state was trained on, for the
        learning bench to ask closed-book; none for an engine that keeps none."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Learned state to persist (JSON values and tensors only; never pickled)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], origin: str | None = None) -> None:
        """Restore what ``state_dict`` returned (``origin``: the checkpoint it came from)."""

    def load_weights(self) -> None:
        """Put what it learned into the neocortex now (a weight-writing engine does so lazily, on
        first use). Nothing by default, and nothing for learned weights that enter only per
        question, by routing (d2l's adapters)."""

    def stats(self) -> dict[str, Any]:
        return {}

    def has_learned(self) -> bool:
        """Whether something is learned into this engine's own state (documents written into
        weights, experts): a bundle that cannot carry it says so rather than leaving it behind."""
        stats = self.stats()
        return any(int(stats.get(key) or 0) > 0 for key in ("documents", "experts"))


def contribute_all(engines: Sequence[Engine], query: Query) -> list[Contribution]:
    """Each engine's contribution to the answer of ``query``, in order. Handing them the one
    Query is what makes them share its search (``Query.search``): an answer retrieves once."""
    return [engine.contribute(query) for engine in engines]
