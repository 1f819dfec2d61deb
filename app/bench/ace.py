"""``engram bench ace``: does the playbook learn a convention that makes answers right?

On the unit-convention task set (``app/bench/ace_tasks.py``), in a temporary data folder with the
documents ingested, it measures with the settings' chat model (Generator) and agent model
(Reflector, Curator):

- accuracy on the training and the held-out questions with an empty playbook, overall and split
  into the questions that need a unit convention and the control questions that do not;
- accuracy on the held-out questions with the hand-written conventions as the playbook: what the
  strategies are worth to this model at all (the ceiling a learned playbook can reach);
- offline training (epochs of Generate-Reflect-Curate over the training questions), then accuracy
  on both splits again: the held-out questions are about other items and are never replayed;
- the playbook's size, the deltas kept and rejected (by what), and the time of a
  Generate-Reflect-Curate cycle against the time of one plain answer measured in the same run.

Answers are greedy, so the figures are reproducible for a given model and seed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from app.bench.ace_tasks import CONVENTIONS, ConventionTask, generate_conventions
from app.settings import Settings
from engines.ace.training import QAPair, TrainReport, TrainStep
from store.playbooks import Bullet, Playbook

BENCH_PLAYBOOK = "bench"


class Accuracy(BaseModel):
    """Share answered right: all questions, those needing a convention, the control ones."""

    all: float
    convention: float
    control: float

    def line(self) -> str:
        return f"{self.all:.2f} (convention {self.convention:.2f}, control {self.control:.2f})"


class AceBenchReport(BaseModel):
    chat_model: str
    agent_model: str
    train_questions: int
    test_questions: int
    epochs: int
    seed: int
    train_before: Accuracy
    test_before: Accuracy
    test_with_conventions: Accuracy
    train_after: Accuracy
    test_after: Accuracy
    steps: list[TrainStep]
    bullets: int
    bullet_texts: list[str]
    deltas_kept: int
    deltas_rejected: dict[str, int]
    cycle_s: float
    answer_s: float
    training_s: float
    notes: list[str]


def pairs(tasks: list[ConventionTask]) -> list[QAPair]:
    return [QAPair(question=t.question, answer=t.answer) for t in tasks]


def rejection_kind(reason: str) -> str:
    if "replayed" in reason:
        return "guard (answers worse)"
    if reason.startswith("no usable lesson"):
        return "rules (lesson)"
    if reason.startswith("no change") or "proposed no change" in reason:
        return "empty"
    return "rules (delta)"


def run_ace_bench(settings: Settings, n_train: int = 12, n_test: int = 12, epochs: int = 1,
                  seed: int = 0, echo: Callable[[str], None] = print) -> AceBenchReport:
    from app.core import Engram
    from app.settings import LoadedSettings

    tasks = generate_conventions(n_train, n_test, seed)
    with tempfile.TemporaryDirectory(prefix="engram-bench-ace-") as tmp:
        root = Path(tmp)
        tasks.write(root / "docs")
        ace = settings.ace.model_copy(update={"playbook": BENCH_PLAYBOOK, "online": False})
        bench_settings = settings.model_copy(update={
            "data_dir": root / "data", "drop_folder": root / "drop",
            "engines": [*settings.engines, *([] if "ace" in settings.engines else ["ace"])], "ace": ace})
        engram = Engram(LoadedSettings(settings=bench_settings, sources={}, config_file=root / "none.toml"))
        try:
            engram.ingest([root / "docs"])
            engram.run_pending()
            engram.fill_windows()  # as the app's idle worker does after ingestion
            echo(f"Ingested {len(tasks.documents)} catalogue and gazetteer entries; "
                 f"{n_train} training and {n_test} held-out questions.")
            return _measure(engram, tasks, epochs, seed, echo)
        finally:
            engram.close()


def accuracy(engine, tasks: list[ConventionTask], playbook: Playbook | None = None) -> Accuracy:
    """Answers are cached by question and selected bullets, so the splits cost nothing extra."""
    convention = [t for t in tasks if t.needs_convention]
    control = [t for t in tasks if not t.needs_convention]
    return Accuracy(all=engine.accuracy(pairs(tasks), playbook),
                    convention=engine.accuracy(pairs(convention), playbook),
                    control=engine.accuracy(pairs(control), playbook))


def _measure(engram, tasks, epochs: int, seed: int, echo: Callable[[str], None]) -> AceBenchReport:
    engine = engram.engine("ace")
    train = pairs(tasks.train)
    chat = f"{engram.runtime.backend} {engram.runtime.model}"
    agent = f"{engram.agent_runtime.backend} {engram.agent_runtime.model}"
    echo(f"Generator (chat): {chat}; Reflector and Curator: {agent}")
    started = time.perf_counter()
    test_before = accuracy(engine, tasks.test)
    answer_s = (time.perf_counter() - started) / len(tasks.test)
    train_before = accuracy(engine, tasks.train)
    echo(f"empty playbook:      train {train_before.line()}  held-out {test_before.line()}  "
         f"({answer_s:.1f} s per answer)")
    oracle = Playbook(name="conventions", bullets=[Bullet(id=n, section="units", content=text)
                                                   for n, text in enumerate(CONVENTIONS.values(), 1)])
    with_conventions = accuracy(engine, tasks.test, oracle)
    echo(f"hand-written units:  held-out {with_conventions.line()}  (what the strategies are "
         "worth to this model)")
    report: TrainReport = engine.train(
        train, epochs, seed, lambda f, m: echo(f"  training: {m}"))
    train_after, test_after = accuracy(engine, tasks.train), accuracy(engine, tasks.test)
    playbook = engine.playbook
    deltas = engine.store.deltas(BENCH_PLAYBOOK, limit=100_000)
    kept = [d for d in deltas if d.status == "accepted" and d.operations]
    rejected = Counter(rejection_kind(d.reason or "") for d in deltas if d.status == "rejected")
    cycles = [s.seconds for s in report.steps if not s.correct]
    result = AceBenchReport(
        chat_model=chat, agent_model=agent, train_questions=len(train), test_questions=len(tasks.test),
        epochs=epochs, seed=seed, train_before=train_before, test_before=test_before,
        test_with_conventions=with_conventions, train_after=train_after, test_after=test_after,
        steps=report.steps, bullets=len(playbook.bullets), bullet_texts=[b.content for b in playbook.bullets],
        deltas_kept=len(kept), deltas_rejected=dict(rejected),
        cycle_s=statistics.median(cycles) if cycles else 0.0, answer_s=answer_s,
        training_s=report.seconds,
        notes=["accuracy: the answer holds the number and the unit of the reference",
               "held-out questions are about other items and are never replayed by the guard"])
    print_report(result, echo)
    return result


def print_report(r: AceBenchReport, echo: Callable[[str], None]) -> None:
    echo("")
    echo(f"after {r.epochs} epoch(s):  train {r.train_after.line()}  held-out {r.test_after.line()}")
    held = "held level or better" if r.test_after.all >= r.test_before.all else "WORSE"
    echo(f"held-out accuracy {held}: {r.test_before.all:.2f} -> {r.test_after.all:.2f}; with the "
         f"hand-written conventions {r.test_with_conventions.all:.2f}")
    echo(f"playbook: {r.bullets} bullets; {r.deltas_kept} deltas with operations kept; rejected: "
         + (", ".join(f"{n} by {k}" for k, n in sorted(r.deltas_rejected.items())) or "none"))
    for text in r.bullet_texts:
        echo(f"  - {text}")
    ratio = r.cycle_s / r.answer_s if r.answer_s else 0.0
    echo(f"Generate-Reflect-Curate cycle: {r.cycle_s:.1f} s median ({ratio:.1f}x one plain answer "
         f"of {r.answer_s:.1f} s); training took {r.training_s:.0f} s")
    for note in r.notes:
        echo(f"note: {note}")
