"""``engram ace ...``: train the playbook and run its learning now. The ace engine registers this
group (``engines/ace/__init__.py``), so it is added to ``engram`` with the engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from app.cli.base import Context, console, pass_ctx, progress_bar, runtime_errors, user_errors

if TYPE_CHECKING:
    from engines.ace.engine import AceEngine


@click.group()
def ace() -> None:
    """Train the playbook and run its learning now (ACE: Generate, Reflect, Curate)."""


def _ace_engine(c: Context) -> AceEngine:
    from app.services.ace_training import playbook_engine

    engine, enabled = playbook_engine(c.engram)
    if not enabled:
        console.print("[yellow]note:[/] the ace engine is not enabled, so answers do not use the "
                      "playbook yet: `engram config set engines rag,ace`.")
    return engine


@ace.command("train")
@click.argument("qa_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--epochs", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Order of the pairs per epoch.")
@pass_ctx
def ace_train(c: Context, qa_file: Path, epochs: int, seed: int) -> None:
    """Offline training: epochs of Generate-Reflect-Curate over question/answer pairs (JSON Lines
    with "question" and "answer"), answering from your documents."""
    from app.services.ace_training import QAFileError, load_qa

    with user_errors(QAFileError):
        pairs = load_qa(qa_file)
    engine = _ace_engine(c)
    console.print(f"Training playbook {engine.config.playbook} on {len(pairs)} pairs, {epochs} epoch(s).")
    with user_errors(*runtime_errors()), progress_bar() as bar:
        task = bar.add_task("training", total=len(pairs) * epochs)
        report = engine.train(pairs, epochs, seed,
                              lambda f, m: bar.update(task, completed=round(f * len(pairs) * epochs),
                                                      description=m[:40]))
    for epoch in range(epochs):
        steps = [s for s in report.steps if s.epoch == epoch]
        console.print(f"epoch {epoch + 1}: {sum(s.correct for s in steps)}/{len(steps)} answered right")
    console.print(f"{report.accepted} deltas kept, {report.rejected} rejected "
                  f"(`engram playbook history`); playbook version {report.version_before} -> "
                  f"{report.version_after}, {report.bullets} bullets; "
                  f"{report.cycle_seconds():.1f} s per Generate-Reflect-Curate cycle.")


@ace.command("reflect")
@pass_ctx
def ace_reflect(c: Context) -> None:
    """Learn now from feedback still waiting in the queue (the running app does it in the background)."""
    reflected = c.engram.reflect_now()
    if not reflected:
        console.print("No feedback waiting.")
        return
    console.print(f"Reflected on {reflected} feedback event(s); see `engram playbook history`.")


@ace.command("consolidate")
@click.option("--seconds", type=click.FloatRange(1, 86_400), default=300, show_default=True)
@pass_ctx
def ace_consolidate(c: Context, seconds: float) -> None:
    """Sleep-time curation now: the day's failed answers not yet reflected on, then duplicates."""
    from engines.base import Budget

    with user_errors(*runtime_errors()):
        report = _ace_engine(c).consolidate(Budget(seconds=seconds))
    d = report.details
    console.print(f"Reflected on {d['reflected']} of {d['failures']} failed answer(s) in "
                  f"{report.seconds:.1f} s; playbook {'changed' if report.changed else 'unchanged'}.")
    for summary in d["summaries"]:
        console.print(f"  {summary}", highlight=False, markup=False)


@ace.command("status")
@pass_ctx
def ace_status(c: Context) -> None:
    """The playbook in use: version, size, deltas kept and rejected, feedback waiting."""
    stats = _ace_engine(c).stats()
    console.print(f"Playbook {stats['playbook']}: version {stats['version']}, {stats['bullets']} bullets; "
                  f"{stats['deltas_accepted']} deltas kept, {stats['deltas_rejected']} rejected; "
                  f"online learning {'on' if stats['online'] else 'off'}; "
                  f"{c.engram.feedback_waiting()} feedback event(s) waiting.")
