"""``engram config``: the effective settings and where each came from; saving one."""

from __future__ import annotations

import click
from rich.table import Table

from app.cli.base import Context, cli, console, pass_ctx, user_errors
from app.settings import FIELDS, SettingsError, get_value, save_setting


@cli.group()
def config() -> None:
    """Show or change settings."""


@config.command("show")
@pass_ctx
def config_show(c: Context) -> None:
    """Print the effective settings and where each came from."""
    loaded = c.loaded
    table = Table("setting", "value", "source", title=f"config file: {loaded.config_file}")
    for name in FIELDS:
        table.add_row(name, str(get_value(loaded.settings, name)), loaded.sources[name])
    console.print(table)


@config.command("set")
@click.argument("name")
@click.argument("value")
@pass_ctx
def config_set(c: Context, name: str, value: str) -> None:
    """Save NAME=VALUE in the config file."""
    with user_errors(SettingsError):
        path = save_setting(name, value, c.config_dir)
    console.print(f"Saved {name} in {path}")
