"""What Engram keeps from chat: ``engram memory list``, ``forget``, ``delete-conversation``."""

from __future__ import annotations

import click

from app.cli.base import Context, cli, console, pass_ctx, user_errors


@cli.group()
def memory() -> None:
    """Facts consolidated from chat in sleep, and the conversations they came from."""


@memory.command("list")
@click.option("--conversation", "conversation_id", type=int, default=None, help="Only this conversation's facts.")
@pass_ctx
def list_facts(c: Context, conversation_id: int | None) -> None:
    """Every fact sleep found said in chat: its importance, why, and whether it is retrievable."""
    facts = c.engram.memory_facts(conversation_id)
    if not facts:
        console.print("Nothing consolidated from chat yet: facts you state or correct are kept after a sleep "
                      "(`engram sleep`).", highlight=False, markup=False)
    for fact in facts:
        console.print(f"#{fact.id:<4} conversation {fact.conversation_id:<4} {fact.kind:<11} {fact.importance:.2f}  "
                      f"{fact.status:<18} {fact.text}  ({fact.reason})", highlight=False, markup=False)


@memory.command()
@click.argument("fact_id", type=int)
@pass_ctx
def forget(c: Context, fact_id: int) -> None:
    """Stop knowing one consolidated fact (no sleep adds it again)."""
    with user_errors(KeyError):
        c.engram.forget_fact(fact_id)
    console.print(f"Fact #{fact_id} forgotten: answers no longer find it.", highlight=False, markup=False)


@memory.command("delete-conversation")
@click.argument("conversation_id", type=int)
@pass_ctx
def delete_conversation(c: Context, conversation_id: int) -> None:
    """Delete a conversation and the knowledge consolidated from it."""
    with user_errors(KeyError):
        c.engram.delete_conversation(conversation_id)
    console.print(f"Conversation {conversation_id} deleted, with the facts kept from it.",
                  highlight=False, markup=False)
