"""The memory tiers over real parts (SQLite, FAISS, FTS5, the embedded MiniLM, SmolLM2 in llama.cpp):
facts said in chat become cited knowledge in sleep; earlier conversations are recalled by
similarity weighted by age."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from click.testing import CliRunner

from app.chat import controller
from app.cli import cli
from app.memory.consolidation import EMBEDDED_AS, note_embedder, reembed
from app.memory.episodic import recency_weight
from app.memory.importance import score_sentence
from engines.generation import GenerationRequest, Runtime, TextDelta, Usage
from store.memory_facts import conversation_path
from store.memory_facts import MemoryFactStore
from store.state import StateStore
from tests.helpers import open_engram
from ui.source_page import render_source

LOCKER = "What is my locker code?"


def said(engram, text: str, answer: str = "Noted.", conversation_id: int | None = None) -> tuple[int, int]:
    """A turn and Engram's reply stored as chat stores them; (conversation id, answer id)."""
    asked = engram.conversations.start_question(conversation_id, text)
    reply = engram.conversations.add_answer(asked.conversation_id, answer, [], {"backend": "llamacpp"})
    return asked.conversation_id, reply.id


def found(engram, query: str = LOCKER) -> list[tuple[str, str]]:
    return [(p.path, p.text) for p in engram.search(query, 3)]


def test_importance_rules_rank_a_correction_over_a_fact_over_chit_chat() -> None:
    assert score_sentence("My locker code is 4471.").importance == 0.6
    assert score_sentence("My sister Ilse lives in Ghent.").importance == 0.5
    assert score_sentence("Actually, my locker code is 5510.").kind == "self_correction"
    assert score_sentence("I am tired today.").importance == 0.3  # below the default cut
    for not_a_fact in ("What is my locker code?", "Tell me about the ferry schedule.", "thanks a lot", "ok sure"):
        assert score_sentence(not_a_fact) is None, not_a_fact


def test_questions_that_refer_back_are_the_only_ones_that_search_earlier_conversations() -> None:
    assert controller.before("What did I tell you about my locker?", ["rag"], "rules", episodic=True).episodic
    assert not controller.before(LOCKER, ["rag"], "rules", episodic=True).episodic
    assert not controller.before("What did I tell you?", ["rag"], "rules", episodic=False).episodic
    now = datetime(2026, 12, 6, tzinfo=timezone.utc)
    week_ago = (now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert recency_weight(week_ago, now, 7.0) == pytest.approx(0.5)


def test_stated_fact_consolidates_once_a_correction_supersedes_it_and_deletion_removes_it(embedder) -> None:
    engram = open_engram(embedder)
    try:
        first, _ = said(engram, "Hi! My locker code is 4471. Can you remember that?", "Sure.")
        said(engram, "I am tired today.", "The ferry costs 99 crowns.", first)  # chit-chat; the assistant's words
        assert found(engram) == []
        memory = engram.sleep(1)[0]
        assert memory.engine == "memory" and memory.details["added"] == 1
        assert found(engram)[0] == (conversation_path(first), "My locker code is 4471.")
        facts = engram.memory_facts()
        assert [(f.text, f.kind, f.status) for f in facts] == [
            ("My locker code is 4471.", "statement", "retrievable")]
        chunks, vectors = engram.docs.counts()["chunks"], len(engram.index)

        again = engram.sleep(1)[0]  # idempotent: nothing added, nothing removed
        assert again.details["added"] == again.details["removed"] == 0 and not again.changed
        assert (engram.docs.counts()["chunks"], len(engram.index)) == (chunks, vectors)
        assert engram.memory_facts()[0].chunk_id == facts[0].chunk_id

        view = engram.source(facts[0].chunk_id)
        assert view.kind == "conversation" and view.position == "turn 1"
        assert view.quote == "My locker code is 4471." and "You: Hi!" in view.passage_start
        page = render_source(view)  # the page a citation link opens: the turn, not a file
        assert "<h1>Conversation: Hi! My locker code is 4471." in page
        assert "<strong>My locker code is 4471.</strong>" in page and "Engram: Sure." in page

        # a correction typed on an answer, in another conversation, supersedes the statement
        second, answer = said(engram, LOCKER, "Your locker code is 4471.")
        engram.chat.feedback(answer, "down", "It is 5510 since Monday.")
        report = engram.sleep(1)[0]
        assert report.details["added"] == 1 and report.details["removed"] == 1
        hits = found(engram)
        assert hits[0][0] == conversation_path(second) and "5510" in hits[0][1]
        assert not any("4471" in text for _, text in hits)
        statuses = {f.kind: f.status for f in engram.memory_facts()}
        assert statuses["statement"].startswith("superseded") and statuses["correction"] == "retrievable"
        assert len(engram.index) == vectors  # one vector out, one in
        assert reembed(engram.db, embedder.embed) == 2  # an embedding switch: facts again, turns later
        after = engram.sleep(1)[0]
        assert not after.changed and after.details["turns_embedded"] == 6

        engram.delete_conversation(second)  # its knowledge goes with it
        assert not any(path == conversation_path(second) for path, _ in found(engram))
        assert engram.docs.get(conversation_path(second)) is None
        assert all(f.conversation_id != second for f in engram.memory_facts())
        quoted = "SELECT COUNT(*) FROM episodes WHERE conversation_id = ?"  # its question and correction
        assert engram.db.scalar(quoted, (second,)) == 0 and engram.db.scalar(quoted, (first,)) > 0
        with pytest.raises(KeyError):
            engram.delete_conversation(second)
    finally:
        engram.close()


def test_facts_left_on_the_previous_model_by_a_crash_after_the_index_swap_follow_at_start(embedder) -> None:
    engram = open_engram(embedder)
    try:
        said(engram, "Hi! My locker code is 4471. Can you remember that?", "Sure.")
        engram.sleep(1)
        store, state = MemoryFactStore(engram.db), StateStore(engram.db)
        fact = store.facts()[0]
        assert state.get(EMBEDDED_AS) is None  # never switched: nothing to compare
        reembedded = store.vectors()[fact.id][0]
        live = engram._live_identity()
        note_embedder(engram.db, "minilm-before-the-switch")  # recorded before a swap ...
        assert state.get(EMBEDDED_AS) == "minilm-before-the-switch"
        store.replace_vectors(fact.id, np.zeros_like(reembedded), None)  # ... then the app died
        engram._follow_embedder()  # as start() does
        assert state.get(EMBEDDED_AS) == live and np.allclose(store.vectors()[fact.id][0], reembedded, atol=1e-5)
        store.replace_vectors(fact.id, np.zeros_like(reembedded), None)
        engram._follow_embedder()  # they match now: nothing is embedded again
        assert not store.vectors()[fact.id][0].any()
    finally:
        engram.close()


def test_forgetting_a_fact_or_its_conversation_document_keeps_it_out_of_later_sleeps(embedder) -> None:
    engram = open_engram(embedder)
    try:
        first, _ = said(engram, "The spare key is with Ada Okafor at number 12.")
        second, _ = said(engram, "My bike lock code is 9921.")
        engram.sleep(1)
        bike = next(f for f in engram.memory_facts() if "9921" in f.text)
        result = CliRunner().invoke(cli, ["memory", "forget", str(bike.id)])
        assert result.exit_code == 0, result.output
        with pytest.raises(ValueError, match="sleep keeps them up to date"):
            engram.reindex_document(conversation_path(first))  # no file to read again
        engram.forget_document(conversation_path(first))  # the Library's forget
        engram.sleep(1)
        assert [f.status for f in engram.memory_facts()] == ["forgotten", "forgotten"]
        assert found(engram, "bike lock code") == [] and found(engram, "spare key") == []
        listed = CliRunner().invoke(cli, ["memory", "list"])
        assert "forgotten" in listed.output and "9921" in listed.output
        # A sleep that read the fact before it was forgotten (the person acted meanwhile) does
        # not make it knowledge again.
        # A cut that no longer finds the fact, then finds it again: it stays forgotten.
        cut = engram.settings.memory.min_importance
        engram.settings.memory.min_importance = 1.0
        engram.sleep(1)
        engram.settings.memory.min_importance = cut
        engram.sleep(1)
        assert [f.status for f in engram.memory_facts()] == ["forgotten", "forgotten"]
        assert found(engram, "bike lock code") == []
        stale = bike.model_copy(update={"chunk_id": None, "forgotten": False})
        assert MemoryFactStore(engram.db).attach(stale, np.ones(embedder.dim, dtype=np.float32)) is None
        assert found(engram, "bike lock code") == []
    finally:
        engram.close()


def test_earlier_conversations_recalled_newest_first_at_equal_similarity(embedder) -> None:
    engram = open_engram(embedder)
    try:
        old, _ = said(engram, "My locker code is 4471.", "Noted: 4471.")
        new, _ = said(engram, "My locker code is 4471.", "Noted: 4471.")
        said(engram, "The ferry to Oskel Isle leaves at 06:40.")
        engram.db.execute("UPDATE messages SET created_at = strftime('%Y-%m-%dT%H:%M:%f', 'now', '-30 days') "
                          "WHERE conversation_id = ?", (old,))
        recalled = engram.episodic.recall("What did I tell you about my locker?", k=3)
        assert [r.conversation_id for r in recalled[:2]] == [new, old]
        assert recalled[0].recency > 0.99 and recalled[1].recency == pytest.approx(0.5 ** (30 / 14), rel=0.01)
        assert recalled[0].question == "My locker code is 4471." and recalled[0].answer == "Noted: 4471."
        assert all(r.conversation_id != new for r in engram.episodic.recall("my locker", exclude_conversation=new))
    finally:
        engram.close()


class SaysOnly(Runtime):
    """Stands in for the chat model where the test needs to know the answer's words (SmolLM2's
    cannot be chosen); it keeps the prompts it was sent."""

    name = "fixed"
    model_name = "fixed"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[GenerationRequest] = []

    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        self.requests.append(request)
        text = self.answers.pop(0)
        yield TextDelta(text=text)
        yield Usage(prompt_tokens=1, completion_tokens=len(text.split()))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def context_window(self) -> int:
        return 4096


def test_an_answer_drawn_from_a_recalled_exchange_cites_its_conversation_and_the_critic_checks_it(
        embedder, monkeypatch) -> None:
    engram = open_engram(embedder, critic="rules", critic_regenerate="off")  # flags shown, not revised
    model = SaysOnly("You told me your locker code is 4471.", "You told me your locker code is 5510.",
                     "You told me it is 4471.")
    engram.runtime.adopt(model)
    try:
        told, _ = said(engram, "My locker code is 4471.", "Noted: your locker code is 4471.")
        said(engram, "The ferry to Oskel Isle leaves at 06:40.", "Noted.")
        done = engram.chat.answer("What did I tell you about my locker?").message
        sent = model.requests[0].messages
        assert [m.role for m in sent] == ["system", "user"]  # the earlier exchange is no chat turn
        assert "[1] From your earlier conversation of " in sent[0].content
        first = done.citations[0]
        assert first.path == conversation_path(told) and first.title == "My locker code is 4471." and first.cited
        assert first.position == "turns 1-2" and "4471" in first.quote and first.said_at
        assert done.meta["recalled"][0]["conversation_id"] == told and done.meta["history_messages"] == 0
        assert done.meta["controller"]["critic"] and done.meta["unsupported"] == 0
        assert [v["supported"] for v in done.meta["critic"]["sentences"]] == [True]
        # Asked again in that conversation (which recall leaves out): a number it was never told.
        wrong = engram.chat.answer("What did I tell you about my locker?", done.conversation_id).message
        assert wrong.meta["unsupported"] == 1 and wrong.citations[0].path == conversation_path(told)
        from app import cli as cli_module

        monkeypatch.setattr(cli_module.Context, "engram", property(lambda self: engram))
        monkeypatch.setattr(cli_module.Context, "close", lambda self: None)
        printed = CliRunner().invoke(cli, ["ask", "--local", "-c", str(done.conversation_id),
                                           "What did I say about my locker?"])
        assert printed.exit_code == 0, printed.output
        assert f"[1] conversation:{told} “My locker code is 4471.” of " in printed.output
        assert "(turns 1-2)" in printed.output
    finally:
        engram.close()


def test_engrams_own_earlier_answer_supports_nothing_the_critic_checks(embedder) -> None:
    """A recalled answer records what Engram said, not that it is true: a door code it invented
    then is flagged when repeated; the locker number the person gave stays supported. An
    answer the person confirmed (thumbs up) vouches for itself: consolidated, it counts in full."""
    engram = open_engram(embedder, critic="rules", critic_regenerate="off")  # flags shown, not revised
    model = SaysOnly("Your locker is 4471. The door code is 5510.")
    engram.runtime.adopt(model)
    try:
        told, _ = said(engram, "My locker is 4471. What is the door code?", "The door code is 5510.")
        done = engram.chat.answer("What did I tell you about my locker and the door code?").message
        assert "You answered: The door code is 5510." in model.requests[0].messages[0].content  # the prompt keeps it
        assert done.citations[0].path == conversation_path(told)
        verdicts = [(v["sentence"], v["supported"]) for v in done.meta["critic"]["sentences"]]
        assert verdicts == [("Your locker is 4471.", True), ("The door code is 5510.", False)]
        # Consolidated: a statement, and an answer the person confirmed, count in full.
        _, answer = said(engram, "Which gate does the Oskel ferry use?", "The Oskel ferry uses gate 7.")
        engram.chat.feedback(answer, "up")
        engram.sleep(1)
        facts = {p.text: p for p in engram.search("locker Oskel ferry gate", 5) if p.path.startswith("conversation:")}
        assert facts["My locker is 4471."].support == "My locker is 4471."
        confirmed = facts["Which gate does the Oskel ferry use? The Oskel ferry uses gate 7."]
        assert confirmed.support == confirmed.text
    finally:
        engram.close()


@pytest.mark.slow
def test_a_fact_stated_in_chat_answers_a_new_conversation_with_the_conversation_cited(embedder, llama) -> None:
    engram = open_engram(embedder, answer_max_tokens=16, temperature=0)
    engram.runtime.adopt(llama)
    try:
        stated = engram.chat.answer("Please note: my locker code is 4471.").message
        engram.sleep(1)
        done = engram.chat.answer(LOCKER).message
        assert done.conversation_id != stated.conversation_id
        cited = [c for c in done.citations if c.path == conversation_path(stated.conversation_id)]
        assert cited and "my locker code is 4471." in cited[0].quote and cited[0].position == "turn 1"
        assert "4471" in done.content
        back = engram.chat.answer("What did I tell you about my locker?").message
        assert back.meta["controller"]["episodic"]
        assert back.meta["recalled"][0]["conversation_id"] in (stated.conversation_id, done.conversation_id)
        recalled_from = {c.path for c in back.citations if c.title}  # sources, not history
        assert conversation_path(back.meta["recalled"][0]["conversation_id"]) in recalled_from
        assert back.meta["history_messages"] == 0 and back.meta["critic"]["sentences"]
    finally:
        engram.close()


def test_a_fact_said_in_chat_makes_sleep_due_and_a_question_does_not(embedder) -> None:
    engram = open_engram(embedder, **{"sleep.idle_minutes": 0})
    try:
        said(engram, "Who drew the map?")
        assert not engram.sleeper.due()  # a question is no fact
        said(engram, "The map was drawn by Ada Okafor in 1921.")
        assert engram.sleeper.due()
        assert "1 fact(s) said in chat wait to be kept." in engram.sleep_status().summary(str)
        engram.sleep(1)
        assert not engram.sleeper.due() and engram.sleep_status().facts_said == 0
    finally:
        engram.close()
