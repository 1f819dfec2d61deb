"""``engram hidden ...``: the hidden-state tier's states. The hidden engine registers this group
(``engines/hidden/__init__.py``), so it is added to ``engram`` with the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from app.cli.base import Context, console, engine_here, pass_ctx, progress_bar

if TYPE_CHECKING:
    from engines.hidden.engine import HiddenStateEngine


@click.group()
def hidden() -> None:
    """Documents kept as the model's hidden states (the JitRL tier)."""


def _engine(c: Context) -> HiddenStateEngine:
    from engines.hidden.engine import HiddenStateEngine

    engine = engine_here(c, "hidden", "answers do not use the states yet")
    assert isinstance(engine, HiddenStateEngine)
    return engine


@hidden.command("fill")
@pass_ctx
def hidden_fill(c: Context) -> None:
    """Store the hidden states of every indexed document that lacks them (documents indexed before
    the tier was on) or has stale ones, computed with the enabled engines' learned weights as
    answers are; new documents get theirs in the background as they are indexed."""
    engine = _engine(c)
    with progress_bar() as bar:
        task = bar.add_task("hidden states", total=100)
        done = engine.fill(lambda f, m: bar.update(task, completed=round(f * 100), description=m[:40]))
    cortex = engine.cortex()
    summary = engine.store.summary(cortex.model_name, engine.weights(cortex))
    console.print(f"Filled {done['documents']} document(s), {done['chunks']} chunk(s); stored: "
                  f"{summary.chunks} chunks of {summary.documents} documents, {summary.tokens:,} tokens, "
                  f"{summary.bytes / 1e6:.1f} MB.")
