"""Meta-training the hypernetwork by context distillation.

For a training document and questions about it:

- the teacher is the frozen model with the document in its context, answering the question;
- the student is the same frozen model *without* the document, carrying the adapter the
  hypernetwork writes from the document;
- the loss is the KL divergence from the teacher's next-token distribution (its ``top_k`` most
  likely tokens, renormalised) to the student's, on the answer's tokens.

Only the hypernetwork trains (the model's weights never get a gradient). The questions are the
TTT rehearsal extractors' (``engines.ttt.facts`` and ``engines.ttt.rehearsal``) from the
document's own text, plus any a caller generated with it (the bench's fictional sets). The
teacher's targets are computed once per question and kept; documents' activations are read
again each step (cheap next to the student's backward pass).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engines.base import Neocortex
from engines.d2l.reading import Adapter, activations, token_chunks
from engines.ttt import facts, rehearsal
from engines.ttt.trainer import IGNORE, Piece, chat_piece, collate
from models.hypernetwork import Hypernetwork
from models.lora_hooks import LoRAHooks

TEACHER_DOCUMENT_TOKENS = 1536  # the teacher reads at most this much of the document


@dataclass
class TrainingDocument:
    """A document to meta-train on, with question/answer pairs about it."""

    text: str
    pairs: list[tuple[str, str]] = field(default_factory=list)


def with_questions(text: str, given: list[tuple[str, str]] | None = None) -> TrainingDocument:
    """A training document with the rehearsal extractors' questions added to ``given``."""
    found = list(given or [])
    for qa in [*facts.rehearse(text)[0], *rehearsal.extract(text)[0]]:
        found.append((qa.question, qa.answer))
    return TrainingDocument(text=text, pairs=list(dict.fromkeys(found)))


def teacher_prompt(document: str, question: str) -> str:
    return f"Here is a document.\n\n{document}\n\nAnswer from the document: {question}"


def write_adapter(cortex: Neocortex, hyper: Hypernetwork, layer_ids: list[int], text: str,
                  chunk_tokens: int, max_tokens: int) -> tuple[Adapter, int]:
    """The hypernetwork's adapter for ``text`` (gradient flows into the hypernetwork only when
    grad is enabled), and how many tokens it read."""
    chunks = token_chunks(cortex, text, chunk_tokens, max_tokens)
    keys = torch.cat([hyper.keys(activations(cortex, chunk, layer_ids)) for chunk in chunks], dim=1)
    return hyper(keys), sum(len(c) for c in chunks)


@dataclass
class Target:
    """The teacher's answer distribution for one question: the student's piece and, per answer
    token, the teacher's top-k tokens and their (renormalised) probabilities."""

    piece: Piece
    tokens: Tensor  # [n, k]
    probs: Tensor  # [n, k]


def answer_positions(labels: Tensor) -> Tensor:
    """[T] labels -> the positions whose logits predict a labelled token."""
    return (labels[1:] != IGNORE).nonzero().flatten()


@torch.no_grad()
def teacher_target(cortex: Neocortex, document: str, question: str, answer: str, top_k: int) -> Target | None:
    """What the teacher (the document in context) says at each answer token; None when the
    answer has no tokens."""
    tok = cortex.tokenizer
    student = chat_piece(tok, question, answer)
    ids = tok(document, add_special_tokens=False)["input_ids"][:TEACHER_DOCUMENT_TOKENS]
    teacher = chat_piece(tok, teacher_prompt(tok.decode(ids), question), answer)
    s_at = answer_positions(torch.tensor(student.labels))
    t_at = answer_positions(torch.tensor(teacher.labels))
    n = min(len(s_at), len(t_at))
    if n == 0:
        return None
    # the answers' tokens as both pieces have them (the same unless the template re-tokenises)
    student = Piece(student.ids[:int(s_at[n - 1]) + 2], student.labels[:int(s_at[n - 1]) + 2], "qa")
    logits = cortex.model(input_ids=torch.tensor([teacher.ids], device=cortex.device)).logits[0]
    top = torch.log_softmax(logits[t_at[:n]].float(), dim=-1).topk(top_k, dim=-1)
    return Target(piece=student, tokens=top.indices.cpu(), probs=torch.softmax(top.values, dim=-1).cpu())


def distillation_loss(logits: Tensor, labels: Tensor, targets: list[Target]) -> Tensor:
    """Mean over answer tokens of KL(teacher || student), the teacher kept to its top k."""
    total, count = logits.new_zeros(()), 0
    for row, target in enumerate(targets):
        at = answer_positions(labels[row].cpu())[:target.tokens.shape[0]]
        logp = torch.log_softmax(logits[row, at.to(logits.device)].float(), dim=-1)
        student = logp.gather(1, target.tokens[:len(at)].to(logits.device))
        p = target.probs[:len(at)].to(logits.device)
        total = total + (p * (p.clamp_min(1e-12).log() - student)).sum()
        count += len(at)
    return total / max(count, 1)


class MetaTrainer:
    """Steps of context distillation over a fixed list of documents (resumable by step)."""

    def __init__(self, cortex: Neocortex, hyper: Hypernetwork, layer_ids: list[int],
                 hooks: dict[str, LoRAHooks], documents: list[TrainingDocument], top_k: int,
                 questions_per_step: int, chunk_tokens: int, max_tokens: int, seed: int) -> None:
        self.cortex, self.hyper, self.layer_ids, self.hooks = cortex, hyper, layer_ids, hooks
        self.documents = [d for d in documents if d.pairs and d.text.strip()]
        if not self.documents:
            raise ValueError("no document with questions to meta-train on (the extractors found none)")
        self.top_k, self.per_step, self.seed = top_k, questions_per_step, seed
        self.chunk_tokens, self.max_tokens = chunk_tokens, max_tokens
        self.targets: dict[tuple[int, int], Target | None] = {}

    def pick(self, step: int) -> tuple[int, list[int]]:
        """The document and questions of ``step``: every document once per epoch, in an order
        fixed by the seed and the epoch (so a resumed run goes on where it stopped)."""
        n = len(self.documents)
        epoch, at = divmod(step, n)
        order = list(range(n))
        random.Random(self.seed * 100_003 + epoch).shuffle(order)
        doc = order[at]
        pairs = list(range(len(self.documents[doc].pairs)))
        random.Random(self.seed * 7_919 + step).shuffle(pairs)
        return doc, pairs[:self.per_step]

    def target(self, doc: int, pair: int) -> Target | None:
        if (doc, pair) not in self.targets:
            d = self.documents[doc]
            question, answer = d.pairs[pair]
            self.targets[(doc, pair)] = teacher_target(self.cortex, d.text, question, answer, self.top_k)
        return self.targets[(doc, pair)]

    def loss(self, step: int) -> Tensor | None:
        """The distillation loss of ``step`` (graph attached to the hypernetwork); None when
        none of its questions has answer tokens. Call holding the model's lock."""
        doc, pairs = self.pick(step)
        targets = [t for t in (self.target(doc, p) for p in pairs) if t is not None]
        if not targets:
            return None
        adapter, _ = write_adapter(self.cortex, self.hyper, self.layer_ids, self.documents[doc].text,
                                   self.chunk_tokens, self.max_tokens)
        pad = self.cortex.tokenizer.pad_token_id or 0
        batch = collate([t.piece for t in targets], pad, self.cortex.device)
        with _applied(self.hooks, adapter):
            logits = self.cortex.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return distillation_loss(logits, batch["labels"], targets)


class _applied:
    """The same adapter on every row of the batch, on each target's hooks."""

    def __init__(self, hooks: dict[str, LoRAHooks], adapter: Adapter) -> None:
        self.hooks, self.adapter = hooks, adapter

    def __enter__(self) -> None:
        for target, (a, b) in self.adapter.items():
            self.hooks[target].set(a[:, None], b[:, None])

    def __exit__(self, *_: object) -> None:
        for hooks in self.hooks.values():
            hooks.clear()

