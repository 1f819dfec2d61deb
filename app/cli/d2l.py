"""``engram d2l ...``: meta-train the Doc-to-LoRA hypernetwork. The d2l engine registers this
group (``engines/d2l/__init__.py``), so it is added to ``engram`` with the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from app.cli.base import Context, console, engine_here, pass_ctx, progress_bar, user_errors

if TYPE_CHECKING:
    from engines.d2l.engine import D2LEngine
    from engines.d2l.training import TrainingDocument

FICTION_SEED = 4242  # fictional training documents: a seed no bench set uses by default


@click.group()
def d2l() -> None:
    """Meta-train the hypernetwork that writes documents into adapters (Doc-to-LoRA)."""


def _engine(c: Context) -> D2LEngine:
    from engines.d2l.engine import D2LEngine

    engine = engine_here(c, "d2l", "documents are not written into adapters yet")
    assert isinstance(engine, D2LEngine)
    return engine


def fiction_documents(seed: int = FICTION_SEED) -> list[TrainingDocument]:
    """Fictional documents with their generated questions (``app.bench.fiction``), for a person
    who has stored none yet."""
    from app.bench.fiction import generate
    from engines.d2l.training import with_questions

    found = generate("default", seed)
    return [with_questions(d.text, [(f.question, f.answer) for f in d.facts]) for d in found.documents]


@d2l.command("train")
@click.option("--seconds", type=click.FloatRange(1, 7 * 24 * 3600), default=600.0, show_default=True,
              help="Train this long (it resumes from its last step next time).")
@click.option("--fiction", is_flag=True, help="Train on generated fictional documents even when "
              "documents are stored.")
@pass_ctx
def d2l_train(c: Context, seconds: float, fiction: bool) -> None:
    """Context distillation: the hypernetwork learns to write adapters that make the model answer
    questions about a document as it does with the document in context. It trains on your
    stored documents (on generated fictional ones when there are none) and resumes where it
    stopped; the weights and the loss curve are kept under the data folder."""
    from engines.base import Budget
    from engines.d2l.persistence import STORED_SOURCE, HypernetworkMismatch

    engine = _engine(c)
    documents = [] if fiction else engine.stored_documents()
    source = STORED_SOURCE
    if not any(d.pairs for d in documents):
        documents, source = fiction_documents(), "fictional documents (app.bench.fiction)"
    console.print(f"Meta-training on {len(documents)} {source} for {seconds:.0f} s "
                  f"(from step {engine.stats()['hypernetwork_steps']}).")
    with user_errors(HypernetworkMismatch, ValueError), progress_bar() as bar:
        task = bar.add_task("training", total=100)
        found = engine.meta_train(documents, Budget(seconds=seconds), source,
                                  lambda f, m: bar.update(task, completed=round(f * 100), description=m[:40]))
    loss = found["loss_last"]
    console.print(f"{found['steps']} steps ({found['total_steps']} in all, {found['trained_seconds']:.0f} s of "
                  f"training in all); last distillation loss "
                  f"{'n/a' if loss is None else f'{loss:.3f}'}. Saved under the data folder.")


@d2l.command("status")
@pass_ctx
def d2l_status(c: Context) -> None:
    """The hypernetwork's training record: steps, seconds of training, the last distillation loss
    and what it was trained on (read from the data folder; no model is loaded)."""
    record = _engine(c).training_record()
    if int(record["steps"]) < 1:
        console.print("The hypernetwork is not meta-trained yet: `engram d2l train` (or a sleep).")
        return
    loss = record["curve"][-1][1] if record["curve"] else None
    console.print(f"Hypernetwork: {record['steps']} steps, {record['seconds']:.0f} s of training; last "
                  f"distillation loss {'n/a' if loss is None else f'{loss:.3f}'}.")
    console.print(f"Trained on: {'; '.join(record['sources']) or 'not recorded'}.", highlight=False, markup=False)
