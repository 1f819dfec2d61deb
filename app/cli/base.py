"""What every ``engram`` command shares: the root group, the context that opens the core, the
consoles, and one way each to report a user's error, draw a progress bar and write a report.

Every setting is also a global flag (``engram --chunk-tokens 128 ingest ~/notes``), generated from
the Settings model so the two can never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.settings import ENV_PREFIX, FIELDS, LoadedSettings, SettingsError, env_name, flag_name, load_settings

if TYPE_CHECKING:
    from app.core import Engram

console = Console(soft_wrap=True)  # long paths stay whole and copyable
err_console = Console(stderr=True)


# --- errors the user can fix: one line, exit status 1, no traceback ------------------------------
def error_message(exc: BaseException) -> str:
    """The words of an error (a KeyError's argument, not its quoted repr)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


@contextmanager
def user_errors(*kinds: type[BaseException],
                describe: Callable[[BaseException], str] = error_message) -> Iterator[None]:
    """Turn the expected errors ``kinds`` into a ``click.ClickException`` (also a decorator);
    any other error stays a traceback, since it is a bug."""
    try:
        yield
    except kinds as exc:
        raise click.ClickException(describe(exc)) from exc


def runtime_errors() -> tuple[type[Exception], ...]:
    """A model that cannot run or a prompt that does not fit (imported when a command needs it)."""
    from engines.generation import PromptTooLong, RuntimeUnavailable

    return (RuntimeUnavailable, PromptTooLong)


# --- output ------------------------------------------------------------------------------------
def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


json_out_option = click.option("--json-out", type=click.Path(path_type=Path), default=None,
                               help="Write the report here.")


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object on stdout for scripts; messages go to stderr.")


def print_json(report: BaseModel) -> None:
    """``report`` as one JSON object on stdout: plain text (no colour, no wrapping), so a
    script can parse stdout whole."""
    click.echo(report.model_dump_json(indent=2))


def write_report(report: BaseModel, json_out: Path | None) -> None:
    """Write ``report`` as JSON to ``json_out`` (when given) and say where."""
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"Report written to {json_out}")


# --- the root group and its context ------------------------------------------------------------
def engine_here(c: Context, name: str, unused: str) -> Any:
    """The running app's ``name`` engine, or (not enabled) one built on its settings for this
    command, after a note that ``unused`` (what answers miss) until it is enabled."""
    from engines.registry import build_engine

    try:
        return c.engram.engine(name)
    except KeyError:
        console.print(f"[yellow]note:[/] the {name} engine is not enabled, so {unused}: "
                      f"`engram config set engines rag,{name}`.")
        return build_engine(name, c.engram.engine_context, getattr(c.engram.settings, name))


def _param(field: str) -> str:
    return field.replace(".", "__")


def _setting_options(func):
    """Add one ``--flag`` per setting (values validated later by the model itself)."""
    for name, field in reversed(list(FIELDS.items())):
        func = click.option(
            flag_name(name), _param(name), default=None, metavar="VALUE",
            help=f"{field.description or name} [env {env_name(name)}]",
        )(func)
    return func


class Context:
    """What the root command hands to subcommands: the settings and a lazily opened core."""

    def __init__(self, overrides: dict[str, Any], config_dir: Path | None) -> None:
        self.overrides = overrides
        self.config_dir = config_dir
        self._engram: Engram | None = None

    @property
    def loaded(self) -> LoadedSettings:
        with user_errors(SettingsError):
            return load_settings(self.overrides, self.config_dir)

    @property
    def engram(self) -> Engram:
        if self._engram is None:
            from app.core import Engram

            self._engram = Engram(self.loaded)
        return self._engram

    def close(self) -> None:
        if self._engram is not None:
            self._engram.close()


pass_ctx = click.make_pass_decorator(Context)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config-dir", type=click.Path(path_type=Path), default=None,
              help=f"Folder of config.toml [env {ENV_PREFIX}CONFIG_DIR]")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option("--no-browser", is_flag=True, help="With no command: do not open the browser.")
@_setting_options
@click.pass_context
def cli(ctx: click.Context, config_dir: Path | None, verbose: bool, no_browser: bool,
        **overrides: Any) -> None:
    """Engram: a local assistant that learns from the documents in your folders.

    With no command, starts Engram's desktop app: watches your folders, learns what lands in
    them, and serves the app in your browser (`engram run --headless` for the terminal only).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Context({k.replace("__", "."): v for k, v in overrides.items() if v is not None},
                      config_dir)
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        run = cli.get_command(ctx, "run")  # registered by app.cli.run
        assert run is not None
        ctx.invoke(run, no_browser=no_browser)
