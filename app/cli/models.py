"""``engram models``: the models Engram can run, and switching the chat model.

Neither opens the core (the store, the index): they need only the settings and the runtimes.
"""

from __future__ import annotations

import click
from rich.table import Table

from app.cli.base import Context, cli, console, pass_ctx, runtime_errors, user_errors
from app.settings import save_setting


@cli.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the models Engram can run (`engram models use BACKEND MODEL` picks one)."""
    if ctx.invoked_subcommand is not None:
        return
    from app.runtimes import available_models

    s = ctx.find_object(Context).loaded.settings
    found = available_models(s.effective_models_dir, s.ollama_host, active_backend=s.chat_backend,
                             active_model=s.chat_model)
    table = Table("", "model", "backend", "size")
    table.add_column("where", overflow="fold")
    for m in found:
        size = f"{m.size_bytes / 1e6:,.0f} MB" if m.size_bytes else "?"
        table.add_row("●" if m.active else "", m.name, m.backend, size, m.path_or_tag)
    console.print(table)
    if not any(m.active for m in found):
        console.print(f"Active: {s.chat_backend} {s.chat_model} (not among the models found)")
    console.print(f"[dim]GGUF files and Hugging Face folders are found in {s.effective_models_dir}; "
                  f"Ollama models at {s.ollama_host} when it runs.[/]")


@models.command("use")
@click.argument("backend", type=click.Choice(["llamacpp", "ollama", "torch"]))
@click.argument("model")
@pass_ctx
def models_use(c: Context, backend: str, model: str) -> None:
    """Check that MODEL loads with BACKEND, then make it the chat model."""
    from app.runtimes.active import ActiveRuntime

    runtime = ActiveRuntime(c.loaded.settings)
    try:
        with user_errors(*runtime_errors()):
            runtime.switch(backend, model)  # type: ignore[arg-type]
    finally:
        runtime.close()
    save_setting("chat_backend", backend, c.config_dir)
    save_setting("chat_model", model, c.config_dir)
    console.print(f"Chat now uses {backend} {model}.")
