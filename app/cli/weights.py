"""What the weight-writing engines learned: ``engram checkpoint ...`` and ``engram sleep``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from app.cli.base import Context, cli, console, pass_ctx, progress_bar, runtime_errors, user_errors

if TYPE_CHECKING:
    from engines.base import ConsolidateReport


def checkpoint_errors() -> tuple[type[Exception], ...]:
    return (KeyError, ValueError, FileNotFoundError, *runtime_errors())


# --- checkpoints -------------------------------------------------------------------------------
@cli.group()
def checkpoint() -> None:
    """Save, list, load and delete learned states (what weight-writing engines learned)."""


@checkpoint.command("list")
@pass_ctx
def checkpoint_list(c: Context) -> None:
    """List saved checkpoints, newest first."""
    rows = c.engram.checkpoints.list()
    if not rows:
        console.print("No checkpoints yet: `engram checkpoint save NAME`.")
        return
    table = Table("name", "engine", "saved", "documents", "size")
    for row in rows:
        table.add_row(row.name, row.engine, row.created_at, str(row.meta.get("documents", "?")),
                      f"{row.size_bytes / 1e6:,.1f} MB")
    console.print(table)


@checkpoint.command("save")
@click.argument("name")
@click.option("--engine", default=None, help="Which weight-writing engine (when several are enabled).")
@pass_ctx
def checkpoint_save(c: Context, name: str, engine: str | None) -> None:
    """Save what the engine has learned so far as NAME (replacing a checkpoint of that name)."""
    with user_errors(*checkpoint_errors()):
        row = c.engram.checkpoints.save(name, engine)
    console.print(f"Saved checkpoint {row.name} ({row.engine}, {row.meta.get('documents', '?')} "
                  f"documents, {row.size_bytes / 1e6:,.1f} MB).")


@checkpoint.command("load")
@click.argument("name")
@pass_ctx
def checkpoint_load(c: Context, name: str) -> None:
    """Make checkpoint NAME the learned state that answers (the current one is replaced)."""
    with user_errors(*checkpoint_errors()):
        row = c.engram.checkpoints.load(name)
    console.print(f"Loaded checkpoint {row.name} into {row.engine}.")


@checkpoint.command("delete")
@click.argument("name")
@pass_ctx
def checkpoint_delete(c: Context, name: str) -> None:
    """Delete checkpoint NAME (the learned state in use is not affected)."""
    with user_errors(*checkpoint_errors()):
        c.engram.checkpoints.delete(name)
    console.print(f"Deleted checkpoint {name}.")


# --- sleep -------------------------------------------------------------------------------------
@cli.command("sleep")
@click.option("--seconds", type=click.FloatRange(1, 86_400), default=None,
              help="Time each enabled engine may consolidate (default: the setting sleep.seconds).")
@pass_ctx
def sleep_now(c: Context, seconds: float | None) -> None:
    """Consolidate now, as during idle time: every enabled engine's offline work, in turn."""
    from app.services.checkpoints import CheckpointNotSaved

    with progress_bar() as bar:
        task = bar.add_task("sleep", total=100)

        def shown(fraction: float, message: str) -> None:
            bar.update(task, completed=round(100 * fraction), description=message[:40])

        with user_errors(*runtime_errors(), CheckpointNotSaved):
            engram = c.engram
            reports = engram.sleep(seconds, shown)
        bar.update(task, completed=100)
    for report in reports:
        for line in _sleep_summary(report):
            console.print(line, highlight=False, markup=False)
    last = engram.sleep_status().last  # the sleep just recorded
    for name in last.checkpoints if last is not None and last.changed else []:
        console.print(f"The learned state before this sleep is checkpoint {name}: "
                      f"`engram checkpoint load {name}` undoes the sleep.", highlight=False, markup=False)


def _sleep_summary(report: ConsolidateReport) -> list[str]:
    """One line of an engine's plain figures, then one per entry of a list it gives (a sleep tried
    again names each try the forgetting probe rolled back), so no outcome hides in the report."""
    figures = [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
               for k, v in report.details.items() if isinstance(v, (int, float, str))]
    lines = [f"{report.engine}: {'changed' if report.changed else 'unchanged'} in {report.seconds:.1f} s"
             + (f" ({', '.join(figures)})" if figures else "")]
    lines += [f"  {key}: {item}" for key, value in report.details.items() if isinstance(value, list)
              for item in value if isinstance(item, (int, float, str))]
    return lines
