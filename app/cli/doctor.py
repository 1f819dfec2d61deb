"""``engram doctor``: checks the installation without opening the core (it must work when the
store or a model is what is broken)."""

from __future__ import annotations

import click

from app.cli.base import Context, cli, console, pass_ctx


@cli.command()
@pass_ctx
def doctor(c: Context) -> None:
    """Check the installation, the models, the store and the folders; say what to fix."""
    from app.services.doctor import run_checks

    marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}

    def show(check) -> None:
        console.print(f"{marks[check.status]} [bold]{check.name}[/]: {check.detail}", highlight=False)
        if check.fix:
            console.print(f"    fix: {check.fix}", highlight=False)

    results = run_checks(c.loaded.settings, on_check=show)
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        raise click.ClickException(f"{len(failed)} check(s) failed: {', '.join(failed)}")
    console.print("Engram is ready." if all(r.status == "ok" for r in results)
                  else "Engram works; see the warnings above.")
