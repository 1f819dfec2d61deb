"""The learning bench's report: its rows, targets, printout, JSON and plot.

A report without free-text answers is a diagnostic, not a result: it is saved as
``diagnostic-*.json``, says so at the top of its printout, and is never shown as the latest result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.bench.learn_measures import Forgot, Learned, Rehearsed
from app.bench.verdict import verdict

Echo = Callable[[str], None]
TARGET_SPEED_S = 60.0
COMBINED = "+"  # "rag+ttt": engines that answer together (retrieval and learned weights)
TARGET_CONTAINS = 0.5       # closed-book answers after one sleep (natural-prose sets)
TARGET_FORGETTING = 0.05    # free-text forgetting on general questions
TARGET_DRIFT = 0.02         # perplexity drift on held-out general English
RESULT_PREFIX, DIAGNOSTIC_PREFIX = "learn", "diagnostic"


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
    rehearsed: Rehearsed | None = Field(None, description="Closed-book rows: the weights asked the "
                                        "learner's own training questions.")

    @property
    def rollbacks(self) -> list[str]:
        """Why sleep rolled back, once per rollback (empty when it kept what it did)."""
        sleep = self.details.get("sleep") or {}
        tries = [str(t) for t in sleep.get("retried", [])]  # tries discarded before the last one
        final = str(sleep.get("reason", ""))
        return tries + ([final] if final.startswith("rolled back") else [])


class SpeedRun(BaseModel):
    label: str
    tokens: int
    seconds: float
    tokens_per_second: float
    trained_tokens: int


class LearnBenchReport(BaseModel):
    created_at: str
    set: str = "templated"
    size: str
    seed: int | None
    free_text: bool = True
    documents: int
    questions: int
    general_questions: int
    general_known: int
    general_known_free_text: int | None = None
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

    @property
    def diagnostic(self) -> bool:
        """Free text was skipped: the figures a person would see are missing."""
        return not self.free_text


def _free(learned: Learned) -> str:
    if learned.contains is None or learned.exact_match is None:
        return "contains -    exact -   "
    return f"contains {learned.contains:.3f} exact {learned.exact_match:.3f}"


def row(run: EngineRun) -> str:
    a, b, f = run.after, run.before, run.forgot
    loops = f" loops {a.loops}" if a.loops is not None else ""
    slept = run.details.get("sleep_seconds")
    speed = (f" | learn {run.learn_seconds:.0f} s, {run.tokens_per_second:.0f} tok/s"
             + (f" + sleep {slept:.0f} s" if slept is not None else "") if run.learn_seconds else "")
    written = (f" free-text {f.free_text_forgetting:.3f}," if f.free_text_forgetting is not None else "")
    rolled = f" | {len(run.rollbacks)} rollback(s)" if run.rollbacks else ""
    own = (f" | own questions {round(run.rehearsed.contains * run.rehearsed.asked)}/{run.rehearsed.asked}"
           f" ({run.rehearsed.contains:.3f})" if run.rehearsed and run.rehearsed.asked else "")
    return (f"{run.label:<28} {_free(a)}{loops} | choice {b.choice_accuracy:.3f}->{a.choice_accuracy:.3f} "
            f"| forgot:{written} choice {f.forgetting_ratio:.3f}, ppl {100 * f.perplexity_drift:+.2f}%"
            f"{speed}{rolled}{own}")


def minimum_bars(r: LearnBenchReport) -> list[str]:
    """The templated set's regression bar: gated runs at least double the base model's choice
    accuracy with under 1% drift and under 0.05 forgetting."""
    base = r.runs[0].after.choice_accuracy if r.runs else 0.0
    lines = []
    for run in r.runs:
        if run.kind == "weights" and run.overrides.get("gate", True) and run.overrides.get("mode", "dual") == "dual":
            ok = (run.after.choice_accuracy >= 2 * base and run.forgot.perplexity_drift < 0.01
                  and run.forgot.forgetting_ratio < 0.05)
            lines.append(f"minimum bar for {run.label}: choice accuracy >= {2 * base:.3f}, drift < 1%, "
                         f"forgetting < 0.05: {verdict(ok)}")
            if run.forgot.heldout_forgetting_ratio is not None:
                lines.append(f"  and on the held-out general questions: forgetting "
                             f"{run.forgot.heldout_forgetting_ratio:.3f} < 0.05: "
                             f"{verdict(run.forgot.heldout_forgetting_ratio < 0.05)}")
    return lines


def target_lines(r: LearnBenchReport) -> list[str]:
    """The targets on natural prose, each with its verdict; the templated set's minimum bar."""
    if r.set == "templated":
        return minimum_bars(r)
    if r.diagnostic:
        return []
    lines = []
    for run in r.runs:
        closed_book = "rag" not in (run.engine or "").split(COMBINED)
        if run.kind == "weights" and closed_book and "+sleep" in run.label.split() and run.after.contains is not None:
            f = run.forgot
            ok = (run.after.contains >= TARGET_CONTAINS
                  and (f.free_text_forgetting or 0.0) <= TARGET_FORGETTING and f.perplexity_drift <= TARGET_DRIFT)
            lines.append(f"target {run.label}: contains >= {TARGET_CONTAINS} ({run.after.contains:.3f}), "
                         f"free-text forgetting <= {TARGET_FORGETTING} ({f.free_text_forgetting}), drift <= "
                         f"{100 * TARGET_DRIFT:.0f}% ({100 * f.perplexity_drift:+.2f}%): {verdict(ok)}")
    by_label = {run.label: run for run in r.runs}
    rag = by_label.get("rag")
    for label, run in by_label.items():
        if label.startswith("rag+") and rag is not None and rag.after.contains is not None:
            got = run.after.contains or 0.0
            lines.append(f"target {label}: contains >= rag's ({got:.3f} vs {rag.after.contains:.3f}"
                         f"{_against(run, rag)}): {verdict(got >= rag.after.contains)}")
    loops = sum(run.after.loops or 0 for run in r.runs)
    lines.append(f"target: no answer loops ({loops} looped): {verdict(loops == 0)}")
    for run in r.runs:
        for a in run.after.looped:
            lines.append(f"  looped in {run.label}: {a['question']!r} -> {a['generated'][:160]!r}")
    return lines


def _against(run: EngineRun, rag: EngineRun) -> str:
    """Which questions the weights won and lost against retrieval alone: a tie in shares can hide
    answers the weights cost."""
    if run.after.right is None or rag.after.right is None:
        return ""
    ours, theirs = set(run.after.right), set(rag.after.right)
    return f"; {len(ours - theirs)} answered only with the weights, {len(theirs - ours)} only without"


def print_report(r: LearnBenchReport, echo: Echo) -> None:
    echo("")
    if r.diagnostic:
        echo("DIAGNOSTIC ONLY: free-text answers were skipped (--no-free-text), so the figures a person "
             "sees are missing. This is not a result and is not shown as the latest report.")
    echo(f"Learned vs forgot on the {r.set} set '{r.size}' ({r.documents} documents, {r.questions} "
         f"questions), {r.model} on {r.device}:")
    for run in r.runs:
        echo(row(run))
    for line in target_lines(r):
        echo(line)
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
    """Write ``learn-<time>.json`` (``diagnostic-<time>.json`` without free text) and its plot."""
    save_with_plot(report, folder, DIAGNOSTIC_PREFIX if report.diagnostic else RESULT_PREFIX, plot_report)


def save_with_plot(report: Any, folder: Path, prefix: str, plot: Callable[[Any], bytes]) -> None:
    """Write ``<prefix>-<time>.png`` and ``.json`` for a report with ``plot_path``, ``json_path``
    and ``notes``; a plot that fails is noted and never costs the figures."""
    from store.atomic import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        write_atomic(stem.with_suffix(".png"), plot(report))
        report.plot_path = str(stem.with_suffix(".png"))
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the figures
        report.notes.append(f"no plot: {type(exc).__name__}: {exc}")
    report.json_path = str(stem.with_suffix(".json"))
    write_atomic(stem.with_suffix(".json"), report.model_dump_json(indent=2).encode())


def plot_report(report: LearnBenchReport) -> bytes:
    """PNG: learned (answers containing the answer, else choice accuracy) against forgot, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    panels = [("perplexity drift (%)", lambda r: 100 * r.forgot.perplexity_drift),
              ("forgetting (general questions)",
               lambda r: r.forgot.free_text_forgetting if r.forgot.free_text_forgetting is not None
               else r.forgot.forgetting_ratio)]
    learned = ((lambda r: r.after.contains or 0.0, "learned: answers containing the right answer")
               if report.free_text else (lambda r: r.after.choice_accuracy, "learned: 4-way choice accuracy"))
    markers = {"base": "s", "context": "^", "weights": "o"}
    for ax, (xlabel, x) in zip(axes, panels):
        for i, run in enumerate(report.runs):
            ax.scatter(x(run), learned[0](run), marker=markers[run.kind], s=60, color=f"C{i % 10}", label=run.label)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(learned[1])
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Learned vs forgot: {report.set} set '{report.size}', {report.model}", fontsize=10)
    return png(fig)


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes, the figure closed (reports are drawn in worker threads)."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def latest_learn_report(bench_dir: Path) -> tuple[LearnBenchReport, Path | None] | None:
    """The newest learning bench result in ``bench_dir`` and its plot (diagnostics are skipped)."""
    found = sorted(bench_dir.glob(f"{RESULT_PREFIX}-*.json")) if bench_dir.is_dir() else []
    for path in reversed(found):
        try:
            report = LearnBenchReport.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, OSError):
            continue
        if report.diagnostic:
            continue
        plot = path.with_suffix(".png")
        return report, plot if plot.is_file() else None
    return None
