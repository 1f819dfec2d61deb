"""``engram bench hmst`` (the critic part): precision and recall of flagging fabricated sentences.

The labelled answers come from ``app.bench.critic_set`` (faithful and fabricated sentences made
from a natural set's questions, by code that shares nothing with the critic). Each sentence is
checked against its document split into paragraphs (the passages a chat answer is given), with
the question. Rules alone run on every sentence; rules + the chat model's judgement on an even
sample of ``model_items`` (the model is slow on CPU), with the rules' figures on that same sample
beside it. The hand-written held-out set is reported separately. The controller part
(``app.bench.controller``) runs after it; the memory tiers are not built yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from app.bench.controller import ControllerBench
from app.bench.critic_set import LabelledAnswer, LabelledSet, build
from app.chat.critic import CriticMode, Judge, ModelJudge, critique
from app.settings import Settings

Echo = Callable[[str], None]
TARGET = 0.8


class Score(BaseModel):
    mode: CriticMode
    items: int
    fabricated: int
    flagged: int
    true_flags: int
    precision: float
    recall: float
    seconds_per_sentence: float
    by_kind: dict[str, str] = Field(default_factory=dict, description="How made -> flagged/items.")
    missed: list[str] = Field(default_factory=list, description="Fabricated sentences not flagged (a few).")
    false_flags: list[str] = Field(default_factory=list, description="Faithful sentences flagged, with the reason.")


class SetScores(BaseModel):
    set: str
    items: int
    rules: Score
    rules_on_sample: Score | None = None
    rules_model: Score | None = None


class CriticBench(BaseModel):
    precision: float = Field(description="Of the default mode (rules) on the natural set.")
    recall: float
    natural: SetScores
    handwritten: SetScores | None = None
    model: str = ""


class HmstReport(BaseModel):
    critic: CriticBench
    controller: ControllerBench | None = None
    notes: list[str] = Field(default_factory=list)


def passages_of(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def score(labelled: LabelledSet, items: list[LabelledAnswer], mode: CriticMode,
          judge: Judge | None = None, show: int = 8) -> Score:
    started = time.perf_counter()
    flagged: list[tuple[LabelledAnswer, str]] = []
    for item in items:
        report = critique(item.sentence, passages_of(labelled.documents[item.doc_id]), item.question,
                          mode, judge)
        if report.unsupported:
            flagged.append((item, report.flagged[0].reason))
    seconds = time.perf_counter() - started
    hits = [i for i, _ in flagged if i.fabricated]
    fabricated = [i for i in items if i.fabricated]
    flagged_ids = {id(i) for i, _ in flagged}
    kinds: dict[str, list[int]] = {}
    for item in items:
        kinds.setdefault(item.how + (" (value in document)" if item.in_document else ""), [0, 0])
        counts = kinds[item.how + (" (value in document)" if item.in_document else "")]
        counts[0] += id(item) in flagged_ids
        counts[1] += 1
    return Score(
        mode=mode, items=len(items), fabricated=len(fabricated), flagged=len(flagged), true_flags=len(hits),
        precision=round(len(hits) / len(flagged), 3) if flagged else 0.0,
        recall=round(len(hits) / len(fabricated), 3) if fabricated else 0.0,
        seconds_per_sentence=round(seconds / max(1, len(items)), 4),
        by_kind={k: f"{a}/{b}" for k, (a, b) in sorted(kinds.items())},
        missed=[i.sentence for i in fabricated if id(i) not in flagged_ids][:show],
        false_flags=[f"{i.sentence} -- {why}" for i, why in flagged if not i.fabricated][:show])


def sample(items: list[LabelledAnswer], n: int) -> list[LabelledAnswer]:
    """``n`` items spread evenly over the set (all when n >= its size)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(k * step)] for k in range(n)]


def score_set(labelled: LabelledSet, judge: Judge | None, model_items: int, echo: Echo) -> SetScores:
    rules = score(labelled, labelled.answers, "rules")
    out = SetScores(set=labelled.name, items=len(labelled.answers), rules=rules)
    print_score(labelled.name, rules, echo)
    if judge is not None and model_items > 0:
        chosen = sample(labelled.answers, model_items)
        out.rules_on_sample = score(labelled, chosen, "rules")
        out.rules_model = score(labelled, chosen, "model", judge)
        print_score(f"{labelled.name} (sample)", out.rules_on_sample, echo)
        print_score(f"{labelled.name} (sample)", out.rules_model, echo)
    return out


def print_score(name: str, s: Score, echo: Echo) -> None:
    label = "rules" if s.mode == "rules" else "rules + model"
    verdict = "PASS" if s.precision >= TARGET and s.recall >= TARGET else "MISS"
    echo(f"{name:<20} {label:<14} {s.items:>4} sentences ({s.fabricated} fabricated): precision "
         f"{s.precision:.3f}, recall {s.recall:.3f} (target >= {TARGET}: {verdict}); "
         f"{1000 * s.seconds_per_sentence:.1f} ms a sentence")
    echo("    flagged by kind: " + ", ".join(f"{k} {v}" for k, v in s.by_kind.items()))
    for line in s.missed:
        echo(f"    missed: {line}")
    for line in s.false_flags:
        echo(f"    false flag: {line}")


def run_critic_bench(settings: Settings, size: str = "small", seed: int = 0, model: bool = True,
                     model_items: int = 40, handwritten: bool = True, echo: Echo = print,
                     judge: Judge | None = None) -> HmstReport:
    """Score the critic on the natural set of ``size`` (and the hand-written one); with ``model``,
    the configured chat model judges ``model_items`` sentences of each set too."""
    from app.bench.handwritten_set import load as load_handwritten
    from app.bench.natural import generate

    runtime = None
    model_name = ""
    if model and judge is None:
        from app.runtimes.active import runtime_options
        from app.runtimes.registry import make_runtime

        runtime = make_runtime(settings.chat_backend, settings.chat_model,
                               **runtime_options(settings, settings.chat_backend))
        judge, model_name = ModelJudge(runtime), f"{runtime.name}: {runtime.model_name}"
    try:
        echo(f"Critic on the natural set '{size}' (seed {seed})" + (f", judged by {model_name}" if model_name else ""))
        natural = score_set(build(generate(size, seed), seed), judge if model else None, model_items, echo)  # type: ignore[arg-type]
        held_out = None
        if handwritten:
            held_out = score_set(build(load_handwritten(), seed).model_copy(update={"name": "handwritten"}),
                                 judge if model else None, model_items, echo)
    finally:
        if runtime is not None:
            runtime.close()
    return HmstReport(critic=CriticBench(precision=natural.rules.precision, recall=natural.rules.recall,
                                         natural=natural, handwritten=held_out, model=model_name))
