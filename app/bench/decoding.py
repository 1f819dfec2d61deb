"""Decoding bench: how often answers are right, how often they loop, how long they are, per runtime.

The decoding defaults (``engines.generation``: repetition penalty and its window, loop guard) were
chosen with this bench, and ``engram bench chat`` can rerun it. Two question sets, asked greedily
(temperature 0: the result depends on the decoding settings, not on luck):

- **general**: ``app/data/general_questions.jsonl`` asked as free text, with no sources, exactly
  as chat asks when nothing in the documents matches; the base model may know these;
- **grounded**: the fictional documents of ``app.bench.fiction.generate("small", 0)``, each question
  asked with its own document as the only source, through ``build_prompt`` exactly as chat does.

Scores: *answer-contains* (the expected answer, lower-cased and without punctuation, appears in
the answer as whole words), *loops* (answers that repeat themselves, by ``engines.loop_guard``'s
rules) and *mean tokens*. Each (runtime, set, penalty) is generated once without the guard; the
guard's answer is then derived from that text with the guard's own rules (``trim_loop``), which is
exactly what ``Runtime.stream`` shows (greedy decoding is deterministic and the guard does not
depend on how the text is cut into pieces), so "with and without guard" costs one run. With the guard, tokens are those generated up to where the guard stopped (re-counted from
the text, so within a token or two), and loops are counted in what the person would see; the
answers the guard cut are counted separately (``guard_stops``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, Field

from app.bench.fiction import generate as generate_fiction
from app.chat.prompt import build_prompt
from app.services.general_text import general_questions
from app.settings import Settings
from app.bench.scoring import contains
from engines.base import Passage
from engines.generation import (
    DEFAULT_REPEAT_LAST_N,
    DEFAULT_REPEAT_PENALTY,
    ChatMessage,
    GenerationRequest,
    Runtime,
    TextStream,
)
from engines.loop_guard import find_loop, has_loop, trim_loop
from engines.rag.config import RagConfig

QuestionSet = Literal["general", "grounded"]
ANSWER_MAX_TOKENS = 320  # the chat default (settings.answer_max_tokens)
BASELINE_PENALTY = 1.0  # what both runtimes used before the shared defaults


class BenchQuestion(BaseModel):
    """One question as the runtime receives it: the chat prompt and the answer expected in it."""

    set: QuestionSet
    question: str
    answer: str
    messages: list[ChatMessage]


class AnswerRow(BaseModel):
    question: str
    expected: str
    answer: str = Field(description="What the person sees (trimmed when the guard is on).")
    tokens: int
    contains: bool
    loops: bool = Field(description="The answer as shown repeats itself.")
    guard_stopped: bool = False


class ConfigResult(BaseModel):
    """One runtime on one set with one decoding configuration."""

    runtime: str
    set: QuestionSet
    repeat_penalty: float
    repeat_last_n: int
    loop_guard: bool
    questions: int
    contains_rate: float
    loops: int
    guard_stops: int
    mean_tokens: float
    seconds: float = Field(description="Generation time of the run (shared by guard on/off).")
    answers: list[AnswerRow]


class DecodingReport(BaseModel):
    """Every configuration's results and the checks the defaults were chosen by."""

    max_tokens: int
    results: list[ConfigResult]
    gaps: dict[str, float] = Field(
        default_factory=dict,
        description="|llama.cpp - torch| answer-contains per set, at the shipped defaults.")
    checks: dict[str, bool] = Field(default_factory=dict)

    def table(self) -> str:
        """The results as a Markdown table."""
        lines = ["| runtime | set | repeat_penalty | guard | contains | loops | guard stops "
                 "| mean tokens |", "|---|---|---|---|---|---|---|---|"]
        for r in self.results:
            lines.append(f"| {r.runtime} | {r.set} | {r.repeat_penalty:g} (last {r.repeat_last_n}) "
                         f"| {'on' if r.loop_guard else 'off'} | {r.contains_rate:.3f} "
                         f"| {r.loops}/{r.questions} | {r.guard_stops} | {r.mean_tokens:.1f} |")
        return "\n".join(lines)


def _prompt(runtime: Runtime, question: str, passages: list[Passage], max_tokens: int) -> list[ChatMessage]:
    plan = build_prompt(question, passages, [], [], runtime.count_tokens, runtime.context_window,
                        max_tokens, RagConfig().context_share)
    return plan.messages


def _spread(items: list, n: int) -> list:
    """``n`` items evenly spaced through ``items`` (every kind of fact, not the first few docs)."""
    if n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def general_prompts(n: int, runtime: Runtime, max_tokens: int = ANSWER_MAX_TOKENS) -> list[BenchQuestion]:
    """``n`` general questions spread over the file (it is grouped by topic), asked without
    sources as chat asks them."""
    rows = _spread(list(general_questions()), n)
    return [BenchQuestion(set="general", question=r.question, answer=r.answer,
                          messages=_prompt(runtime, r.question, [], max_tokens)) for r in rows]


def grounded_prompts(n: int, runtime: Runtime, max_tokens: int = ANSWER_MAX_TOKENS) -> list[BenchQuestion]:
    """``n`` fictional questions, each with its own document as source [1], as chat asks them."""
    fiction = generate_fiction("small", 0)
    docs = {d.id: (i, d) for i, d in enumerate(fiction.documents)}
    out = []
    for q in _spread(fiction.questions, n):
        i, doc = docs[q.doc_id]
        lines = doc.text.count("\n")
        passage = Passage(chunk_id=i + 1, document_id=i + 1, path=f"fiction/{doc.file_name}",
                          line_start=1, line_end=max(1, lines), score=1.0, text=doc.text)
        out.append(BenchQuestion(set="grounded", question=q.question, answer=q.answer,
                                 messages=_prompt(runtime, q.question, [passage], max_tokens)))
    return out


class _Generated(BaseModel):
    pieces: list[str]
    completion_tokens: int


def _generate(runtime: Runtime, question: BenchQuestion, penalty: float, last_n: int,
              max_tokens: int) -> _Generated:
    request = GenerationRequest(messages=question.messages, max_tokens=max_tokens, temperature=0.0,
                                seed=0, repeat_penalty=penalty, repeat_last_n=last_n,
                                loop_guard=False)
    stream: TextStream
    with runtime.stream(request) as stream:
        pieces = list(stream)
        return _Generated(pieces=pieces, completion_tokens=stream.result.completion_tokens)


def _guarded(runtime: Runtime, text: str, completion_tokens: int) -> tuple[str, int, bool]:
    """(shown text, tokens generated, stopped) as ``Runtime.stream`` with the guard gives them.

    The guard decides the same whatever the pieces (tests/test_loop_guard.py checks it), so the
    finished text is enough; the tokens are those written before the loop was certain.
    """
    loop = find_loop(text)
    if loop is None:
        return text, completion_tokens, False
    return trim_loop(text), min(completion_tokens, runtime.count_tokens(text[:loop.found_at])), True


def _result(runtime: Runtime, name: str, qset: QuestionSet, penalty: float, last_n: int,
            guard: bool, rows: list[AnswerRow], seconds: float) -> ConfigResult:
    n = max(1, len(rows))
    return ConfigResult(
        runtime=name, set=qset, repeat_penalty=penalty, repeat_last_n=last_n, loop_guard=guard,
        questions=len(rows), contains_rate=round(sum(r.contains for r in rows) / n, 4),
        loops=sum(r.loops for r in rows), guard_stops=sum(r.guard_stopped for r in rows),
        mean_tokens=round(sum(r.tokens for r in rows) / n, 2), seconds=round(seconds, 1),
        answers=rows)


def answer_set(runtime: Runtime, name: str, questions: list[BenchQuestion], penalty: float,
               last_n: int = DEFAULT_REPEAT_LAST_N, max_tokens: int = ANSWER_MAX_TOKENS,
               echo: Callable[[str], None] | None = None) -> tuple[ConfigResult, ConfigResult]:
    """Answer ``questions`` greedily with ``penalty``: (without the loop guard, with it)."""
    plain: list[AnswerRow] = []
    guarded: list[AnswerRow] = []
    started = time.perf_counter()
    for q in questions:
        generated = _generate(runtime, q, penalty, last_n, max_tokens)
        text = "".join(generated.pieces)
        plain.append(AnswerRow(question=q.question, expected=q.answer, answer=text.strip(),
                               tokens=generated.completion_tokens,
                               contains=contains(text, q.answer), loops=has_loop(text)))
        shown, tokens, stopped = _guarded(runtime, text, generated.completion_tokens)
        shown = shown.strip()
        guarded.append(AnswerRow(question=q.question, expected=q.answer, answer=shown,
                                 tokens=tokens, contains=contains(shown, q.answer),
                                 loops=has_loop(shown), guard_stopped=stopped))
    seconds = time.perf_counter() - started
    qset = questions[0].set if questions else "general"
    results = (_result(runtime, name, qset, penalty, last_n, False, plain, seconds),
               _result(runtime, name, qset, penalty, last_n, True, guarded, seconds))
    if echo is not None:
        for r in results:
            echo(f"{name:8} {qset:8} penalty {penalty:<5g} guard {'on ' if r.loop_guard else 'off'} "
                 f"contains {r.contains_rate:.3f}  loops {r.loops}/{r.questions}  "
                 f"guard stops {r.guard_stops}  mean tokens {r.mean_tokens:.1f}  ({seconds:.0f} s)")
    return results


def _find(results: Iterable[ConfigResult], runtime: str, qset: str, penalty: float,
          guard: bool) -> ConfigResult | None:
    return next((r for r in results if r.runtime == runtime and r.set == qset
                 and r.repeat_penalty == penalty and r.loop_guard == guard), None)


def run_decoding_bench(llama_runtime: Runtime, torch_runtime: Runtime, n_questions: int = 60,
                       echo: Callable[[str], None] = print,
                       penalties: tuple[float, ...] = (BASELINE_PENALTY, DEFAULT_REPEAT_PENALTY),
                       repeat_last_n: int = DEFAULT_REPEAT_LAST_N,
                       max_tokens: int = ANSWER_MAX_TOKENS) -> DecodingReport:
    """Both runtimes on both sets, for each penalty, with and without the loop guard.

    The checks compare the shipped defaults (``DEFAULT_REPEAT_PENALTY`` with the guard) against
    the targets: runtimes within 0.05 answer-contains of each other on each set, no looping
    answer, and answer-contains not below llama.cpp's before the change (penalty 1.0, no guard).
    """
    results: list[ConfigResult] = []
    runtimes = {"llamacpp": llama_runtime, "torch": torch_runtime}
    for name, runtime in runtimes.items():
        sets = {"general": general_prompts(n_questions, runtime, max_tokens),
                "grounded": grounded_prompts(n_questions, runtime, max_tokens)}
        for questions in sets.values():
            for penalty in penalties:
                results.extend(answer_set(runtime, name, questions, penalty, repeat_last_n,
                                          max_tokens, echo))
    report = DecodingReport(max_tokens=max_tokens, results=results)
    for qset in ("general", "grounded"):
        ours = [_find(results, rt, qset, DEFAULT_REPEAT_PENALTY, True) for rt in runtimes]
        before = _find(results, "llamacpp", qset, BASELINE_PENALTY, False)
        if ours[0] is None or ours[1] is None:
            continue
        gap = abs(ours[0].contains_rate - ours[1].contains_rate)
        report.gaps[qset] = round(gap, 4)
        report.checks[f"{qset}: runtimes within 0.05"] = gap <= 0.05
        report.checks[f"{qset}: no looping answer"] = ours[0].loops == ours[1].loops == 0
        if before is not None:
            report.checks[f"{qset}: not worse than llama.cpp before"] = all(
                r.contains_rate >= before.contains_rate for r in ours)
    return report


def print_decoding_report(report: DecodingReport, echo: Callable[[str], None]) -> None:
    """The table, the gaps between runtimes and each check with its verdict."""
    from app.bench.verdict import verdict

    echo("")
    echo(report.table())
    for qset, gap in report.gaps.items():
        echo(f"{qset}: |llama.cpp - torch| answer-contains at the defaults {gap:.3f}")
    for check, ok in report.checks.items():
        echo(f"check {check}: {verdict(ok)}")


def run_decoding_command(settings: Settings, n_questions: int, echo: Callable[[str], None],
                         penalties: tuple[float, ...] = (BASELINE_PENALTY, DEFAULT_REPEAT_PENALTY)
                         ) -> DecodingReport:
    """``engram bench decoding``: the configured llama.cpp model and the torch model built from
    the same weights, each in the process the app runs it in."""
    from app.runtimes.active import runtime_options
    from app.runtimes.registry import make_runtime

    llama = make_runtime("llamacpp", settings.chat_model if settings.chat_backend == "llamacpp" else "embedded",
                         **runtime_options(settings, "llamacpp"))
    torch_rt = make_runtime("torch", settings.neocortex_model, **runtime_options(settings, "torch"))
    try:
        report = run_decoding_bench(llama, torch_rt, n_questions, echo, penalties)
    finally:
        for runtime in (llama, torch_rt):
            runtime.close()
    print_decoding_report(report, echo)
    return report
