"""``engram`` on the command line: parses arguments, calls the core (``app.core.Engram``), prints.

One module per command group; importing this package registers every command on the root group
``cli`` (``base.py``). ``main`` is the console script ``engram``; ``python -m app.cli`` runs it too.
"""

from __future__ import annotations

import importlib
import sys

from app.cli import bench, bundle, chat, config, doctor, library, memory, models, playbook, run, weights  # noqa: F401  (registers)
from app.cli.base import Context, cli, err_console
from app.settings import SettingsError
from engines.registry import registered


def _add_engine_commands() -> None:
    """Each engine's own command group (``EngineSpec.commands``), as ``engram <engine> ...``."""
    for name, spec in registered().items():
        if spec.commands:
            module, _, attr = spec.commands.partition(":")
            cli.add_command(getattr(importlib.import_module(module), attr), name)


_add_engine_commands()

__all__ = ["Context", "cli", "main"]


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SettingsError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
