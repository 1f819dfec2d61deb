"""``engram bundle export|import``: move what this Engram learned to another machine in one file.

Thin: ``app.services.bundles`` does the work (and says why in its docstring); this prints.
"""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.base import Context, cli, console, pass_ctx, print_json, user_errors


def bundle_errors() -> tuple[type[Exception], ...]:
    from app.services.bundles import ImportInterrupted
    from app.settings import SettingsError

    return (ValueError, OSError, SettingsError, ImportInterrupted)  # BundleRefused is a ValueError


@cli.group()
def bundle() -> None:
    """Export or import everything learned (playbooks, learned weights, their settings)."""


@bundle.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--with-documents", is_flag=True,
              help="Also put the documents learned from into the bundle (default: only their paths and hashes).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_ctx
def bundle_export(c: Context, file: Path, with_documents: bool, as_json: bool) -> None:
    """Write the playbooks, learned weights and their settings into FILE (a zip)."""
    with user_errors(*bundle_errors()):
        report = c.engram.bundles.export(file, with_documents=with_documents)
    warning = report.warning()
    if warning:  # on stderr, with --json too: never silent
        click.echo(f"Warning: {warning}.", err=True)
    if as_json:
        print_json(report)
        return
    console.print(f"Exported to {report.path} ({report.bytes / 1e6:,.1f} MB): "
                  f"{len(report.playbooks)} playbook(s), learned weights of "
                  f"{', '.join(report.engines) or 'no engine'}, {report.documents} document(s) listed"
                  + (f", {report.documents_included} included" if with_documents else "") + ".",
                  highlight=False, markup=False)
    for path in report.documents_left_out:
        console.print(f"  left out (changed or gone since it was learned): {path}", highlight=False, markup=False)


@bundle.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True,
              help="Put the bundle's playbooks and weights in place of those here (saved as a bundle first).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_ctx
def bundle_import(c: Context, file: Path, replace: bool, as_json: bool) -> None:
    """Take in the bundle FILE. Without --replace, refuses when a playbook of the same name or
    learned weights exist here (nothing is changed then)."""
    with user_errors(*bundle_errors()):
        report = c.engram.bundles.import_bundle(file, replace=replace)
    if as_json:
        print_json(report)
        return
    say = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731
    say(f"Imported {report.path}: playbooks {', '.join(report.playbooks) or 'none'}; learned weights of "
        f"{', '.join(report.engines) or 'no engine'}; {report.documents_matched} learned document(s) "
        f"found here, {report.documents_missing} not.")
    if report.replaced:
        say(f"Replaced: {', '.join(report.replaced)}.")
    if report.backup:
        say(f"What was here is saved in {report.backup}: `engram bundle import --replace {report.backup}` "
            "goes back.")
    if report.settings:
        say(f"Settings written: {', '.join(report.settings)}.")
    for note in report.notes:
        say(f"Note: {note}.")
