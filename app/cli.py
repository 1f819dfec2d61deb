"""``engram`` on the command line: parses arguments, calls the core, prints.

Every setting is also a global flag (``engram --chunk-tokens 128 ingest ~/notes``), generated from
the Settings model so the two can never disagree.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.settings import (
    ENV_PREFIX,
    FIELDS,
    SettingsError,
    env_name,
    flag_name,
    get_value,
    load_settings,
    save_setting,
)

if TYPE_CHECKING:
    from engines.base import ConsolidateReport

console = Console(soft_wrap=True)  # long paths stay whole and copyable
err_console = Console(stderr=True)


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
        self._engram = None

    @property
    def loaded(self):
        try:
            return load_settings(self.overrides, self.config_dir)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc

    @property
    def engram(self):
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
        ctx.invoke(run, no_browser=no_browser)


# --- run ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--no-watch", is_flag=True, help="Do not watch folders (process the queue only).")
@click.option("--headless", is_flag=True, help="No desktop app: live progress in the terminal only.")
@click.option("--no-browser", is_flag=True, help="Serve the desktop app without opening the browser.")
@pass_ctx
def run(c: Context, no_watch: bool = False, headless: bool = False, no_browser: bool = False) -> None:
    """Start Engram: the desktop app (on ui_host:ui_port) with the watcher and worker; Ctrl+C stops."""
    engram = c.engram
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not headless:
        _run_desktop(c, stop, open_browser=engram.settings.open_browser and not no_browser,
                     watch=not no_watch)
        return
    engram.start(watch=not no_watch)
    folders = ", ".join(f.path for f in engram.folders.list())
    console.print(f"[bold]Engram[/] is learning from: {folders}")
    console.print(f"Data: {engram.paths.root}   (Ctrl+C to stop)")
    try:
        _follow_progress(engram, until=stop.is_set)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("Stopping: saving the index...")
        engram.stop()


def _run_desktop(c: Context, stop: threading.Event, open_browser: bool, watch: bool) -> None:
    # The CLI is the entry point that composes the layers: it alone in app/ reaches up to ui/.
    from ui.access import ExposedWithoutPassword
    from ui.desktop import run_desktop

    try:
        run_desktop(c.engram, stop, lambda text: console.print(text, highlight=False),
                    open_browser=open_browser, watch=watch)
    except KeyboardInterrupt:
        pass
    except (OSError, ExposedWithoutPassword) as exc:
        raise click.ClickException(f"the desktop app could not start: {exc}") from exc


def _follow_progress(engram, until) -> None:
    """Render the queue's progress until ``until()`` is true."""
    with _progress_bar() as bar:
        task = bar.add_task("idle", total=None)
        while not until():
            p = engram.queue.progress()
            label = "paused" if engram.worker.paused else (
                Path(p.current[0]).name if p.current else ("learning" if p.active else "watching"))
            bar.update(task, total=p.total or None, completed=p.finished, description=label[:40])
            time.sleep(0.3)


def _progress_bar() -> Progress:
    return Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


# --- watch -------------------------------------------------------------------------------------
@cli.group()
def watch() -> None:
    """Manage watched folders."""


@watch.command("add")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_ctx
def watch_add(c: Context, path: Path) -> None:
    """Watch PATH (recursively); its documents are queued for learning."""
    row, report = c.engram.add_folder(path)
    console.print(f"Watching {row.path}: {report.files} documents, {report.queued} queued. "
                  "They are learned while `engram` runs (or now with `engram ingest`).")


@watch.command("remove")
@click.argument("path", type=click.Path(path_type=Path))
@pass_ctx
def watch_remove(c: Context, path: Path) -> None:
    """Stop watching PATH and forget its documents."""
    try:
        forgotten = c.engram.remove_folder(path)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    console.print(f"Stopped watching {path}; forgot {forgotten} documents.")


@watch.command("list")
@pass_ctx
def watch_list(c: Context) -> None:
    """List watched folders."""
    folders = c.engram.folders.list()
    if not folders:
        console.print("No watched folders yet: `engram watch add PATH`.")
    for f in folders:
        console.print(f"{f.path}{'  (drop folder)' if f.is_default else ''}")


# --- ingest ------------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_ctx
def ingest(c: Context, paths: tuple[Path, ...]) -> None:
    """Learn the given files or folders now (one-shot, with a progress bar)."""
    engram = c.engram
    try:
        reports = engram.ingest(list(paths))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    engram.queue.recover()
    if engram.worker.paused:
        console.print("Ingestion is paused (`engram jobs resume`); files were queued.")
        return
    total = sum(r.queued for r in reports)
    counts = {"indexed": 0, "unchanged": 0, "error": 0, "removed": 0}
    with _progress_bar() as bar:
        task = bar.add_task("ingesting", total=engram.queue.pending_count("ingest") or total)

        def advance(result) -> None:
            counts[result.outcome] += 1
            bar.update(task, advance=1, description=Path(result.path).name[:40])

        engram.run_pending(on_result=advance)
    removed = sum(r.removed for r in reports)
    counts["error"] += sum(r.errors for r in reports)
    console.print(f"{counts['indexed']} indexed, {counts['unchanged']} unchanged, "
                  f"{counts['error']} errors, {removed + counts['removed']} removed.")
    if counts["error"]:
        console.print("See `engram status` for the errors.")


# --- jobs --------------------------------------------------------------------------------------
@cli.group()
def jobs() -> None:
    """Pause, resume or cancel background ingestion."""


@jobs.command("pause")
@pass_ctx
def jobs_pause(c: Context) -> None:
    """Pause ingestion (kept across restarts)."""
    c.engram.pause()
    console.print("Ingestion paused.")


@jobs.command("resume")
@pass_ctx
def jobs_resume(c: Context) -> None:
    """Resume ingestion."""
    c.engram.resume()
    console.print("Ingestion resumed.")


@jobs.command("cancel")
@pass_ctx
def jobs_cancel(c: Context) -> None:
    """Cancel every pending ingest job."""
    console.print(f"Cancelled {c.engram.cancel()} pending jobs.")


# --- status and search -------------------------------------------------------------------------
@cli.command()
@pass_ctx
def status(c: Context) -> None:
    """Documents, chunks, errors, pending jobs and sleep."""
    s = c.engram.status()
    console.print(f"Data folder: {s.data_dir}")
    console.print(f"Folders:     {', '.join(f.path for f in s.folders) or 'none'}")
    console.print(f"Documents:   {s.documents} ({s.indexed} indexed, {s.errors} errors)")
    console.print(f"Chunks:      {s.chunks} ({s.vectors} vectors, {s.index_kind} index)")
    p = s.progress
    state = "paused" if p.paused else ("working" if p.active else "idle")
    console.print(f"Jobs:        {s.pending_jobs} pending, {state}"
                  + (f"; {p.finished}/{p.total} files done" if p.total else ""))
    sleep = c.engram.sleeper.status().summary(lambda ts: ts[:16].replace("T", " ") + " UTC")
    console.print(f"Sleep:       {sleep}", markup=False)
    if s.recent_errors:
        console.print("[bold]Files that could not be read:[/]")
        for doc in s.recent_errors:
            console.print(f"  {doc.path}: {doc.error}", markup=False)


@cli.command()
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=None, help="Number of results.")
@pass_ctx
def search(c: Context, query: str, k: int | None) -> None:
    """Top chunks for QUERY with file, position and score."""
    hits = c.engram.search(query, k)
    if not hits:
        console.print("No results. Add documents with `engram watch add PATH` or `engram ingest PATH`.")
    for rank, hit in enumerate(hits, 1):
        console.print(f"[bold]{rank}.[/] {hit.score:.3f}  {hit.path}  ({hit.position})")
        snippet = " ".join(hit.text.split())
        console.print(f"    {snippet[:240]}{'…' if len(snippet) > 240 else ''}", markup=False)


# --- chat --------------------------------------------------------------------------------------
def _runtime_errors():
    from engines.generation import PromptTooLong, RuntimeUnavailable

    return (RuntimeUnavailable, PromptTooLong)


@cli.command()
@click.argument("question")
@click.option("-c", "--conversation", type=int, default=None,
              help="Continue this conversation (ids: `engram conversations`).")
@pass_ctx
def ask(c: Context, question: str, conversation: int | None) -> None:
    """Answer QUESTION from your documents and list the sources it used."""
    from app.chat.service import Delta, Done, Sources

    engram = c.engram
    try:
        for event in engram.chat.ask(question, conversation):
            if isinstance(event, Sources) and not event.citations:
                console.print("[dim]No passage in your documents matched; answering without sources.[/]")
            elif isinstance(event, Delta):
                console.out(event.text, end="", highlight=False)
            elif isinstance(event, Done):
                console.out("")
                _print_sources(event.message)
                if event.message.meta.get("error"):
                    raise click.ClickException(event.message.meta["error"])
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc


def _print_sources(message) -> None:
    for cite in message.citations:
        name = Path(cite["path"]).name
        page = f"p.{cite['page']} " if cite.get("page") else ""
        lines = (f"line {cite['line_start']}" if cite["line_start"] == cite["line_end"]
                 else f"lines {cite['line_start']}-{cite['line_end']}")
        console.print(f"[bold][{cite['n']}][/] {name} ({page}{lines})  {cite['path']}", highlight=False)
        console.print(f"    “{cite['quote']}”", markup=False, highlight=False)
    console.print(f"[dim]conversation {message.conversation_id} · answer {message.id} · "
                  f"`engram feedback {message.id} up|down`[/]")


@cli.command()
@click.argument("answer_id", type=int)
@click.argument("rating", type=click.Choice(["up", "down"]), required=False)
@click.option("--correction", default=None, help="What the right answer is.")
@pass_ctx
def feedback(c: Context, answer_id: int, rating: str | None, correction: str | None) -> None:
    """Rate an answer (up/down) and/or correct it."""
    if rating is None and not correction:
        raise click.UsageError("give a rating (up/down), a --correction, or both")
    try:
        c.engram.chat.feedback(answer_id, rating, correction)  # type: ignore[arg-type]
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc
    console.print("Thanks: feedback recorded.")


@cli.command()
@click.argument("conversation_id", type=int, required=False)
@pass_ctx
def conversations(c: Context, conversation_id: int | None) -> None:
    """List conversations, or show one with its answers and sources."""
    store = c.engram.conversations
    if conversation_id is None:
        rows = store.list()
        if not rows:
            console.print('No conversations yet: `engram ask "..."`.')
        for row in rows:
            console.print(f"{row.id:>4}  {row.updated_at[:16].replace('T', ' ')}  "
                          f"{row.messages:>3} messages  {row.title}", highlight=False)
        return
    if store.get(conversation_id) is None:
        raise click.ClickException(f"no conversation with id {conversation_id}")
    for message in store.messages(conversation_id):
        who = "[bold]You:[/]" if message.role == "user" else "[bold]Engram:[/]"
        mark = {"up": " 👍", "down": " 👎"}.get(message.feedback or "", "")
        console.print(f"{who}{mark}")
        console.print(message.content, markup=False, highlight=False)
        if message.correction:
            console.print(f"[dim]correction:[/] {message.correction}", highlight=False)


# --- models ------------------------------------------------------------------------------------
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
        runtime.switch(backend, model)  # type: ignore[arg-type]
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        runtime.close()
    save_setting("chat_backend", backend, c.config_dir)
    save_setting("chat_model", model, c.config_dir)
    console.print(f"Chat now uses {backend} {model}.")


# --- playbooks (ACE) ---------------------------------------------------------------------------
SECTION_CHOICE = click.Choice(["general", "format", "units", "sources", "mistakes"])


def _playbook_errors():
    from app.services.playbooks import PlaybookError
    from store.playbook_files import PlaybookFileError

    return (PlaybookError, PlaybookFileError)


def _print_playbook(playbook) -> None:
    if not playbook.bullets:
        console.print(f"Playbook {playbook.name} (version {playbook.version}) has no bullets yet.")
        return
    table = Table("id", "section", "helpful", "harmful",
                  title=f"playbook {playbook.name}, version {playbook.version}")
    table.add_column("bullet", overflow="fold")
    for b in playbook.bullets:
        table.add_row(str(b.id), b.section, str(b.helpful), str(b.harmful), b.content)
    console.print(table)


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
    try:
        _print_playbook(c.engram.playbooks.show(name or c.loaded.settings.ace.playbook, version))
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc


@playbook.command("history")
@click.argument("name", required=False)
@click.option("-n", "limit", type=click.IntRange(1, 10_000), default=30, show_default=True)
@pass_ctx
def playbook_history(c: Context, name: str | None, limit: int) -> None:
    """Every delta (newest first): accepted or rejected, why, from which episode."""
    name = name or c.loaded.settings.ace.playbook
    try:
        rows = c.engram.playbooks.history(name, limit)
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc
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
    try:
        result = c.engram.playbooks.add_bullet(name, text, section)  # type: ignore[arg-type]
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc
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
    try:
        result = c.engram.playbooks.edit_bullet(name, bullet_id, text, section)  # type: ignore[arg-type]
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"Edited bullet {bullet_id} (version {result.version}).")


@playbook.command("delete")
@click.argument("name")
@click.argument("bullet_id", type=int)
@pass_ctx
def playbook_delete(c: Context, name: str, bullet_id: int) -> None:
    """Delete a bullet (earlier versions keep it: `engram playbook restore`)."""
    try:
        result = c.engram.playbooks.delete_bullet(name, bullet_id)
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"Deleted bullet {bullet_id} (version {result.version}).")


@playbook.command("restore")
@click.argument("name")
@click.argument("version", type=int)
@pass_ctx
def playbook_restore(c: Context, name: str, version: int) -> None:
    """Make an earlier version's bullets the live ones (as a new version)."""
    try:
        result = c.engram.playbooks.restore(name, version)
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"Restored version {version} of {name}: {len(result.bullets)} bullets, now version "
                  f"{result.version}.")


@playbook.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def playbook_export(c: Context, name: str, file: Path) -> None:
    """Write a playbook to a JSON file (format: README, "Playbook files")."""
    try:
        path = c.engram.playbooks.export(name, file)
    except _playbook_errors() as exc:
        raise click.ClickException(str(exc)) from exc
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

    service = c.engram.playbooks
    try:
        parsed = read_playbook_file(file)
        target = name or parsed.name
        if service.store.exists(target) and not replace:
            if not click.confirm(f"A playbook named {target!r} exists. Replace its bullets (its history "
                                 "is kept)?", default=False):
                raise click.ClickException(f"a playbook named {target!r} exists: nothing imported "
                                           "(use --replace, or --name to import under another name)")
            replace = True
        report = service.import_parsed(parsed, str(file), name, replace)
    except _playbook_errors() as exc:
        errors = getattr(exc, "errors", None)
        if errors:
            raise click.ClickException(f"{file} was not imported:\n  " + "\n  ".join(errors)) from exc
        raise click.ClickException(str(exc)) from exc
    console.print(f"Imported {report.imported} bullets into {report.name} (version {report.version})"
                  + (", replacing its bullets" if report.replaced else "") + ".")
    for skipped in report.skipped:
        console.print(f"  skipped {skipped}", highlight=False, markup=False)


@cli.group()
def ace() -> None:
    """Train the playbook and run its learning now (ACE: Generate, Reflect, Curate)."""


def _ace_engine(c: Context):
    from app.services.ace_training import playbook_engine

    engine, enabled = playbook_engine(c.engram)
    if not enabled:
        console.print("[yellow]note:[/] the ace engine is not enabled, so answers do not use the "
                      "playbook yet: `engram config set engines rag,ace`.")
    return engine


@ace.command("train")
@click.argument("qa_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--epochs", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Order of the pairs per epoch.")
@pass_ctx
def ace_train(c: Context, qa_file: Path, epochs: int, seed: int) -> None:
    """Offline training: epochs of Generate-Reflect-Curate over question/answer pairs (JSON Lines
    with "question" and "answer"), answering from your documents."""
    from app.services.ace_training import QAFileError, load_qa

    try:
        pairs = load_qa(qa_file)
    except QAFileError as exc:
        raise click.ClickException(str(exc)) from exc
    engine = _ace_engine(c)
    console.print(f"Training playbook {engine.config.playbook} on {len(pairs)} pairs, {epochs} epoch(s).")
    try:
        with _progress_bar() as bar:
            task = bar.add_task("training", total=len(pairs) * epochs)
            report = engine.train(pairs, epochs, seed,
                                  lambda f, m: bar.update(task, completed=round(f * len(pairs) * epochs),
                                                          description=m[:40]))
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    for epoch in range(epochs):
        steps = [s for s in report.steps if s.epoch == epoch]
        console.print(f"epoch {epoch + 1}: {sum(s.correct for s in steps)}/{len(steps)} answered right")
    console.print(f"{report.accepted} deltas kept, {report.rejected} rejected "
                  f"(`engram playbook history`); playbook version {report.version_before} -> "
                  f"{report.version_after}, {report.bullets} bullets; "
                  f"{report.cycle_seconds():.1f} s per Generate-Reflect-Curate cycle.")


@ace.command("reflect")
@pass_ctx
def ace_reflect(c: Context) -> None:
    """Learn now from feedback still waiting in the queue (the running app does it in the background)."""
    from app.jobs.feedback import FEEDBACK

    engram = c.engram
    waiting = engram.queue.pending_count(FEEDBACK)
    if not waiting:
        console.print("No feedback waiting.")
        return
    engram.queue.recover()
    engram.worker.drain(kinds=[FEEDBACK])
    console.print(f"Reflected on {waiting} feedback event(s); see `engram playbook history`.")


@ace.command("consolidate")
@click.option("--seconds", type=click.FloatRange(1, 86_400), default=300, show_default=True)
@pass_ctx
def ace_consolidate(c: Context, seconds: float) -> None:
    """Sleep-time curation now: the day's failed answers not yet reflected on, then duplicates."""
    from engines.base import Budget

    try:
        report = _ace_engine(c).consolidate(Budget(seconds=seconds))
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    d = report.details
    console.print(f"Reflected on {d['reflected']} of {d['failures']} failed answer(s) in "
                  f"{report.seconds:.1f} s; playbook {'changed' if report.changed else 'unchanged'}.")
    for summary in d["summaries"]:
        console.print(f"  {summary}", highlight=False, markup=False)


@ace.command("status")
@pass_ctx
def ace_status(c: Context) -> None:
    """The playbook in use: version, size, deltas kept and rejected, feedback waiting."""
    from app.jobs.feedback import FEEDBACK

    stats = _ace_engine(c).stats()
    console.print(f"Playbook {stats['playbook']}: version {stats['version']}, {stats['bullets']} bullets; "
                  f"{stats['deltas_accepted']} deltas kept, {stats['deltas_rejected']} rejected; "
                  f"online learning {'on' if stats['online'] else 'off'}; "
                  f"{c.engram.queue.pending_count(FEEDBACK)} feedback event(s) waiting.")


# --- sleep -------------------------------------------------------------------------------------
@cli.command("sleep")
@click.option("--seconds", type=click.FloatRange(1, 86_400), default=None,
              help="Time each enabled engine may consolidate (default: the setting sleep.seconds).")
@pass_ctx
def sleep_now(c: Context, seconds: float | None) -> None:
    """Consolidate now, as during idle time: every enabled engine's offline work, in turn."""
    from app.services.checkpoints import CheckpointNotSaved
    from app.jobs.sleep import run_sleep

    with _progress_bar() as bar:
        task = bar.add_task("sleep", total=100)

        def shown(fraction: float, message: str) -> None:
            bar.update(task, completed=round(100 * fraction), description=message[:40])

        try:
            engram = c.engram
            reports = run_sleep(engram.db, engram.engines, seconds or engram.settings.sleep.seconds, "manual",
                                shown, checkpoints=engram.sleep_checkpoints)
        except (*_runtime_errors(), CheckpointNotSaved) as exc:
            raise click.ClickException(str(exc)) from exc
        bar.update(task, completed=100)
    for report in reports:
        for line in _sleep_summary(report):
            console.print(line, highlight=False, markup=False)
    last = engram.sleeper.status().last  # the sleep just recorded
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


# --- config ------------------------------------------------------------------------------------
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
    try:
        path = save_setting(name, value, c.config_dir)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"Saved {name} in {path}")


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


def _checkpoint_call(action, *args):
    try:
        return action(*args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc


@checkpoint.command("save")
@click.argument("name")
@click.option("--engine", default=None, help="Which weight-writing engine (when several are enabled).")
@pass_ctx
def checkpoint_save(c: Context, name: str, engine: str | None) -> None:
    """Save what the engine has learned so far as NAME (replacing a checkpoint of that name)."""
    row = _checkpoint_call(c.engram.checkpoints.save, name, engine)
    console.print(f"Saved checkpoint {row.name} ({row.engine}, {row.meta.get('documents', '?')} "
                  f"documents, {row.size_bytes / 1e6:,.1f} MB).")


@checkpoint.command("load")
@click.argument("name")
@pass_ctx
def checkpoint_load(c: Context, name: str) -> None:
    """Make checkpoint NAME the learned state that answers (the current one is replaced)."""
    row = _checkpoint_call(c.engram.checkpoints.load, name)
    console.print(f"Loaded checkpoint {row.name} into {row.engine}.")


@checkpoint.command("delete")
@click.argument("name")
@pass_ctx
def checkpoint_delete(c: Context, name: str) -> None:
    """Delete checkpoint NAME (the learned state in use is not affected)."""
    _checkpoint_call(c.engram.checkpoints.delete, name)
    console.print(f"Deleted checkpoint {name}.")


# --- doctor ------------------------------------------------------------------------------------
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


# --- bench -------------------------------------------------------------------------------------
@cli.group()
def bench() -> None:
    """Benchmarks that print ratios against the raw parts measured in the same run."""


def _fiction_size(_ctx: click.Context, _param: click.Parameter, value: str) -> str | int:
    """A named fictional set, or a number of documents; refused before any model loads."""
    from app.bench.fiction import documents_in

    size = int(value) if value.isdecimal() else value
    try:
        documents_in(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return size


def _arm_numbers(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int] | None:
    """'1,3' -> [1, 3]; a typo is refused rather than read as 'every arm' (hours of training)."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.isdecimal() for p in parts):
        raise click.BadParameter(f"{value!r}: give arm numbers separated by commas, e.g. '1,3'")
    return [int(p) for p in parts] or None


fiction_size_option = click.option(
    "--size", default="default", show_default=True, callback=_fiction_size,
    help="Fictional set: tiny, small, default, large, or a number of documents.")


@bench.command("ingest")
@click.option("--files", type=int, default=2000, show_default=True, help="Generated corpus size.")
@click.option("--vectors", type=str, default="10000,100000", show_default=True,
              help="Index sizes for the search-latency part.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@pass_ctx
def bench_ingest(c: Context, files: int, vectors: str, seed: int, json_out: Path | None) -> None:
    """Ingest throughput vs raw embedding, re-scan time, search latency and ANN recall."""
    from app.bench.ingest import run_ingest_bench

    sizes = [int(v) for v in vectors.split(",") if v.strip()]
    report = run_ingest_bench(c.loaded.settings, files=files, vector_sizes=sizes, seed=seed,
                              echo=console.print)
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"Report written to {json_out}")


@bench.command("ace")
@click.option("--train", "n_train", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Training questions.")
@click.option("--test", "n_test", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Held-out questions (about other items).")
@click.option("--epochs", type=click.IntRange(1, 20), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@pass_ctx
def bench_ace(c: Context, n_train: int, n_test: int, epochs: int, seed: int, json_out: Path | None) -> None:
    """Playbook learning on questions that need a unit convention: accuracy before and after
    offline training and on held-out questions, playbook size, time per cycle."""
    from app.bench.ace import run_ace_bench

    try:
        report = run_ace_bench(c.loaded.settings, n_train=n_train, n_test=n_test, epochs=epochs,
                               seed=seed, echo=console.print)
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"Report written to {json_out}")


@bench.command("learn")
@click.option("--engine", "engines", default="ttt", show_default=True,
              help="Engine(s) to measure, comma-separated, or 'all' (retrieval and every engine "
              "that learns documents).")
@fiction_size_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ablations", is_flag=True,
              help="TTT: gated / ungated / full finetune, each with and without rehearsal and replay.")
@click.option("--free-text/--no-free-text", default=True, show_default=True,
              help="Also score greedy answers (exact match / contains).")
@click.option("--speed/--no-speed", default=True, show_default=True,
              help="Also time learning one 2,000-token document.")
@click.option("--arms", default="", callback=_arm_numbers,
              help="With --ablations: only these arms, e.g. '1,2' (1 gated +rehearsal/replay, "
              "2 gated, 3 ungated +r/r, 4 ungated, 5 full +r/r, 6 full).")
@click.option("--threads", type=int, default=None,
              help="torch CPU threads (default: torch's; 1 is faster on a machine that is busy).")
@click.option("--sleep", type=click.FloatRange(0, 86_400), default=0, show_default=True,
              help="Seconds each weight-writing run then sleeps (consolidates); measured again after.")
@pass_ctx
def bench_learn(c: Context, engines: str, size: str | int, seed: int, ablations: bool,
                free_text: bool, speed: bool, arms: list[int] | None, threads: int | None,
                sleep: float) -> None:
    """What engines learn from fictional documents, and what they forget (JSON report + plot)."""
    from app.bench.learn import run_learn_bench

    names = [n.strip() for n in engines.split(",") if n.strip()]
    try:
        run_learn_bench(c.loaded.settings, names, size=size, seed=seed,  # type: ignore[arg-type]
                        ablations=ablations, free_text=free_text, speed=speed,
                        echo=console.print, threads=threads, sleep=sleep, arms=arms)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except _runtime_errors() as exc:
        raise click.ClickException(str(exc)) from exc


@bench.command("route")
@fiction_size_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@pass_ctx
def bench_route(c: Context, size: str | int, seed: int, json_out: Path | None) -> None:
    """Which questions TTT's router hands the learned weights: fictional ones against general
    ones the bounds were and were not chosen on (the embedder only; no training)."""
    from app.bench.route import run_route_bench

    try:
        report = run_route_bench(c.loaded.settings, size=size, seed=seed,  # type: ignore[arg-type]
                                 echo=console.print)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"Report written to {json_out}")


@bench.command("chat")
@click.option("--questions", type=int, default=100, show_default=True,
              help="Fictional questions asked (with and without logit bias).")
@click.option("--chunks", type=int, default=10_000, show_default=True,
              help="Store size for the retrieval latency part.")
@click.option("--runs", type=int, default=5, show_default=True, help="Speed runs per side.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@pass_ctx
def bench_chat(c: Context, questions: int, chunks: int, runs: int, seed: int,
               json_out: Path | None) -> None:
    """Chat speed vs raw llama-cpp-python, retrieval latency, grounded accuracy."""
    from app.bench.chat import run_chat_bench

    try:
        report = run_chat_bench(c.loaded.settings, questions=questions, chunks=chunks, runs=runs,
                                seed=seed, echo=console.print)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"Report written to {json_out}")


@bench.command("load")
@click.option("--files", type=int, default=5000, show_default=True, help="Files dropped at once.")
@click.option("--chats", type=int, default=20, show_default=True, help="Concurrent questions.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Write the report here.")
@pass_ctx
def bench_load(c: Context, files: int, chats: int, seed: int, json_out: Path | None) -> None:
    """Concurrent chat during a large ingest: latency, errors, deadlocks, consistency."""
    from app.bench.load import run_load_bench

    report = run_load_bench(c.loaded.settings, files=files, chats=chats, seed=seed, echo=console.print)
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
        console.print(f"Report written to {json_out}")
    if report.chat_errors or report.deadlocked or not report.consistent:
        raise click.ClickException("the load bench found errors (see above)")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SettingsError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
