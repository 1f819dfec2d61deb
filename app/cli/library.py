"""The documents Engram learns from: watched folders, one-shot ingest, background jobs, status
and search."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import BaseModel

from app.cli.base import Context, cli, console, json_option, pass_ctx, print_json, progress_bar, user_errors
from engines.base import Passage

if TYPE_CHECKING:
    from app.core import Engram


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
    with user_errors(KeyError):
        forgotten = c.engram.remove_folder(path)
    console.print(f"Stopped watching {path}; forgot {forgotten} documents.")


@watch.command("list")
@pass_ctx
def watch_list(c: Context) -> None:
    """List watched folders."""
    folders = c.engram.watched_folders()
    if not folders:
        console.print("No watched folders yet: `engram watch add PATH`.")
    for f in folders:
        console.print(f"{f.path}{'  (drop folder)' if f.is_default else ''}")


# --- ingest ------------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--windows/--no-windows", default=True, show_default=True,
              help="Then embed the sentence windows the search re-ranks by (about twice the time of "
                   "indexing); with --no-windows the app embeds them when it is next idle.")
@pass_ctx
def ingest(c: Context, paths: tuple[Path, ...], windows: bool) -> None:
    """Learn the given files or folders now (one-shot, with a progress bar)."""
    engram = c.engram
    with user_errors(FileNotFoundError):
        reports = engram.ingest(list(paths))
    engram.recover_jobs()
    if engram.paused:
        console.print("Ingestion is paused (`engram jobs resume`); files were queued.")
        return
    total = sum(r.queued for r in reports)
    counts = {"indexed": 0, "unchanged": 0, "error": 0, "removed": 0}
    with progress_bar() as bar:
        task = bar.add_task("ingesting", total=engram.pending_jobs("ingest") or total)

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
    missing = engram.windows_missing() if windows else 0
    if missing and engram.embedding_switch_pending():  # they would be embedded with the model leaving
        console.print("Sentence windows wait for the library's switch to the new embedding model; "
                      "the app embeds them after it.")
    elif missing:
        _fill_windows(engram, missing)


def _fill_windows(engram: Engram, missing: int) -> None:
    """Embed the sentence windows of ``missing`` chunks with a progress bar. Ctrl-C stops it and
    loses nothing: each batch is stored as it is done, and the app embeds the rest when idle."""
    try:
        with progress_bar() as bar:
            task = bar.add_task("sentence windows", total=missing)
            done = engram.fill_windows(lambda f, m: bar.update(task, completed=round(f * missing)))
    except KeyboardInterrupt:
        console.print("Stopped: the sentence windows embedded so far are kept; the app embeds the "
                      "rest when it is next idle (or the next `engram ingest`).")
        raise SystemExit(130) from None  # interrupted, as a script should see it
    console.print(f"Sentence windows embedded for {done['chunks']} chunk(s): searches re-rank by them.")


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
class SearchResults(BaseModel):
    """``engram search --json``: the query and its passages in ranking order."""

    query: str
    results: list[Passage]


@cli.command()
@json_option
@pass_ctx
def status(c: Context, as_json: bool) -> None:
    """Documents, chunks, errors, pending jobs and sleep."""
    s = c.engram.status()
    if as_json:
        print_json(s)
        return
    console.print(f"Data folder: {s.data_dir}")
    console.print(f"Folders:     {', '.join(f.path for f in s.folders) or 'none'}")
    console.print(f"Documents:   {s.documents} ({s.indexed} indexed, {s.errors} errors)")
    console.print(f"Chunks:      {s.chunks} ({s.vectors} vectors, {s.index_kind} index)"
                  + ("; the index catches up on the next search or ingest" if s.vectors != s.chunks else ""))
    p = s.progress
    state = "paused" if p.paused else ("working" if p.active else "idle")
    console.print(f"Jobs:        {s.pending_jobs} pending, {state}"
                  + (f"; {p.finished}/{p.total} files done" if p.total else ""))
    for job in p.running_jobs:
        if job.message:  # a long job's own words: a re-embedding's chunks done, a learn's step
            console.print(f"Now:         {job.kind} {job.progress or 0:.0%}: {job.message}", markup=False)
    sleep = s.sleep.summary(lambda ts: ts[:16].replace("T", " ") + " UTC")
    console.print(f"Sleep:       {sleep}", markup=False)
    if s.recent_errors:
        console.print("[bold]Files that could not be read:[/]")
        for doc in s.recent_errors:
            console.print(f"  {doc.path}: {doc.error}", markup=False)


@cli.command()
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=None, help="Number of results.")
@click.option("--local", is_flag=True,
              help="Search in this process even when Engram is running (it loads the embedding model).")
@json_option
@pass_ctx
def search(c: Context, query: str, k: int | None, local: bool, as_json: bool) -> None:
    """Top chunks for QUERY with file, position and score.

    When Engram is running (`engram run`), it is asked over its local /v1 API, which has the
    embedding model loaded already; otherwise, or with --local, this process searches.
    """
    hits = None if local else _search_running(c, query, k)
    if hits is None:
        hits = c.engram.search(query, k)
    if as_json:
        print_json(SearchResults(query=query, results=hits))
        return
    if not hits:
        console.print("No results. Add documents with `engram watch add PATH` or `engram ingest PATH`.")
    for rank, hit in enumerate(hits, 1):
        console.print(f"[bold]{rank}.[/] {hit.score:.3f}  {hit.path}  ({hit.position})")
        snippet = " ".join(hit.text.split())
        console.print(f"    {snippet[:240]}{'…' if len(snippet) > 240 else ''}", markup=False)


def _search_running(c: Context, query: str, k: int | None) -> list[Passage] | None:
    """The running Engram's ranking for ``query`` (``POST /v1/engram/search``), or None when
    none runs for this data folder, it does not answer, or it runs with other search settings."""
    from app.instance import ask_running, search_settings

    settings = c.loaded.settings
    answer = ask_running(settings, "/engram/search", {
        "query": query, "k": k or settings.search_k, "settings": search_settings(settings)})
    if answer is None:
        return None
    try:
        return SearchResults.model_validate(answer).results
    except ValueError as exc:
        logging.getLogger(__name__).debug("the running Engram's answer is not a search result: %s", exc)
        return None
