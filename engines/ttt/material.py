"""What a learning step trains on: a document's material, recalled pairs and background replay.

A document's material is its own token windows plus rehearsal of its facts as question/answer
pairs and paraphrases (``rehearsal``). Beside it go a sample of earlier documents' pairs
(recall: without it each document overwrites the ones learned before it) and background text
(general use, so that learning a document does not unlearn the rest). Everything is packed
into mini-batches of similar lengths, with background text replayed in each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines.base import DocumentInput, EngineContext, Neocortex
from engines.generation import Runtime
from engines.ttt import facts, rehearsal, written
from engines.ttt.config import TTTConfig
from engines.ttt.recall import RecallEntry
from engines.ttt.state import Part, TTTState
from engines.ttt.trainer import Piece, chat_piece, collate, pack, text_pieces

BACKGROUND_PROSE_CHARS = 40_000  # the background opens with everyday prose (app.services.general_text)
DISTILLED_BATCHES = 8  # distinct distillation batches per document, cycled (each holds its teacher)

Batch = dict[str, Any]


@dataclass
class Material:
    """A document made ready to train on."""

    pieces: list[Piece]  # its own windows, then its rehearsal pieces
    tokens: int  # the document's own tokens (up to ``max_document_tokens``)
    pairs: list[rehearsal.QA]
    text: str  # the text learned


def document_material(cortex: Neocortex, document: DocumentInput, config: TTTConfig,
                      generator: Callable[[], Runtime]) -> Material:
    """The document's windows and rehearsal pieces, from ``rehearsal_source``: every fact of the
    text resolved and restated (``facts``), each sentence's last span (``extract``), or the facts
    plus the questions and rewrites ``generator``'s model writes section by section, each checked
    against the text (``model``). The restated passages (statements, reorderings, entity passages,
    rewrites) are trained with the pairs: they are those sources' material."""
    window = max(16, config.batch_tokens // 2)
    doc = text_pieces(cortex.tokenizer, document.text, window, "document", limit=config.max_document_tokens)
    text = cortex.tokenizer.decode([t for p in doc for t in p.ids])
    pairs: list[rehearsal.QA] = []
    restated: list[str] = []
    if config.rehearsal_qa or config.rehearsal_paraphrase:
        if config.rehearsal_source == "model":
            pairs, restated = facts.rehearse(text)
            wrote, rewrites = written.write(generator(), text)
            pairs, restated = pairs + wrote, restated + rewrites
        elif config.rehearsal_source == "facts":
            pairs, restated = facts.rehearse(text)
        else:
            pairs, restated = rehearsal.extract(text)
    extra: list[Piece] = []
    if config.rehearsal_qa:
        extra += [chat_piece(cortex.tokenizer, qa.question, qa.answer, config.rehearsal_system)
                  for qa in pairs]
    restating = config.rehearsal_paraphrase or (config.rehearsal_source != "extract" and config.rehearsal_qa)
    if restating and restated:
        extra += text_pieces(cortex.tokenizer, "\n".join(restated), window, "paraphrase")
    return Material(doc + extra, sum(len(p) for p in doc), pairs, text)


def recall_pieces(tokenizer: Any, entries: list[RecallEntry], system: str) -> list[Piece]:
    """Recalled pairs, asked in the chat template the rehearsal uses."""
    return [chat_piece(tokenizer, e.question, e.answer, system, kind="recall") for e in entries]


class Background(Part):
    """General use, replayed beside what is learned: everyday prose in turn (where it goes on
    is ``TTTState.replay_at``, saved with the rows) and questions about it."""

    def __init__(self, context: EngineContext, state: TTTState) -> None:
        super().__init__(context, state)
        self._ids: list[int] | None = None  # the whole background, tokenized once
        self._questions: list[Piece] | None = None
        self._question_at = 0

    @property
    def present(self) -> bool:
        """Whether the app gave background text at all."""
        return self.context.background is not None

    def prose(self) -> str:
        """The everyday prose the background opens with."""
        assert self.context.background is not None
        return self.context.background()[:BACKGROUND_PROSE_CHARS]

    def piece(self, tokenizer: Any, n: int) -> Piece:
        """The next ``n`` tokens of the background, by their own next-token loss."""
        if self._ids is None:
            assert self.context.background is not None
            self._ids = tokenizer(self.context.background(), add_special_tokens=False)["input_ids"]
        ids = self._ids
        start = self.state.replay_at % max(1, len(ids) - n)
        self.state.replay_at = start + n
        chunk = ids[start:start + n]
        return Piece(chunk, chunk, "replay")

    def question_pieces(self, tokenizer: Any) -> list[Piece]:
        """Questions about the background prose, asked in the chat template the rehearsal uses."""
        if self._questions is None:
            pairs, _ = rehearsal.extract(self.prose())
            self._questions = [chat_piece(tokenizer, qa.question, qa.answer, self.config.rehearsal_system,
                                          kind="replay") for qa in pairs]
        return self._questions

    def questions(self, tokenizer: Any) -> list[Piece]:
        """The next ``replay_questions`` background questions: distilled, they hold how the
        model answers questions in general."""
        k = self.config.replay_questions
        if k == 0:
            return []
        pool = self.question_pieces(tokenizer)
        if not pool:
            return []
        self._question_at += k
        return [pool[(self._question_at - j) % len(pool)] for j in range(k)]


def batches(cortex: Neocortex, pieces: list[Piece], config: TTTConfig,
            background: Background) -> tuple[list[Batch], list[Batch]]:
    """The training mini-batches, and the distillation batches cycled beside them.

    Background text is replayed by its own next-token loss inside each material batch
    (``replay_loss = lm``) or distilled from the original model in a batch of its own
    (``distill``); background questions are always distilled (what is held is how the
    original model answered them, not the extracted answer). At most ``DISTILLED_BATCHES``
    distinct distillation batches per document: each keeps its teacher's output in memory.
    """
    pad, tokenizer = cortex.tokenizer.pad_token_id or 0, cortex.tokenizer
    replaying = background.present and config.replay_tokens > 0
    text_lm = replaying and config.replay_loss == "lm"
    text_distilled = replaying and config.replay_loss == "distill"
    if text_lm:
        packed = pack(pieces, max(16, config.batch_tokens - config.replay_tokens))
        material = [collate([*b, background.piece(tokenizer, config.replay_tokens)], pad, cortex.device)
                    for b in packed]
    else:
        material = [collate(b, pad, cortex.device) for b in pack(pieces, config.batch_tokens)]
    if not background.present:
        return material, []
    distilled = []
    for _ in range(min(len(material), DISTILLED_BATCHES)):
        text = [background.piece(tokenizer, config.replay_tokens)] if text_distilled else []
        distilled.append(text + background.questions(tokenizer))
    return material, [collate(d, pad, cortex.device) for d in distilled if d]


def trained_tokens(material: list[Batch], distilled: list[Batch]) -> int:
    """Tokens one pass runs forward and back: each material batch and the distillation batch
    cycled beside it."""
    own = sum(int(b["attention_mask"].sum()) for b in material)
    beside = sum(int(distilled[n % len(distilled)]["attention_mask"].sum())
                 for n in range(len(material))) if distilled else 0
    return own + beside
