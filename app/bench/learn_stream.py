"""``engram bench learn --stream DAYS``: documents arriving over simulated days, a sleep between days.

The set's documents are split into ``DAYS`` consecutive groups. Each arm learns one day's group,
then sleeps (the arms that sleep; no night follows the last day), and after every day its choice accuracy is measured on the
questions of every day so far, so what it forgets of earlier days shows as the stream goes on.
Arms (issue 31): ``cls`` (experts by day, consolidation in sleep), ``naive`` (sequential
finetuning: one LoRA of the same rank and place, no replay, no sleep), ``replay`` (the same one
LoRA, replaying its earlier episodes and background prose, no sleep) and ``ttt`` (with its own
sleep). ``naive`` and ``replay`` run the CLS code with a pool of one expert, so only the
mechanism differs. Per day, the CLS arm also reports its experts' utilisation (documents each
expert learned, answers each was routed) and its growth, prune and sleep events with reasons.

Scores are the 4-way choice by likelihood (chance 0.25): the free-text headline of the learning
bench costs a generation per question per day per arm, too slow for a stream on a CPU; this bench
is about what is kept over time, and its forgetting measures are comparisons within one arm.
Forgetting of a day: its questions' best accuracy after it was learned minus the final one;
backward transfer: final minus right after it was learned (Lopez-Paz & Ranzato 2017).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from app.bench.learn_measures import chat_prompt
from app.bench.learn_sets import BenchQuestion, BenchSet, SetName, load_set
from app.bench.model_eval import option_logprobs, perplexity, rank_accuracy
from app.services.general_text import heldout_text
from app.settings import Settings
from engines.base import Budget, Engine, Neocortex, Query, contribute_all

Echo = Callable[[str], None]
ONE_EXPERT = {"max_experts": 1}
ARMS: dict[str, tuple[str, dict[str, Any], bool]] = {  # arm: engine, overrides, sleeps
    "cls": ("cls", {}, True),
    "naive": ("cls", {**ONE_EXPERT, "own_replay": 0, "replay_tokens": 0}, False),
    "replay": ("cls", ONE_EXPERT, False),
    "ttt": ("ttt", {}, True),
}
DRIFT_CHARS = 6000  # held-out English scored after each day (about 1,500 tokens)


class ExpertUse(BaseModel):
    slot: int
    documents: int = Field(description="Documents learned into it.")
    routed: int = Field(description="Answer batches it was routed (its utilisation by questions).")
    consolidated: bool


class StreamDay(BaseModel):
    day: int
    documents: list[str]
    learn_seconds: float
    sleep_seconds: float = 0.0
    sleep: dict[str, Any] | None = None
    accuracy: list[float] = Field(description="Choice accuracy on each day's questions so far (index: day).")
    seen_accuracy: float = Field(description="Choice accuracy on every question of the days so far.")
    drift: float = Field(description="Held-out English perplexity against the base model's, - 1.")
    experts: list[ExpertUse] = []
    events: list[str] = Field(default_factory=list, description="Growth, prune, sleep and rollback events "
                              "of the day, with their reasons (CLS arms).")


class StreamArm(BaseModel):
    arm: str
    engine: str
    overrides: dict[str, Any]
    sleeps: bool
    days: list[StreamDay] = []
    final_accuracy: float = 0.0
    forgetting: float = 0.0
    backward_transfer: float = 0.0
    grown: int = 0
    pruned: int = 0


class StreamReport(BaseModel):
    created_at: str
    set: str
    size: str
    seed: int | None
    days: int
    documents: int
    questions: int
    sleep_seconds: float
    torch_threads: int
    base_accuracy: list[float] = Field(description="The untouched model's choice accuracy per day's questions.")
    base_perplexity: float
    drift_chars: int
    arms: dict[str, StreamArm] = {}
    seconds: float = 0.0


def split_days(bench_set: BenchSet, days: int, limit: int | None = None) -> list[list[str]]:
    """The documents' file names in ``days`` consecutive groups (the first ``limit`` documents)."""
    names = [d.file_name for d in bench_set.documents][:limit]
    if not 1 <= days <= len(names):
        raise ValueError(f"--stream takes 1 to {len(names)} days for {len(names)} documents (got {days})")
    cuts = [round(i * len(names) / days) for i in range(days + 1)]
    return [names[cuts[i]:cuts[i + 1]] for i in range(days)]


def day_accuracy(right: Sequence[bool], questions: Sequence[BenchQuestion], groups: list[list[str]]) -> list[float]:
    """Choice accuracy on each group's questions (groups without questions score 0)."""
    out = []
    for group in groups:
        mine = [r for r, q in zip(right, questions) if q.doc_file in group]
        out.append(sum(mine) / len(mine) if mine else 0.0)
    return out


def forgetting_figures(days: list[StreamDay]) -> tuple[float, float]:
    """(mean forgetting, backward transfer) over every day but the last."""
    if len(days) < 2:
        return 0.0, 0.0
    final = days[-1].accuracy
    earlier = range(len(days) - 1)
    forgot = [max(d.accuracy[k] for d in days[k:]) - final[k] for k in earlier]
    transfer = [final[k] - days[k].accuracy[k] for k in earlier]
    return sum(forgot) / len(forgot), sum(transfer) / len(transfer)


def run_stream_bench(settings: Settings, arms: list[str], days: int, set_name: SetName = "natural",
                     size: str | int = "tiny", seed: int = 0, sleep: float = 30.0, limit: int | None = None,
                     echo: Echo = print, cortex: Neocortex | None = None, threads: int | None = None,
                     drift_chars: int = DRIFT_CHARS) -> StreamReport:
    """Run every arm over the stream and save the report (``cortex``: a loaded model the caller closes;
    ``drift_chars``: how much held-out English the drift is measured on after each day)."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown stream arm(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ARMS)}")
    if threads:
        torch.set_num_threads(threads)
    from app.paths import DataPaths
    from app.runtimes.neocortex import load_neocortex

    started = time.perf_counter()
    paths = DataPaths(root=settings.data_dir).ensure()
    bench_set = load_set(set_name, size, seed)
    groups = split_days(bench_set, days, limit)
    kept = {n for g in groups for n in g}
    bench_set = bench_set.model_copy(update={"documents": [d for d in bench_set.documents if d.file_name in kept],
                                             "questions": [q for q in bench_set.questions if q.doc_file in kept]})
    echo(f"Stream: {len(kept)} {set_name} documents over {days} days, {len(bench_set.questions)} questions, "
         f"sleep {sleep:.0f} s between days; arms {', '.join(arms)}")
    owned = cortex is None
    if cortex is None:
        cortex = load_neocortex(settings.neocortex_model, settings.device, paths.cache)
    try:
        base_right = _right(cortex, settings, bench_set.questions, [])
        report = StreamReport(
            created_at=datetime.now().isoformat(timespec="seconds"), set=set_name, size=bench_set.size,
            seed=bench_set.seed, days=days, documents=len(kept), questions=len(bench_set.questions),
            sleep_seconds=sleep, torch_threads=torch.get_num_threads(),
            base_accuracy=day_accuracy(base_right, bench_set.questions, groups),
            base_perplexity=perplexity(cortex, heldout_text()[:drift_chars])[0], drift_chars=drift_chars)
        echo(f"base model: choice per day {_fmt(report.base_accuracy)}, perplexity {report.base_perplexity:.2f}")
        for arm in arms:
            report.arms[arm] = _run_arm(settings, cortex, bench_set, groups, arm, sleep, report, echo)
    finally:
        if owned:
            cortex.close()  # type: ignore[attr-defined]
    report.seconds = time.perf_counter() - started
    save_stream_report(report, paths.bench)
    print_stream_report(report, echo)
    return report


def _run_arm(settings: Settings, cortex: Neocortex, bench_set: BenchSet, groups: list[list[str]], arm: str,
             sleep: float, report: StreamReport, echo: Echo) -> StreamArm:
    """One arm over the stream, in its own temporary store (no arm sees another's episodes)."""
    from app.bench.learn import LearnBench, _release

    name, overrides, sleeps = ARMS[arm]
    result = StreamArm(arm=arm, engine=name, overrides=overrides, sleeps=sleeps)
    with tempfile.TemporaryDirectory(prefix="engram-stream-bench-") as tmp:
        bench = LearnBench(settings, bench_set, cortex, Path(tmp), False, echo)
        engine = bench.build(name, overrides)
        by_name = {Path(d.path).name: d for d in bench.documents}
        try:
            for day, group in enumerate(groups):
                night = sleep if sleeps and day < len(groups) - 1 else 0.0  # a sleep between days
                result.days.append(_day(bench, engine, [by_name[n] for n in group], groups[:day + 1], night, report))
                echo(f"{arm} day {day + 1}: choice per day {_fmt(result.days[-1].accuracy)}, drift "
                     f"{result.days[-1].drift:+.2%}" + (f", {len(engine.experts)} experts"  # type: ignore[attr-defined]
                                                         if hasattr(engine, "experts") else ""))
        finally:
            _release(engine)
            bench.close()
    result.final_accuracy = result.days[-1].seen_accuracy
    result.forgetting, result.backward_transfer = forgetting_figures(result.days)
    events = [e for d in result.days for e in d.events]
    result.grown = sum(e.startswith("grow") for e in events)
    result.pruned = sum(e.startswith("prune") for e in events)
    return result


def _day(bench: Any, engine: Engine, documents: list[Any], groups: list[list[str]], sleep: float,
         report: StreamReport) -> StreamDay:
    """Learn the day's documents, sleep (but after the last day), then measure every day so far."""
    events = getattr(engine, "episodes", None)
    seen = events.events(1)[-1].id if events is not None and events.events(1) else 0
    learned = sum(engine.learn(d).seconds for d in documents)
    slept = engine.consolidate(Budget(seconds=sleep)) if sleep > 0 else None
    asked = [q for q in bench.questions if any(q.doc_file in g for g in groups)]
    right = _right(bench.cortex, bench.settings, asked, [engine])
    accuracy = day_accuracy(right, asked, groups)
    return StreamDay(
        day=len(groups), documents=groups[-1], learn_seconds=learned,
        sleep_seconds=slept.seconds if slept else 0.0, sleep=slept.details if slept else None,
        accuracy=accuracy, seen_accuracy=sum(right) / len(right) if right else 0.0,
        drift=perplexity(bench.cortex, heldout_text()[:report.drift_chars])[0] / report.base_perplexity - 1.0,
        experts=_experts(engine),
        events=[f"{e.kind}: {e.reason}" for e in (events.events(10_000) if events is not None else [])
                if e.id > seen and e.kind != "route"])


def _experts(engine: Engine) -> list[ExpertUse]:
    experts = getattr(engine, "experts", None) or {}
    return [ExpertUse(slot=s, documents=len(i.documents), routed=i.uses, consolidated=i.consolidated)
            for s, i in sorted(experts.items())]


def _right(cortex: Neocortex, settings: Settings, questions: Sequence[BenchQuestion], engines: list[Engine]
           ) -> list[bool]:
    """Which questions the model ranks the right option first, asked as chat asks them."""
    prompts = [chat_prompt(q.question, contribute_all(engines, Query(text=q.question)), cortex, settings)
               for q in questions]
    scores = option_logprobs(cortex, prompts, [q.options for q in questions], queries=[q.question for q in questions])
    return rank_accuracy(scores, [q.options.index(q.answer) for q in questions])


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def save_stream_report(report: StreamReport, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"learn-stream-{report.created_at.replace(':', '')}.json"
    path.write_text(report.model_dump_json(indent=2))
    return path


def print_stream_report(report: StreamReport, echo: Echo) -> None:
    """One row per arm: accuracy after the last day, forgetting, backward transfer, drift, events."""
    echo(f"\nStream of {report.documents} documents over {report.days} days ({report.set} {report.size}, "
         f"{report.questions} questions, choice accuracy; chance 0.25); base model "
         f"{sum(report.base_accuracy) / max(1, len(report.base_accuracy)):.3f} per day on average")
    echo("| arm | final accuracy | forgetting | backward transfer | drift | grown / pruned | learn / sleep s |")
    echo("| --- | --- | --- | --- | --- | --- | --- |")
    for arm in report.arms.values():
        last = arm.days[-1]
        learn = sum(d.learn_seconds for d in arm.days)
        slept = sum(d.sleep_seconds for d in arm.days)
        echo(f"| {arm.arm} | {arm.final_accuracy:.3f} | {arm.forgetting:.3f} | {arm.backward_transfer:+.3f} | "
             f"{last.drift:+.2%} | {arm.grown} / {arm.pruned} | {learn:.0f} / {slept:.0f} |")
    for arm in report.arms.values():
        if arm.days[-1].experts:
            uses = ", ".join(f"{e.slot}: {e.documents} docs, {e.routed} routed" + (" (consolidated)"
                             if e.consolidated else "") for e in arm.days[-1].experts)
            echo(f"{arm.arm} experts after the last day: {uses}")
