"""``engram bench learn``: what an engine learns from documents, and what it forgets doing so.

The documents are fictional (``app.bench.fiction``): invented people, towns and products whose facts no
model can know. Every engine runs through the same steps, in a temporary store:

1. the documents are ingested (chunked, embedded, indexed) as the app would;
2. the engine learns each document, in order, through its ``learn`` (timed; tokens counted);
3. each question is asked the way chat asks it: the engine's ``contribute`` gives passages
   and bullets (retrieval: open book) or names learned weights (closed book), and the prompt is
   built by the chat's own ``build_prompt``.

Learned (before vs after): 4-way multiple choice by likelihood (the answer's log-likelihood
against three same-kind distractors; chance is 0.25) and, optionally, the greedy answer's exact
match / answer contained. Forgot: perplexity drift on held-out general English (``data/``, never
trained on) and accuracy on the general-knowledge questions the base model gets right before
learning; forgetting ratio = (before - after) / before. The same ratio is also given on a
second, held-out set of general questions that no default was chosen on (``heldout_questions``).
Engines that do not change weights leave all of it exactly as the base model has them.

Rows: the untouched base model, then each engine (``--engine all``: every registered one; with
``--ablations`` the TTT grid: gated / ungated / full finetune of the same layers, each with and
without rehearsal and replay). The report is written as JSON with a PNG plot under the data
folder's ``bench/``; ``latest_learn_report`` finds the newest for the UI.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field

from app.bench.verdict import verdict
from app.bench.fiction import FictionSet, Question, Size, generate
from app.services.general_text import GeneralQuestion, general_questions, heldout_questions, heldout_text
from app.chat.prompt import build_prompt
from app.bench.model_eval import (
    contains,
    exact_match,
    greedy_answers,
    option_logprobs,
    perplexity,
    rank_accuracy,
    render,
)
from app.settings import LoadedSettings, Settings
from engines.base import Budget, Contribution, Engine, Neocortex, Query
from engines.generation import ChatMessage

Echo = Callable[[str], None]
NO_REMEDIES = {"rehearsal_qa": False, "rehearsal_paraphrase": False, "replay_tokens": 0,
               "replay_questions": 0}
ABLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("ttt gated +rehearsal/replay", {"mode": "dual", "gate": True}),
    ("ttt gated", {"mode": "dual", "gate": True, **NO_REMEDIES}),
    ("ttt ungated +rehearsal/replay", {"mode": "dual", "gate": False}),
    ("ttt ungated", {"mode": "dual", "gate": False, **NO_REMEDIES}),
    ("full finetune +rehearsal/replay", {"mode": "full"}),
    ("full finetune", {"mode": "full", **NO_REMEDIES}),
]
SPEED_TOKENS = 2000
TARGET_SPEED_S = 60.0


class Learned(BaseModel):
    """Scores on the fictional questions."""

    choice_accuracy: float = Field(description="4-way multiple choice by likelihood.")
    exact_match: float | None = None
    contains: float | None = None


class Forgot(BaseModel):
    perplexity: float
    perplexity_drift: float = Field(description="(after - before) / before on held-out text.")
    general_accuracy: float = Field(description="On the questions the base model got right.")
    forgetting_ratio: float = Field(description="(before - after) / before of general_accuracy.")
    heldout_forgetting_ratio: float | None = Field(
        None, description="The same on the held-out general questions no default was chosen on.")
    unrouted: Forgot | None = Field(None, description="The same with the learned weights applied to "
                                    "every answer (engines that route them by the question).")

    @classmethod
    def nothing(cls, perplexity: float) -> Forgot:
        """The base model's own weights: nothing forgotten."""
        return cls(perplexity=perplexity, perplexity_drift=0.0, general_accuracy=1.0, forgetting_ratio=0.0,
                   heldout_forgetting_ratio=0.0)


class EngineRun(BaseModel):
    label: str
    engine: str | None = None
    kind: Literal["base", "context", "weights"]
    overrides: dict[str, Any] = Field(default_factory=dict)
    before: Learned
    after: Learned
    forgot: Forgot
    learn_seconds: float = 0.0
    document_tokens: int = 0
    tokens_per_second: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)


class SpeedRun(BaseModel):
    label: str
    tokens: int
    seconds: float
    tokens_per_second: float
    trained_tokens: int


class LearnBenchReport(BaseModel):
    created_at: str
    size: str
    seed: int
    documents: int
    questions: int
    general_questions: int
    general_known: int
    heldout_tokens: int
    heldout_questions: int = 0
    heldout_known: int = 0
    model: str
    device: str
    torch_threads: int
    cpu_count: int
    load_before: list[float]
    load_after: list[float] = Field(default_factory=list)
    runs: list[EngineRun] = Field(default_factory=list)
    speed: list[SpeedRun] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    json_path: str | None = None
    plot_path: str | None = None


class _Baseline(BaseModel):
    """The untouched model's figures every run is compared with."""

    learned: Learned
    perplexity: float
    known: list[int]
    known_heldout: list[int]


def _closed_book(question: str, contributions: list[Contribution], cortex: Neocortex,
                 settings: Settings) -> str:
    """The prompt chat would send for ``question`` with these contributions (as text)."""
    passages = [p for c in contributions for p in c.passages]
    bullets = [b for c in contributions for b in c.bullets]
    count = lambda text: len(cortex.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    window = int(getattr(cortex.model.config, "max_position_embeddings", 2048))
    plan = build_prompt(question, passages, bullets, [], count, window,
                        settings.answer_max_tokens, settings.rag.context_share)
    return render(cortex, plan.messages)


def score_questions(cortex: Neocortex, prompts: list[str], questions: list[Question],
                    free_text: bool, echo: Echo) -> Learned:
    asked = [q.question for q in questions]
    scores = option_logprobs(cortex, prompts, [q.options for q in questions], queries=asked)
    right = rank_accuracy(scores, [q.options.index(q.answer) for q in questions])
    learned = Learned(choice_accuracy=sum(right) / len(right))
    if free_text:
        answers = greedy_answers(cortex, prompts, queries=asked)
        learned.exact_match = sum(exact_match(q.answer, a) for q, a in zip(questions, answers)) / len(questions)
        learned.contains = sum(contains(q.answer, a) for q, a in zip(questions, answers)) / len(questions)
    return learned


def general_scores(cortex: Neocortex, settings: Settings, routed: bool = True,
                   items: tuple[GeneralQuestion, ...] | None = None) -> list[bool]:
    """Which general-knowledge questions (default: the bench's set) the model answers right
    (closed book)."""
    items = general_questions() if items is None else items
    prompts = [_closed_book(q.question, [], cortex, settings) for q in items]
    scores = option_logprobs(cortex, prompts, [q.options for q in items],
                             queries=[q.question for q in items] if routed else None)
    return rank_accuracy(scores, [q.options.index(q.answer) for q in items])


def forgot(cortex: Neocortex, settings: Settings, base: _Baseline, routed: bool = True) -> Forgot:
    ppl, _ = perplexity(cortex, heldout_text(), route=routed)
    right = general_scores(cortex, settings, routed)
    after = sum(right[i] for i in base.known) / max(1, len(base.known))
    heldout = general_scores(cortex, settings, routed, heldout_questions())
    kept = sum(heldout[i] for i in base.known_heldout) / len(base.known_heldout) if base.known_heldout else None
    return Forgot(perplexity=ppl, perplexity_drift=(ppl - base.perplexity) / base.perplexity,
                  general_accuracy=after, forgetting_ratio=1.0 - after,
                  heldout_forgetting_ratio=None if kept is None else 1.0 - kept)


class LearnBench:
    """One bench run: a temporary Engram holding the fictional documents, one shared model."""

    def __init__(self, settings: Settings, fiction: FictionSet, cortex: Neocortex, root: Path,
                 free_text: bool, echo: Echo) -> None:
        from app.core import Engram

        self.settings = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop"})
        self.fiction = fiction
        self.cortex = cortex
        self.free_text = free_text
        self.echo = echo
        self.engram = Engram(LoadedSettings(settings=self.settings, sources={}, config_file=root / "none.toml"))
        self.engram.adopt_neocortex(cortex)  # type: ignore[arg-type]
        folder = root / "documents"
        fiction.write(folder)
        self.engram.ingest([folder])
        self.engram.run_pending()
        rows = {Path(path).name: i for path, i in self.engram.docs.ids_by_path().items()}
        self.document_ids = [rows[d.file_name] for d in fiction.documents]
        self.questions = fiction.questions

    def close(self) -> None:
        self.engram.close()

    def prompts(self, engine: Engine | None) -> list[str]:
        out = []
        for q in self.questions:
            contributions = [engine.contribute(Query(text=q.question))] if engine else []
            out.append(_closed_book(q.question, contributions, self.cortex, self.settings))
        return out

    def baseline(self) -> tuple[_Baseline, EngineRun]:
        self.echo("Measuring the untouched base model...")
        learned = score_questions(self.cortex, self.prompts(None), self.questions, self.free_text, self.echo)
        ppl, _ = perplexity(self.cortex, heldout_text())
        right = general_scores(self.cortex, self.settings)
        heldout = general_scores(self.cortex, self.settings, items=heldout_questions())
        base = _Baseline(learned=learned, perplexity=ppl, known=[i for i, ok in enumerate(right) if ok],
                         known_heldout=[i for i, ok in enumerate(heldout) if ok])
        run = EngineRun(label="base model (closed book)", kind="base", before=learned, after=learned,
                        forgot=Forgot.nothing(ppl),
                        details={"general_accuracy_all": sum(right) / len(right)})
        return base, run

    def build(self, name: str, overrides: dict[str, Any]) -> Engine:
        from engines.registry import build_engine

        config = getattr(self.settings, name, None)
        if config is not None and overrides:
            config = config.model_copy(update=overrides)
        engine = build_engine(name, self.engram.engine_context, config)
        if engine.writes_weights:
            engine.autosave = False  # type: ignore[attr-defined]
        return engine

    def learn_all(self, engine: Engine, label: str) -> tuple[float, int, list[dict[str, Any]]]:
        from app.jobs.learning import document_input

        seconds, tokens, reports = 0.0, 0, []
        started = time.perf_counter()
        for n, doc_id in enumerate(self.document_ids, 1):
            found = document_input(self.engram.db, doc_id)
            assert found is not None
            report = engine.learn(found[0])
            seconds += report.seconds
            tokens += report.tokens
            reports.append(report.details)
            if n % max(1, len(self.document_ids) // 6) == 0 or n == len(self.document_ids):
                loss = report.details.get("loss_last_pass")
                self.echo(f"  {label}: {n}/{len(self.document_ids)} documents, "
                          f"{time.perf_counter() - started:.0f} s" + (f", last loss {loss:.3f}" if loss else ""))
        return seconds, tokens, reports

    def run(self, name: str, label: str, overrides: dict[str, Any], base: _Baseline,
            sleep: float = 0.0) -> list[EngineRun]:
        """The engine's run after learning every document and, with ``sleep`` seconds, another
        after it consolidated (weight-writing engines only)."""
        engine = self.build(name, overrides)
        try:
            self.echo(f"{label}: learning {len(self.document_ids)} documents...")
            seconds, tokens, reports = self.learn_all(engine, label)
            details = _summary(reports)
            details["stats"] = engine.stats()
            config = getattr(engine, "config", None)  # every setting the run used, not just the arm's
            if isinstance(config, BaseModel):
                details["config"] = config.model_dump(mode="json")
            run = EngineRun(label=label, engine=name, kind="weights" if engine.writes_weights else "context",
                            overrides=overrides, before=base.learned, after=self.scores(engine),
                            forgot=self.forgetting(engine, base), learn_seconds=seconds, document_tokens=tokens,
                            tokens_per_second=tokens / seconds if seconds > 0 else 0.0, details=details)
            runs = [run]
            self.echo(_row(run))
            if sleep > 0 and engine.writes_weights:
                self.echo(f"{label}: sleeping (consolidating) for at most {sleep:.0f} s...")
                slept = engine.consolidate(Budget(seconds=sleep))
                runs.append(run.model_copy(update={
                    "label": f"{label} +sleep", "after": self.scores(engine), "forgot": self.forgetting(engine, base),
                    "details": {**details, "sleep_seconds": slept.seconds, "sleep": slept.details,
                                "stats": engine.stats()}}))
                self.echo(_row(runs[-1]))
        finally:
            _release(engine)
        return runs

    def scores(self, engine: Engine) -> Learned:
        """The fictional questions, asked as chat asks them with ``engine`` in place."""
        return score_questions(self.cortex, self.prompts(engine), self.questions, self.free_text, self.echo)

    def forgetting(self, engine: Engine, base: _Baseline) -> Forgot:
        """What the weights forgot, as answers see them; where the engine routes its learned
        weights by the question, also with them applied to every answer (what training did)."""
        if not engine.writes_weights:
            return Forgot.nothing(base.perplexity)  # the weights are the base model's
        found = forgot(self.cortex, self.settings, base)
        if getattr(self.cortex, "router", None) is not None:
            found.unrouted = forgot(self.cortex, self.settings, base, routed=False)
        return found

    def speed(self, name: str, label: str) -> SpeedRun:
        """Learn time of one ~2,000-token document (fictional facts not in the question set)."""
        from engines.base import DocumentInput

        text = speed_document(self.cortex, self.fiction.seed)
        engine = self.build(name, {})
        try:
            report = engine.learn(DocumentInput(document_id=10**9, path="speed.txt", chunks=[text]))
        finally:
            _release(engine)
        return SpeedRun(label=label, tokens=report.tokens, seconds=report.seconds,
                        tokens_per_second=report.tokens / report.seconds if report.seconds else 0.0,
                        trained_tokens=int(report.details.get("trained_tokens", 0)))


def _release(engine: Engine) -> None:
    for method in ("reset", "close"):
        if hasattr(engine, method):
            getattr(engine, method)()


def _summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [r[key] for r in reports if isinstance(r.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    return {"mean_loss_first_pass": mean("loss_first_pass"), "mean_loss_last_pass": mean("loss_last_pass"),
            "mean_neurons_changed": mean("neurons_changed"), "mean_steps": mean("steps"),
            "trained_tokens": sum(int(r.get("trained_tokens", 0)) for r in reports)}


def speed_document(cortex: Neocortex, seed: int) -> str:
    """About SPEED_TOKENS tokens of fictional prose from a set the bench does not ask about."""
    extra = generate("large", seed + 1000)
    parts: list[str] = []
    count = 0
    for doc in extra.documents:
        parts.append(doc.text)
        count += len(cortex.tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if count >= SPEED_TOKENS:
            break
    return "\n".join(parts)


def _variants(engines: list[str], ablations: bool, arms: list[int] | None = None
              ) -> list[tuple[str, str, dict[str, Any]]]:
    from engines.registry import ENGINES, engine_class

    # "all": retrieval (the open-book baseline) and every engine that learns documents; engines
    # that learn from feedback only (ACE) have nothing to learn from a folder of documents.
    names = ([n for n in ENGINES if n == "rag" or engine_class(n).learns_documents]
             if engines == ["all"] else engines)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    out = []
    for name in names:
        if name == "ttt" and ablations:
            chosen = [ABLATIONS[i - 1] for i in arms] if arms else ABLATIONS
            out += [(name, label, overrides) for label, overrides in chosen]
        else:
            out.append((name, name, {}))
    return out


def run_learn_bench(settings: Settings, engines: list[str], size: Size | int = "default", seed: int = 0,
                    ablations: bool = False, free_text: bool = True, speed: bool = True,
                    echo: Echo = print, cortex: Neocortex | None = None,
                    threads: int | None = None, arms: list[int] | None = None,
                    sleep: float = 0.0) -> LearnBenchReport:
    """Run the bench and save its report; ``cortex``: an already loaded model the caller closes.
    ``sleep``: seconds each weight-writing run then consolidates, measured again after.

    ``threads`` sets torch's CPU threads: on a machine other work keeps busy, one thread is
    several times faster than two that wait on each other (OpenMP barriers)."""
    if threads:
        torch.set_num_threads(threads)
    from app.runtimes.neocortex import load_neocortex
    from app.paths import DataPaths
    from engines.registry import engine_class

    started = time.perf_counter()
    if arms and any(not 1 <= i <= len(ABLATIONS) for i in arms):
        raise ValueError(f"ablation arms are numbered 1-{len(ABLATIONS)}")
    variants = _variants(engines, ablations, arms)
    paths = DataPaths(root=settings.data_dir).ensure()
    fiction = generate(size, seed)
    echo(f"Fictional set '{size}' (seed {seed}): {len(fiction.documents)} documents, "
         f"{len(fiction.questions)} questions")
    owned = cortex is None
    if cortex is None:
        cortex = load_neocortex(settings.neocortex_model, settings.device, paths.cache)
    report = LearnBenchReport(
        created_at=datetime.now().isoformat(timespec="seconds"), size=str(size), seed=seed,
        documents=len(fiction.documents), questions=len(fiction.questions),
        general_questions=len(general_questions()), general_known=0, heldout_tokens=0,
        heldout_questions=len(heldout_questions()),
        model=cortex.model_name, device=cortex.device, torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count() or 0, load_before=_load())
    try:
        with tempfile.TemporaryDirectory(prefix="engram-learn-bench-") as tmp:
            bench = LearnBench(settings, fiction, cortex, Path(tmp), free_text, echo)
            try:
                base, base_run = bench.baseline()
                report.general_known = len(base.known)
                report.heldout_known = len(base.known_heldout)
                report.heldout_tokens = perplexity(cortex, heldout_text())[1]
                report.runs.append(base_run)
                echo(_row(base_run))
                for name, label, overrides in variants:
                    report.runs += bench.run(name, label, overrides, base, sleep)
                if speed:
                    for name in dict.fromkeys(n for n, _, _ in variants):
                        if engine_class(name).writes_weights:
                            echo(f"{name}: learning one {SPEED_TOKENS}-token document...")
                            report.speed.append(bench.speed(name, name))
            finally:
                bench.close()
    finally:
        if owned:
            cortex.close()  # type: ignore[attr-defined]
    report.load_after = _load()
    report.seconds = time.perf_counter() - started
    report.notes = _notes(report)
    save_report(report, paths.bench)
    print_report(report, echo)
    return report


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _notes(r: LearnBenchReport) -> list[str]:
    return [
        "choice accuracy: the right answer's log-likelihood beats three same-kind distractors "
        "(chance 0.25); questions are asked as chat asks them (closed book unless the engine "
        "contributes passages)",
        f"forgot: perplexity on {r.heldout_tokens} held-out tokens of general English; general "
        f"accuracy on the {r.general_known} of {r.general_questions} general-knowledge questions "
        f"the base model answers right; held-out: the same on the {r.heldout_known} of "
        f"{r.heldout_questions} held-out general questions (no default was chosen on them)",
        f"machine: {r.cpu_count} cores, {r.torch_threads} torch threads, load average "
        f"{r.load_before} before and {r.load_after} after (other work shares the cores)",
    ]


# --- output ------------------------------------------------------------------------------------
def _row(run: EngineRun) -> str:
    a, b, f = run.after, run.before, run.forgot
    free = (f" EM {b.exact_match:.2f}->{a.exact_match:.2f} contains {b.contains:.2f}->{a.contains:.2f}"
            if a.exact_match is not None and b.exact_match is not None and a.contains is not None
            and b.contains is not None else "")
    slept = run.details.get("sleep_seconds")
    speed = (f" | learn {run.learn_seconds:.0f} s, {run.tokens_per_second:.0f} tok/s"
             + (f" + sleep {slept:.0f} s" if slept is not None else "") if run.learn_seconds else "")
    unrouted = (f" (unrouted: {100 * f.unrouted.perplexity_drift:+.2f}%, forgetting "
                f"{f.unrouted.forgetting_ratio:.3f}{_heldout(f.unrouted)})" if f.unrouted is not None else "")
    return (f"{run.label:<32} choice {b.choice_accuracy:.3f}->{a.choice_accuracy:.3f}{free} | ppl "
            f"{f.perplexity:.3f} ({100 * f.perplexity_drift:+.2f}%) forgetting {f.forgetting_ratio:.3f}"
            f"{_heldout(f)}{unrouted}{speed}")


def _heldout(f: Forgot) -> str:
    return f", held-out {f.heldout_forgetting_ratio:.3f}" if f.heldout_forgetting_ratio is not None else ""


def print_report(r: LearnBenchReport, echo: Echo) -> None:
    echo("")
    echo(f"Learned vs forgot on '{r.size}' ({r.documents} documents, {r.questions} questions), "
         f"{r.model} on {r.device}:")
    for run in r.runs:
        echo(_row(run))
    base = r.runs[0].after.choice_accuracy if r.runs else 0.0
    for run in r.runs:
        if run.kind == "weights" and run.overrides.get("gate", True) and run.overrides.get("mode", "dual") == "dual":
            ok = (run.after.choice_accuracy >= 2 * base and run.forgot.perplexity_drift < 0.01
                  and run.forgot.forgetting_ratio < 0.05)
            echo(f"minimum bar for {run.label}: accuracy >= {2 * base:.3f}, drift < 1%, forgetting "
                 f"< 0.05: {verdict(ok)}")
            if run.forgot.heldout_forgetting_ratio is not None:
                echo(f"  and on the held-out general questions: forgetting "
                     f"{run.forgot.heldout_forgetting_ratio:.3f} < 0.05: "
                     f"{verdict(run.forgot.heldout_forgetting_ratio < 0.05)}")
    for s in r.speed:
        echo(f"{s.label}: a {s.tokens}-token document learned in {s.seconds:.1f} s ({s.tokens_per_second:.0f} "
             f"tokens/s; {s.trained_tokens} tokens trained incl. rehearsal, replay and passes) "
             f"target < {TARGET_SPEED_S:.0f} s: {verdict(s.seconds < TARGET_SPEED_S)}")
    for note in r.notes:
        echo(f"note: {note}")
    if r.json_path:
        echo(f"report: {r.json_path}")
    if r.plot_path:
        echo(f"plot:   {r.plot_path}")


def save_report(report: LearnBenchReport, folder: Path) -> None:
    """Write ``learn-<time>.json`` and its plot into ``folder`` (atomically)."""
    from store.atomic import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"learn-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    plot = folder / f"{stem}.png"
    try:
        write_atomic(plot, plot_report(report))
        report.plot_path = str(plot)
    except Exception as exc:  # a plot must never cost the figures
        report.notes.append(f"no plot: {type(exc).__name__}: {exc}")
    path = folder / f"{stem}.json"
    report.json_path = str(path)
    write_atomic(path, report.model_dump_json(indent=2).encode())


def plot_report(report: LearnBenchReport) -> bytes:
    """PNG: learned (choice accuracy after) against forgot (drift; forgetting ratio), per run."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    panels = [("perplexity drift (%)", lambda r: 100 * r.forgot.perplexity_drift),
              ("forgetting ratio (general questions)", lambda r: r.forgot.forgetting_ratio)]
    markers = {"base": "s", "context": "^", "weights": "o"}
    for ax, (xlabel, x) in zip(axes, panels):
        for i, run in enumerate(report.runs):
            ax.scatter(x(run), run.after.choice_accuracy, marker=markers[run.kind], s=60,
                       color=f"C{i % 10}", label=run.label)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("learned: 4-way choice accuracy")
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Learned vs forgot: '{report.size}' fiction set, {report.model}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def latest_learn_report(bench_dir: Path) -> tuple[LearnBenchReport, Path | None] | None:
    """The newest learning bench report in ``bench_dir`` and its plot (for the UI Bench tab)."""
    found = sorted(bench_dir.glob("learn-*.json")) if bench_dir.is_dir() else []
    for path in reversed(found):
        try:
            report = LearnBenchReport.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, OSError):
            continue
        plot = path.with_suffix(".png")
        return report, plot if plot.is_file() else None
    return None
