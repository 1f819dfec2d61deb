"""``engram bench d2l-curve``: what Doc-to-LoRA's adapters hold, against how long its
hypernetwork was meta-trained.

Issue 30 asks for the learned score as a plot against meta-training time. One hypernetwork, in a
temporary store, is meta-trained in steps up to each budget in turn (it resumes, so the budgets
are cumulative) on documents of another seed of the same generator (never the test documents).
At each budget every test document is learned again, one hypernetwork pass each, and the set's
questions are asked closed book as chat asks them: free text first (answers containing the
answer, exact match), then 4-way choice by likelihood. The base model's scores are the floor.
The JSON and the PNG go to the bench folder beside the other benches' reports.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from app.bench.learn import LearnBench, _release
from app.bench.learn_measures import Learned, score_questions
from app.bench.learn_report import png, save_with_plot
from app.bench.learn_sets import SetName, load_set
from app.settings import Settings
from engines.base import Engine, Neocortex

Echo = Callable[[str], None]
PREFIX = "d2l-curve"


class CurvePoint(BaseModel):
    """The test documents learned and asked after ``trained_seconds`` of meta-training."""

    budget_seconds: float = Field(description="The cumulative meta-training budget of this point.")
    trained_seconds: float = Field(description="Meta-training time the hypernetwork's record holds.")
    steps: int
    loss_last: float | None = Field(None, description="Mean distillation loss of the last logged window.")
    learn_seconds: float = Field(description="Mean seconds to learn one test document (one pass).")
    after: Learned


class CurveReport(BaseModel):
    created_at: str
    set: str
    size: str
    seed: int
    model: str
    device: str
    torch_threads: int
    documents: int
    questions: int
    base: Learned
    points: list[CurvePoint] = Field(default_factory=list)
    seconds: float = 0.0
    json_path: str | None = None
    plot_path: str | None = None
    notes: list[str] = Field(default_factory=list)


def budgets(text: str) -> list[float]:
    """'60,180,300' -> [60.0, 180.0, 300.0]: positive and increasing (the training resumes)."""
    values = [float(p) for p in text.split(",") if p.strip()]
    if not values or values[0] <= 0 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{text!r}: give increasing positive seconds, comma-separated, e.g. 60,180,300")
    return values


def run_d2l_curve(settings: Settings, cortex: Neocortex, seconds: list[float], set_name: SetName = "natural",
                  size: str | int = "tiny", seed: int = 0, echo: Echo = print) -> CurveReport:
    """Every budget in ``seconds`` in turn (``cortex``: the loaded torch model; the caller closes it)."""
    started = time.perf_counter()
    documents = load_set(set_name, size, seed)
    echo(f"{set_name.capitalize()} set '{documents.size}' (seed {documents.seed}): {len(documents.documents)} "
         f"documents, {len(documents.questions)} questions; meta-training budgets {seconds} s")
    with tempfile.TemporaryDirectory(prefix="engram-d2l-curve-") as tmp:
        bench = LearnBench(settings, documents, cortex, Path(tmp), True, echo, seconds[0])
        try:
            echo("Asking the base model...")
            base = score_questions(cortex, bench.prompts([]), bench.questions, True)
            report = CurveReport(created_at=datetime.now().isoformat(timespec="seconds"), set=set_name,
                                 size=str(documents.size), seed=documents.seed, model=cortex.model_name,
                                 device=cortex.device, torch_threads=torch.get_num_threads(),
                                 documents=len(documents.documents), questions=len(documents.questions), base=base)
            engine = bench.build("d2l", {})  # meta-trained for the first budget
            try:
                for n, budget in enumerate(seconds):
                    if n:
                        bench.meta_train_more(engine, budget - seconds[n - 1])
                    report.points.append(_point(bench, engine, budget))
                    echo(_line(report.points[-1], base))
            finally:
                _release(engine)
        finally:
            bench.close()
    report.seconds = time.perf_counter() - started
    return report


def _point(bench: LearnBench, engine: Engine, budget: float) -> CurvePoint:
    learned = [engine.learn(d) for d in bench.documents]
    stats = engine.stats()
    return CurvePoint(budget_seconds=budget, trained_seconds=float(stats["hypernetwork_seconds"]),
                      steps=int(stats["hypernetwork_steps"]), loss_last=stats["hypernetwork_loss"],
                      learn_seconds=sum(r.seconds for r in learned) / max(1, len(learned)),
                      after=bench.scores([engine]))


def _line(p: CurvePoint, base: Learned) -> str:
    return (f"  after {p.trained_seconds:.0f} s ({p.steps} steps): contains {p.after.contains:.3f} "
            f"(base {base.contains:.3f}), exact {p.after.exact_match:.3f}, choice {p.after.choice_accuracy:.3f} "
            f"(base {base.choice_accuracy:.3f}), {p.after.loops} looped; learn {p.learn_seconds:.2f} s per document")


def print_curve(report: CurveReport, echo: Echo) -> None:
    echo(f"d2l learned score against meta-training time, {report.set} set '{report.size}', {report.model} "
         f"({report.torch_threads} torch threads):")
    echo(f"{'trained s':>10} {'steps':>6} {'loss':>7} {'contains':>9} {'exact':>6} {'choice':>7} {'learn s':>8}")
    b = report.base
    echo(f"{'base':>10} {'':>6} {'':>7} {b.contains or 0:>9.3f} {b.exact_match or 0:>6.3f} {b.choice_accuracy:>7.3f}")
    for p in report.points:
        loss = f"{p.loss_last:.3f}" if p.loss_last is not None else "n/a"
        echo(f"{p.trained_seconds:>10.0f} {p.steps:>6} {loss:>7} {p.after.contains or 0:>9.3f} "
             f"{p.after.exact_match or 0:>6.3f} {p.after.choice_accuracy:>7.3f} {p.learn_seconds:>8.2f}")
    if report.plot_path:
        echo(f"plot:   {report.plot_path}")
    if report.json_path:
        echo(f"report: {report.json_path}")


def save_curve(report: CurveReport, folder: Path) -> None:
    """Write ``d2l-curve-<time>.json`` and its PNG."""
    save_with_plot(report, folder, PREFIX, plot_curve)


def plot_curve(report: CurveReport) -> bytes:
    """PNG: each score against meta-training seconds, the base model's as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    x = [p.trained_seconds for p in report.points]
    series = [("answers containing the answer", lambda s: s.contains or 0.0),
              ("exact answers", lambda s: s.exact_match or 0.0),
              ("4-way choice (chance 0.25)", lambda s: s.choice_accuracy)]
    for i, (label, score) in enumerate(series):
        ax.plot(x, [score(p.after) for p in report.points], marker="o", color=f"C{i}", label=f"d2l: {label}")
        ax.axhline(score(report.base), color=f"C{i}", linestyle="--", alpha=0.6, linewidth=1)
    ax.set_xlabel("hypernetwork meta-training (seconds)")
    ax.set_ylabel("closed-book score (dashed: base model)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"d2l: learned vs meta-training, {report.set} '{report.size}', {report.model}", fontsize=10)
    return png(fig)
