"""Asking, rating and reading back: ``engram ask``, ``feedback``, ``conversations``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
from pydantic import BaseModel, Field
from rich.markup import escape

from app.cli.base import Context, cli, console, json_option, pass_ctx, print_json, runtime_errors, user_errors
from store.conversations import Citation, ClientAnswer, MessageRow


class Answer(BaseModel):
    """``engram ask --json``: the stored answer with its sources (ids for ``engram feedback``)."""

    question: str
    answer: str
    conversation_id: int
    answer_id: int
    citations: list[Citation]
    meta: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    cut_off: bool = Field(False, description="It stopped at the length limit: `engram ask --more -c ID`.")
    unsupported: list[dict[str, str]] = Field(
        default_factory=list, description="Sentences the critic found in no source, with the reason.")

    @classmethod
    def of(cls, question: str, message: MessageRow) -> Answer:
        from app.chat.critic import flagged_in

        return cls(question=question, answer=message.content, conversation_id=message.conversation_id,
                   answer_id=message.id, citations=message.citations, meta=message.meta,
                   error=message.meta.get("error"), cut_off=message.meta.get("finish_reason") == "length",
                   unsupported=[{"sentence": v.sentence, "reason": v.reason} for v in flagged_in(message.meta)])


@cli.command()
@click.argument("question", required=False)
@click.option("-c", "--conversation", type=int, default=None,
              help="Continue this conversation (ids: `engram conversations`).")
@click.option("--more", is_flag=True,
              help="Ask for the rest of the conversation's last answer (one that was cut off).")
@click.option("--local", is_flag=True,
              help="Answer in this process even when Engram is running (it loads the models).")
@json_option
@pass_ctx
def ask(c: Context, question: str | None, conversation: int | None, more: bool, local: bool,
        as_json: bool) -> None:
    """Answer QUESTION from your documents and list the sources it used.

    When Engram is running (`engram run`) with the same settings, it answers over its local /v1
    API, with its models loaded already; otherwise, or with --local, this process answers.
    """
    from app.chat.service import CONTINUE_QUESTION, Delta, Done, Sources

    if more and conversation is None:
        raise click.UsageError("--more needs the conversation: engram ask --more -c ID")
    if not more and not (question or "").strip():
        raise click.UsageError("give a QUESTION (or --more -c ID for the rest of a cut-off answer)")
    question = CONTINUE_QUESTION if more else question
    with user_errors(KeyError, ValueError, *runtime_errors()):
        events = None if local else _ask_running(c, question, conversation, more)
        if events is None:
            chat = c.engram.chat
            events = chat.continue_answer(conversation) if more else chat.ask(question, conversation)
        if as_json:
            _print_answer_json(question, events)
            return
        for event in events:
            if isinstance(event, Sources) and not event.citations and event.consulted:
                console.print("[dim]No passage in your documents matched; answering without sources.[/]")
            elif isinstance(event, Delta):
                console.out(event.text, end="", highlight=False)
            elif isinstance(event, Done):
                console.out("")
                if Answer.of(question, event.message).cut_off:
                    console.print(f"[yellow]Cut off: the answer reached its length limit. For the rest: "
                                  f"engram ask --more -c {event.message.conversation_id}[/]", highlight=False)
                _print_revision(event.message)
                _print_unsupported(event.message)
                _print_sources(event.message)
                _print_decision(event.message)
                if event.message.meta.get("error"):
                    raise click.ClickException(event.message.meta["error"])


def _ask_running(c: Context, question: str, conversation: int | None, more: bool) -> Iterator[Any] | None:
    """The chat's events from the running Engram (``POST /v1/engram/ask``), or None when none
    runs for this data folder with these settings (then this process answers). Once it took the
    question, its refusal or a cut-off stream is this command's error: it is never asked twice."""
    from app.chat.service import Delta, Done, Sources
    from app.instance import Broken, Refused, answer_settings, stream_running

    settings = c.loaded.settings
    body = {"question": question, "conversation_id": conversation, "more": more,
            "settings": answer_settings(settings)}
    try:
        lines = stream_running(settings, "/engram/ask", body, timeout=settings.runtime_timeout_s)
    except Refused as exc:
        raise click.ClickException(str(exc)) from None
    if lines is None:
        return None
    kinds = {"sources": Sources, "delta": Delta, "done": Done}

    def events() -> Iterator[Any]:
        try:
            for line in lines:
                kind = kinds.get(line.get("kind"))
                if kind is None:
                    raise click.ClickException(f"the running Engram: {line.get('message', line)}")
                yield kind.model_validate(line)
        except Broken as exc:
            raise click.ClickException(str(exc)) from None

    return events()


def _print_answer_json(question: str, events: Iterator[Any]) -> None:
    """The whole answer as one JSON object once it is complete (nothing streamed to stdout)."""
    from app.chat.service import Done

    done = [e for e in events if isinstance(e, Done)]
    answer = Answer.of(question, done[-1].message)
    print_json(answer)
    if answer.error:
        raise click.ClickException(answer.error)


def _print_decision(message: MessageRow) -> None:
    """What the meta-controller gave the question, in one dim line."""
    from app.core import Decision

    if message.meta.get("controller"):
        console.print(f"[dim]{Decision.model_validate(message.meta['controller']).summary()}[/]", highlight=False)


def _print_revision(message: MessageRow) -> None:
    """What the critic's flags changed (``critic_regenerate``): the line, what was dropped, and
    the answer delivered in place of the draft that streamed above."""
    from app.chat.revision import Revision

    if not message.meta.get("revision"):
        return
    revision = Revision.model_validate(message.meta["revision"])
    console.print(f"[yellow]{revision.line()}:[/]", highlight=False)
    for verdict in revision.dropped:
        console.print(f"    - {verdict.sentence} ({verdict.reason})", markup=False, highlight=False)
    console.print("[bold]Answer:[/]", highlight=False)
    console.print(message.content, markup=False, highlight=False)


def _print_unsupported(message: MessageRow) -> None:
    """The critic's line after the answer, and each sentence no source supports."""
    from app.chat.critic import flagged_in, unsupported_line

    flagged = flagged_in(message.meta)
    if flagged:
        console.print(f"[yellow]{unsupported_line(len(flagged))}:[/]", highlight=False)
        for verdict in flagged:
            console.print(f"    ~ {verdict.sentence} ({verdict.reason})", markup=False, highlight=False)


def _print_sources(message: MessageRow) -> None:
    for cite in message.citations:
        console.print(f"[bold][{cite.n}][/] {escape(cite.label)} ({cite.position})  {escape(cite.path)}",
                      highlight=False)
        console.print(f"    “{cite.quote}”", markup=False, highlight=False)
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
    with user_errors(KeyError, ClientAnswer):
        c.engram.chat.feedback(answer_id, rating, correction)  # type: ignore[arg-type]
    console.print("Thanks: feedback recorded.")


@cli.command()
@click.argument("conversation_id", type=int, required=False)
@pass_ctx
def conversations(c: Context, conversation_id: int | None) -> None:
    """List conversations, or show one with its answers and sources."""
    if conversation_id is None:
        rows = c.engram.conversation_list()
        if not rows:
            console.print('No conversations yet: `engram ask "..."`.')
        for row in rows:
            console.print(f"{row.id:>4}  {row.updated_at[:16].replace('T', ' ')}  "
                          f"{row.messages:>3} messages  {row.title}", highlight=False)
        return
    with user_errors(KeyError):
        messages = c.engram.conversation_messages(conversation_id)
    for message in messages:
        who = "[bold]You:[/]" if message.role == "user" else "[bold]Engram:[/]"
        mark = {"up": " 👍", "down": " 👎"}.get(message.feedback or "", "")
        console.print(f"{who}{mark}")
        console.print(message.content, markup=False, highlight=False)
        if message.correction:
            console.print(f"[dim]correction:[/] {message.correction}", highlight=False)
