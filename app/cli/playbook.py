"""Playbooks (ACE): ``engram playbook ...`` to read and change them by hand (``engram ace ...``,
which trains them, is the ace engine's own group: ``app/cli/ace.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from app.cli.base import Context, cli, console, pass_ctx, user_errors

if TYPE_CHECKING:
    from engines.ace.playbook import Playbook

SECTION_CHOICE = click.Choice(["general", "format", "units", "sources", "mistakes"])


def playbook_errors() -> tuple[type[Exception], ...]:
    from app.services.playbooks import PlaybookError
    from store.playbook_files import PlaybookFileError

    return (PlaybookError, PlaybookFileError)


def _print_playbook(playbook: Playbook) -> None:
    if not playbook.bullets:
        console.print(f"Playbook {playbook.name} (version {playbook.version}) has no bullets yet.")
        return
    table = Table("id", "section", "helpful", "harmful",
                  title=f"playbook {playbook.name}, version {playbook.version}")
    table.add_column("bullet", overflow="fold")
    for b in playbook.bullets:
        table.add_row(str(b.id), b.section, str(b.helpful), str(b.harmful), b.content)
    console.print(table)


# --- playbook ----------------------------------------------------------------------------------
@cli.group()
def playbook() -> None:
    """Look at, edit, restore, export and import playbooks."""


@playbook.command("list")
@pass_ctx
def playbook_list(c: Context) -> None:
    """List playbooks (the one in use is marked)."""
    rows = c.engram.playbooks.list()
    active = c.loaded.settings.ace.playbook
    if not rows:
        console.print("No playbooks yet: they grow from feedback (`engram feedback`) and from "
                      "`engram ace train QA.jsonl`.")
    for row in rows:
        mark = "●" if row.name == active else " "
        console.print(f"{mark} {row.name}  version {row.version}  {row.bullets} bullets  "
                      f"updated {row.updated_at}", highlight=False)


@playbook.command("show")
@click.argument("name", required=False)
@click.option("--version", "version", type=int, default=None, help="Show this version.")
@pass_ctx
def playbook_show(c: Context, name: str | None, version: int | None) -> None:
    """Show a playbook's bullets with their counters (default: the one in use)."""
    with user_errors(*playbook_errors()):
        _print_playbook(c.engram.playbooks.show(name or c.loaded.settings.ace.playbook, version))


@playbook.command("history")
@click.argument("name", required=False)
@click.option("-n", "limit", type=click.IntRange(1, 10_000), default=30, show_default=True)
@pass_ctx
def playbook_history(c: Context, name: str | None, limit: int) -> None:
    """Every delta (newest first): accepted or rejected, why, from which episode."""
    name = name or c.loaded.settings.ace.playbook
    with user_errors(*playbook_errors()):
        rows = c.engram.playbooks.history(name, limit)
    for d in rows:
        what = ", ".join(d.changes) or ", ".join(_describe_op(o) for o in d.operations) or "no operations"
        version = f"v{d.version_after}" if d.version_after is not None else "  -"
        episode = f" episode {d.episode_id}" if d.episode_id else ""
        console.print(f"{d.id:>5} {d.ts[:19].replace('T', ' ')} {version:>5} {d.status:<8} "
                      f"{d.source}{episode}: {what}", highlight=False, markup=False)
        if d.reason:
            console.print(f"        {d.reason}", highlight=False, markup=False)


def _describe_op(op: dict) -> str:
    ids = ",".join(str(i) for i in op.get("bullet_ids", []))
    text = f' "{op["content"]}"' if op.get("content") else ""
    return f"{op.get('op')}{' ' + ids if ids else ''}{text}"


@playbook.command("add")
@click.argument("name")
@click.argument("text")
@click.option("--section", type=SECTION_CHOICE, default="general", show_default=True)
@pass_ctx
def playbook_add(c: Context, name: str, text: str, section: str) -> None:
    """Add a bullet by hand (creates the playbook if needed)."""
    with user_errors(*playbook_errors()):
        result = c.engram.playbooks.add_bullet(name, text, section)  # type: ignore[arg-type]
    console.print(f"Added bullet {result.next_id - 1} to {name} (version {result.version}).")


@playbook.command("edit")
@click.argument("name")
@click.argument("bullet_id", type=int)
@click.argument("text", required=False)
@click.option("--section", type=SECTION_CHOICE, default=None)
@pass_ctx
def playbook_edit(c: Context, name: str, bullet_id: int, text: str | None, section: str | None) -> None:
    """Rewrite a bullet's text and/or section."""
    if text is None and section is None:
        raise click.UsageError("give the new TEXT, a --section, or both")
    with user_errors(*playbook_errors()):
        result = c.engram.playbooks.edit_bullet(name, bullet_id, text, section)  # type: ignore[arg-type]
    console.print(f"Edited bullet {bullet_id} (version {result.version}).")


@playbook.command("delete")
@click.argument("name")
@click.argument("bullet_id", type=int)
@pass_ctx
def playbook_delete(c: Context, name: str, bullet_id: int) -> None:
    """Delete a bullet (earlier versions keep it: `engram playbook restore`)."""
    with user_errors(*playbook_errors()):
        result = c.engram.playbooks.delete_bullet(name, bullet_id)
    console.print(f"Deleted bullet {bullet_id} (version {result.version}).")


@playbook.command("restore")
@click.argument("name")
@click.argument("version", type=int)
@pass_ctx
def playbook_restore(c: Context, name: str, version: int) -> None:
    """Make an earlier version's bullets the live ones (as a new version)."""
    with user_errors(*playbook_errors()):
        result = c.engram.playbooks.restore(name, version)
    console.print(f"Restored version {version} of {name}: {len(result.bullets)} bullets, now version "
                  f"{result.version}.")


@playbook.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def playbook_export(c: Context, name: str, file: Path) -> None:
    """Write a playbook to a JSON file (format: README, "Playbook files")."""
    with user_errors(*playbook_errors()):
        path = c.engram.playbooks.export(name, file)
    count = len(c.engram.playbooks.show(name).bullets)
    console.print(f"Exported {name} ({count} bullets) to {path}")


@playbook.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Import under this name (default: the file's).")
@click.option("--replace", is_flag=True, help="Replace a playbook of the same name (its history is kept).")
@pass_ctx
def playbook_import(c: Context, file: Path, name: str | None, replace: bool) -> None:
    """Read a playbook from a JSON file, checking every field."""
    from store.playbook_files import read_playbook_file

    def describe(exc: BaseException) -> str:
        errors = getattr(exc, "errors", None)
        return f"{file} was not imported:\n  " + "\n  ".join(errors) if errors else str(exc)

    engram = c.engram
    with user_errors(*playbook_errors(), describe=describe):
        parsed = read_playbook_file(file)
        target = name or parsed.name
        if engram.playbook_exists(target) and not replace:
            if not click.confirm(f"A playbook named {target!r} exists. Replace its bullets (its history "
                                 "is kept)?", default=False):
                raise click.ClickException(f"a playbook named {target!r} exists: nothing imported "
                                           "(use --replace, or --name to import under another name)")
            replace = True
        report = engram.playbooks.import_parsed(parsed, str(file), name, replace)
    console.print(f"Imported {report.imported} bullets into {report.name} (version {report.version})"
                  + (", replacing its bullets" if report.replaced else "") + ".")
    for skipped in report.skipped:
        console.print(f"  skipped {skipped}", highlight=False, markup=False)
