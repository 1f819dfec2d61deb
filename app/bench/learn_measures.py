"""What ``engram bench learn`` measures on a model: the answers a person reads, then the rest.

- ``Learned``: on the set's questions, asked as chat asks them. The headline is the greedy free-text
  answer, decoded as the runtimes decode (the same repetition penalty), cut where the loop guard
  would cut it, and scored by ``app.bench.scoring``: it contains an accepted answer, or is one.
  ``loops`` counts answers the guard had to cut (the model began repeating itself). 4-way choice
  accuracy by likelihood comes second: a small model ranks answers far better than it writes them.
- ``Forgot``: perplexity drift on held-out general English, and general-knowledge questions the
  base model got right, both by likelihood and, when free text is on, by its written answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import zip_longest

from pydantic import BaseModel, Field

from app.bench.learn_sets import BenchQuestion
from app.bench.model_eval import greedy_answers, option_logprobs, perplexity, rank_accuracy, render
from app.bench.scoring import contains, exact_match
from app.chat import controller
from app.chat.prompt import build_prompt, learned_system
from app.services.general_text import GeneralQuestion, general_questions, heldout_questions, heldout_text
from app.settings import Settings
from engines.base import Contribution, Neocortex
from engines.generation import ChatMessage, GenerationRequest
from engines.loop_guard import has_loop, trim_loop

ANSWER_TOKENS = 48  # long enough for a loop to show; chat's own limit is larger
SAMPLES = 12

Echo = Callable[[str], None]


class Learned(BaseModel):
    """Scores on the set's questions."""

    contains: float | None = Field(None, description="Free-text answers containing an accepted answer.")
    exact_match: float | None = Field(None, description="Free-text answers that are an accepted answer.")
    loops: int | None = Field(None, description="Free-text answers that began repeating themselves.")
    choice_accuracy: float = Field(description="4-way multiple choice by likelihood (chance 0.25).")
    samples: list[dict[str, str]] = Field(default_factory=list, description="The first answers, as written.")
    right: list[int] | None = Field(None, description=(
        "The set's questions (their order in the set) whose written answer contains an accepted "
        "answer: two runs are compared question by question, not only by their shares."))
    looped: list[dict[str, str]] = Field(default_factory=list, description=(
        "Every answer that began repeating itself, as generated before the loop was cut: which "
        "question loops is then known, wherever it falls in the set."))


class Rehearsed(BaseModel):
    """The learned weights asked, closed-book, the learner's own training questions (a sample of
    those whose short answer the question does not give away). Low: the weights did not take
    the material in. High while the set's questions stay low: they took it in as it was worded
    and do not answer it asked another way."""

    asked: int
    contains: float = Field(description="Answers containing the trained answer.")
    samples: list[dict[str, str]] = Field(default_factory=list, description="The first answers, as written.")


def own_questions(pairs: Sequence[tuple[str, str]], limit: int, max_words: int = 6) -> list[tuple[str, str]]:
    """The first ``limit`` pairs whose answer is short and not written in the question (a cloze
    question that spells out its sentence is answered by copying it)."""
    asked = [(q, a) for q, a in pairs if a.strip() and len(a.split()) <= max_words and not contains(q, a)]
    return list(dict.fromkeys(asked))[:limit]  # a pair kept twice is asked once


def interleaved(groups: Sequence[Sequence[tuple[str, str]]], limit: int) -> list[tuple[str, str]]:
    """The groups' pairs taken in turn, each once, up to ``limit``: with two weight engines each
    gets its share of the questions, not the first one all of them."""
    turns = (p for row in zip_longest(*groups) for p in row if p is not None)
    return list(dict.fromkeys(turns))[:limit]


def score_rehearsed(cortex: Neocortex, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> Rehearsed:
    """Greedy written answers to the learner's own questions, routed as chat routes them."""
    answers, _, _ = written_answers(cortex, prompts, [q for q, _ in pairs])
    right = [contains(a, expected) for (_, expected), a in zip(pairs, answers)]
    return Rehearsed(asked=len(pairs), contains=sum(right) / max(1, len(right)),
                     samples=[{"question": q, "expected": e, "answer": a}
                              for (q, e), a in list(zip(pairs, answers))[:SAMPLES]])


class Forgot(BaseModel):
    perplexity: float
    perplexity_drift: float = Field(description="(after - before) / before on held-out text.")
    general_accuracy: float = Field(description="By likelihood, on the questions the base model got right.")
    forgetting_ratio: float = Field(description="(before - after) / before of general_accuracy.")
    free_text_forgetting: float | None = Field(
        None, description="Share of the general questions the base model answered right in free text "
        "that are no longer answered right.")
    heldout_forgetting_ratio: float | None = Field(
        None, description="forgetting_ratio on the held-out general questions no default was chosen on.")
    unrouted: Forgot | None = Field(None, description="The same with the learned weights applied to "
                                    "every answer (engines that route them by the question).")

    @classmethod
    def nothing(cls, perplexity: float) -> Forgot:
        """The base model's own weights: nothing forgotten."""
        return cls(perplexity=perplexity, perplexity_drift=0.0, general_accuracy=1.0, forgetting_ratio=0.0,
                   free_text_forgetting=0.0, heldout_forgetting_ratio=0.0)


class Baseline(BaseModel):
    """The untouched model's figures every run is compared with."""

    learned: Learned
    perplexity: float
    known: list[int]
    known_heldout: list[int]
    known_free_text: list[int] | None = None


def as_chat(question: str, contributions: list[Contribution]) -> list[Contribution]:
    """The contributions as chat's rule controller uses them (a learned state routed nothing of
    the question is left inactive: the original model answers)."""
    decision = controller.after(controller.before(question, [c.engine for c in contributions], "rules"),
                                contributions)
    return controller.active(contributions, decision)


def chat_messages(question: str, contributions: list[Contribution], cortex: Neocortex,
                  settings: Settings) -> list[ChatMessage]:
    """The messages chat would send for ``question`` with these contributions (under the
    learned weights' no-sources message where chat's controller keeps a learned state active)."""
    passages = [p for c in contributions for p in c.passages]
    bullets = [b for c in contributions for b in c.bullets]
    count = lambda text: len(cortex.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    window = int(getattr(cortex.model.config, "max_position_embeddings", 2048))
    plan = build_prompt(question, passages, bullets, [], count, window, settings.answer_max_tokens,
                        settings.rag.context_share, learned_system(as_chat(question, contributions)))
    return plan.messages


def chat_prompt(question: str, contributions: list[Contribution], cortex: Neocortex,
                settings: Settings) -> str:
    """The prompt chat would send for ``question`` with these contributions (as text)."""
    return render(cortex, chat_messages(question, contributions, cortex, settings))


def written_answers(cortex: Neocortex, prompts: Sequence[str],
                    queries: Sequence[str] | None) -> tuple[list[str], list[int], list[str]]:
    """(what a person would read, which answers looped, the answers as generated) for each
    prompt, greedy; ``queries`` route learned weights as chat would (None: applied to every
    answer)."""
    decoding = GenerationRequest(messages=[ChatMessage(role="user", content="")], temperature=0.0)
    raw = greedy_answers(cortex, prompts, max_new_tokens=ANSWER_TOKENS, queries=queries, decoding=decoding)
    return [trim_loop(a) for a in raw], [i for i, a in enumerate(raw) if has_loop(a)], raw


def written_scores(questions: Sequence[BenchQuestion], answers: Sequence[str]) -> tuple[float, float]:
    """(answer-contains, exact match) of written answers over their questions' accepted answers."""
    pairs = list(zip(questions, answers))
    n = max(1, len(pairs))
    return (len(written_right(questions, answers)) / n,
            sum(any(exact_match(a, w) for w in q.accepted) for q, a in pairs) / n)


def written_right(questions: Sequence[BenchQuestion], answers: Sequence[str]) -> list[int]:
    """The positions of the questions whose written answer contains an accepted answer."""
    return [i for i, (q, a) in enumerate(zip(questions, answers)) if any(contains(a, w) for w in q.accepted)]


def score_questions(cortex: Neocortex, prompts: list[str], questions: Sequence[BenchQuestion],
                    free_text: bool) -> Learned:
    asked = [q.question for q in questions]
    scores = option_logprobs(cortex, prompts, [q.options for q in questions], queries=asked)
    right = rank_accuracy(scores, [q.options.index(q.answer) for q in questions])
    learned = Learned(choice_accuracy=sum(right) / len(right))
    if free_text:
        answers, looped, raw = written_answers(cortex, prompts, asked)
        learned.contains, learned.exact_match = written_scores(questions, answers)
        learned.right = written_right(questions, answers)
        learned.loops = len(looped)
        learned.samples = [{"question": q.question, "expected": q.answer, "answer": a}
                           for q, a in list(zip(questions, answers))[:SAMPLES]]
        learned.looped = [{"question": questions[i].question, "expected": questions[i].answer,
                           "generated": raw[i]} for i in looped]
    return learned


def general_scores(cortex: Neocortex, settings: Settings, routed: bool = True,
                   items: tuple[GeneralQuestion, ...] | None = None) -> list[bool]:
    """Which general-knowledge questions (default: the bench's set) the model ranks right."""
    items = general_questions() if items is None else items
    prompts = [chat_prompt(q.question, [], cortex, settings) for q in items]
    scores = option_logprobs(cortex, prompts, [q.options for q in items],
                             queries=[q.question for q in items] if routed else None)
    return rank_accuracy(scores, [q.options.index(q.answer) for q in items])


def general_written(cortex: Neocortex, settings: Settings, routed: bool = True) -> list[bool]:
    """Which general-knowledge questions the model answers right in free text (closed book)."""
    items = general_questions()
    prompts = [chat_prompt(q.question, [], cortex, settings) for q in items]
    answers, _, _ = written_answers(cortex, prompts, [q.question for q in items] if routed else None)
    return [contains(a, q.answer) for q, a in zip(items, answers)]


def baseline(cortex: Neocortex, settings: Settings, learned: Learned, free_text: bool) -> Baseline:
    ppl, _ = perplexity(cortex, heldout_text())
    right = general_scores(cortex, settings)
    heldout = general_scores(cortex, settings, items=heldout_questions())
    written = general_written(cortex, settings) if free_text else None
    return Baseline(learned=learned, perplexity=ppl, known=[i for i, ok in enumerate(right) if ok],
                    known_heldout=[i for i, ok in enumerate(heldout) if ok],
                    known_free_text=None if written is None else [i for i, ok in enumerate(written) if ok])


def _lost(now: list[bool], known: list[int]) -> float:
    return 1.0 - sum(now[i] for i in known) / max(1, len(known))


def forgot(cortex: Neocortex, settings: Settings, base: Baseline, routed: bool = True) -> Forgot:
    ppl, _ = perplexity(cortex, heldout_text(), route=routed)
    lost = _lost(general_scores(cortex, settings, routed), base.known)
    heldout = (_lost(general_scores(cortex, settings, routed, heldout_questions()), base.known_heldout)
               if base.known_heldout else None)
    # Written answers are what a person reads, so they are measured as chat routes them; the
    # unrouted check (what training did to every answer) stays by likelihood: it is four times cheaper.
    # All are asked under the untouched model's no-sources message, before and after learning alike:
    # chat sends the learned weights' one instead where an engine routes a general question to them.
    written = (_lost(general_written(cortex, settings), base.known_free_text)
               if base.known_free_text and routed else None)
    return Forgot(perplexity=ppl, perplexity_drift=(ppl - base.perplexity) / base.perplexity,
                  general_accuracy=1.0 - lost, forgetting_ratio=lost, free_text_forgetting=written,
                  heldout_forgetting_ratio=heldout)
