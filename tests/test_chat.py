"""Grounded chat over real parts: the embedded model in llama.cpp, real embeddings, FAISS, SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.chat.service import Delta, Done, Sources, best_quote, citations_for
from app.cli import cli
from app.chat.prompt import NO_SOURCES, build_prompt, cut_to_tokens, learned_system, shown_evidence
from engines.base import Contribution, Passage
from engines.cls.config import CLSConfig
from engines.generation import ChatMessage
from engines.ttt.config import TTTConfig
from tests.helpers import open_engram

FERRY = "The ferry to Oskel Isle leaves at 06:40 from pier nine. Tickets cost 14 crowns.\n"
LAB = ("# Quellbrook Robotics Lab\n\nThe Quellbrook lab builds the Tessaline crawler.\n"
       "Its lead engineer is Dr. Anwen Falk.\n")


@pytest.fixture
def engram(tmp_path: Path, embedder, llama):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ferry.txt").write_text(FERRY)
    (docs / "lab.md").write_text(LAB)
    e = open_engram(embedder, answer_max_tokens=48, temperature=0)
    e.runtime.adopt(llama)
    e.ingest([docs])
    e.run_pending()
    yield e
    e.close()


def events_of(engram, question: str, conversation_id: int | None = None) -> list:
    return list(engram.chat.ask(question, conversation_id))


def test_answer_streams_with_a_citation_and_is_stored(engram) -> None:
    events = events_of(engram, "When does the ferry to Oskel Isle leave?")
    sources, *deltas, done = events
    assert isinstance(sources, Sources) and isinstance(done, Done)
    assert all(isinstance(d, Delta) for d in deltas) and len(deltas) >= 3
    answer = done.message
    streamed = "".join(d.text for d in deltas).strip()
    revision = answer.meta.get("revision")  # the critic may have revised the draft (critic_regenerate)
    assert "06:40" in answer.content and streamed == (revision["draft"] if revision else answer.content)
    first = answer.citations[0]
    assert first.path.endswith("ferry.txt") and first.line_start == 1 and first.cited
    assert "06:40" in first.quote
    assert answer.meta["backend"] == "llamacpp" and answer.meta["completion_tokens"] > 0
    stored = engram.conversations.messages(sources.conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    kinds = [r[0] for r in engram.db.query(
        "SELECT kind FROM episodes WHERE conversation_id = ? ORDER BY id", (sources.conversation_id,))]
    assert kinds == ["question", "answer"]


def test_follow_up_uses_the_conversation(engram) -> None:
    first = engram.chat.answer("Who is the lead engineer of the Quellbrook lab?")
    assert "Falk" in first.message.content
    follow = engram.chat.answer("What does the lab build?", first.message.conversation_id)
    assert follow.message.meta["history_messages"] == 2
    assert any(c.path.endswith("lab.md") for c in follow.message.citations)
    assert len(engram.conversations.messages(first.message.conversation_id)) == 4


def test_unrelated_question_has_no_sources(engram) -> None:
    sources = events_of(engram, "Explain photosynthesis in plants.")[0]
    assert sources.citations == [] and "no passage reached the similarity cut" in sources.notes


def test_feedback_and_correction_are_recorded(engram) -> None:
    answer = engram.chat.answer("How much does a ferry ticket cost?").message
    engram.chat.feedback(answer.id, "down")
    updated = engram.chat.feedback(answer.id, None, "It costs 14 crowns.")
    assert updated.feedback == "down" and updated.correction == "It costs 14 crowns."
    payloads = [r[0] for r in engram.db.query("SELECT payload FROM episodes WHERE kind = 'feedback'")]
    assert len(payloads) == 2 and '"rating": "down"' in payloads[0]
    with pytest.raises(KeyError):
        engram.chat.feedback(answer.id - 1, "up")  # the question, not an answer


def test_stopping_early_keeps_the_partial_answer(engram) -> None:
    stream = engram.chat.ask("When does the ferry to Oskel Isle leave?")
    sources = next(stream)
    next(stream), next(stream)
    stream.close()
    messages = engram.conversations.messages(sources.conversation_id)
    assert messages[-1].role == "assistant" and messages[-1].meta["stopped"] is True
    assert messages[-1].content and not engram.runtime.get().lock.locked()


def test_an_answer_cut_at_the_token_limit_is_marked_and_continues(tmp_path: Path, embedder, llama) -> None:
    """finish_reason "length" is stored with the answer; continuing is a follow-up turn that
    carries the cut answer into the prompt even when no history is kept otherwise."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lab.md").write_text(LAB)
    e = open_engram(embedder, answer_max_tokens=16, temperature=0, history_turns=0)
    e.runtime.adopt(llama)
    try:
        e.ingest([docs])
        e.run_pending()
        cut = e.chat.answer("Tell me everything about the Quellbrook lab and its people.").message
        assert cut.meta["finish_reason"] == "length" and cut.meta["completion_tokens"] == 16
        more = list(e.chat.continue_answer(cut.conversation_id))
        done = more[-1].message
        assert done.meta["history_messages"] == 2 and done.content
        asked = e.conversations.messages(cut.conversation_id)[-2]
        assert asked.role == "user" and asked.content == e.chat.continue_question
    finally:
        e.close()


def test_deleted_document_is_no_longer_cited(engram, tmp_path: Path) -> None:
    question = "When does the ferry to Oskel Isle leave?"
    assert events_of(engram, question)[0].citations
    (tmp_path / "docs" / "ferry.txt").unlink()
    engram.ingest([tmp_path / "docs"])
    engram.run_pending()
    cited = [c.path for c in events_of(engram, question)[0].citations]
    assert not any(p.endswith("ferry.txt") for p in cited)


def test_logit_bias_reaches_the_model(engram) -> None:
    engram.settings.rag.logit_bias = True
    done = engram.chat.answer("When does the ferry to Oskel Isle leave?")
    assert done.message.meta["logit_bias"] is True and done.message.content


def test_cli_ask_prints_answer_and_sources(engram, monkeypatch) -> None:
    from app import cli as cli_module

    monkeypatch.setattr(cli_module.Context, "engram", property(lambda self: engram))
    monkeypatch.setattr(cli_module.Context, "close", lambda self: None)
    result = CliRunner().invoke(cli, ["ask", "Who is the lead engineer of the Quellbrook lab?"])
    assert result.exit_code == 0, result.output
    assert "Falk" in result.output and "[1] lab.md" in result.output
    listed = CliRunner().invoke(cli, ["conversations"])
    assert "lead engineer" in listed.output


# --- the prompt, with a word counter standing in for a tokenizer --------------------------------


def words(text: str) -> int:
    return len(text.split())


def passage(n: int, text: str, score: float = 0.9) -> Passage:
    return Passage(chunk_id=n, document_id=n, path=f"/d/doc{n}.txt", line_start=n, line_end=n + 1,
                   score=score, text=text)


def test_prompt_numbers_sources_and_fits_the_window() -> None:
    long = " ".join(f"word{i}." for i in range(400))
    plan = build_prompt("what is it?", [passage(1, "short fact."), passage(2, long)], [],
                        [], words, context_window=300, answer_tokens=50, context_share=1.0)
    system = plan.messages[0].content
    assert "[1] doc1.txt, lines 1-2:\nshort fact." in system and "[2] doc2.txt" in system
    assert len(plan.passages) == 2 and plan.passages[1].text != long  # cut to fit
    assert plan.prompt_tokens <= 250 and words(system) < 250


def test_prompt_trims_oldest_history_and_never_starts_mid_turn() -> None:
    history = [ChatMessage(role=r, content=f"{r} turn {i} " + "x " * 30)
               for i in range(4) for r in ("user", "assistant")]
    plan = build_prompt("q?", [passage(1, "fact.")], [], history, words, context_window=260,
                        answer_tokens=40, context_share=0.5)
    kept = plan.messages[1:-1]
    assert kept and kept[0].role == "user" and len(kept) < len(history)
    assert kept[-1].content == history[-1].content


def test_without_sources_learned_weights_are_asked_as_they_learned() -> None:
    plain = build_prompt("q?", [], [], [], words, context_window=300, answer_tokens=50, context_share=1.0)
    learned = build_prompt("q?", [], [], [], words, context_window=300, answer_tokens=50, context_share=1.0,
                           system="Answer as rehearsed.")
    shown = build_prompt("q?", [passage(1, "x y z")], [], [], words, context_window=300, answer_tokens=50,
                         context_share=1.0, system="Answer as rehearsed.")
    assert plain.messages[0].content == NO_SOURCES
    assert learned.messages[0].content == "Answer as rehearsed."
    assert shown.messages[0].content != "Answer as rehearsed."  # passages keep the grounding instructions
    ttt = Contribution(engine="ttt", learned_states=["ttt:1"], system=TTTConfig().rehearsal_system)
    assert learned_system([Contribution(engine="rag"), ttt]) == TTTConfig().rehearsal_system
    assert learned_system([Contribution(engine="rag", system="ignored: no learned state")]) == ""


def test_a_general_question_without_sources_is_answered_in_english(engram) -> None:
    # The old no-sources message ("You are Engram, a helpful assistant. Answer briefly.") made the
    # embedded model answer this in French ("La femme au France, ...").
    answer = engram.chat.draft("What is the capital of France?", []).text
    assert "Paris" in answer and "capital" in answer.lower(), answer


def test_chat_asks_learned_weights_under_the_message_their_engine_is_configured_with(engram) -> None:
    # It was a constant equal to the engines' default: a configured rehearsal_system was ignored.
    learned = Contribution(engine="cls", learned_states=["cls:1"], system="Answer as rehearsed.")
    runtime = engram.chat.runtime.get()
    plan, _, _ = engram.chat.prompt("Who rang the bell?", [learned], runtime, [], learned=True)
    assert plan.messages[0].content == "Answer as rehearsed."
    plan, _, _ = engram.chat.prompt("Who rang the bell?", [learned], runtime, [])  # the chat model answers
    assert plan.messages[0].content == NO_SOURCES
    assert CLSConfig().rehearsal_system == TTTConfig().rehearsal_system  # what both rehearse by default


def test_prompt_too_small_window_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="window"):
        build_prompt("q " * 100, [], [], [], words, context_window=120, answer_tokens=60,
                     context_share=1.0)


def test_cut_quote_and_citation_marks() -> None:
    text = "First sentence here. Second one is longer than that. Third."
    assert cut_to_tokens(text, 6, words) == "First sentence here."
    assert best_quote(text, "it is longer") == "Second one is longer than that."
    cites = citations_for([passage(1, "alpha beta gamma."), passage(2, "delta epsilon.")], "See [2].")
    assert [c.cited for c in cites] == [False, True]


def test_words_echoed_from_the_question_do_not_make_a_passage_cited() -> None:
    question = "Who is the harbour master of Quell?"
    harbour = passage(1, "The harbour master of Quell is Ines Varo. She took the post in 2019.")
    tides = passage(2, "Spring tides in Quell reach four metres. The harbour closes at low tide.")
    cites = citations_for([harbour, tides], "The harbour master of Quell is Ines Varo.", question)
    assert [c.cited for c in cites] == [True, False]
    assert [c.cited for c in citations_for([harbour, tides], "Ines Varo.")] == [True, False]


def recalled(conversation_id: int, text: str) -> Passage:
    """An exchange recalled from an earlier conversation, as the chat makes it a source."""
    from app.memory.episodic import RecalledExchange

    question, answer = text.split(" | ")
    return RecalledExchange(conversation_id=conversation_id, title=question, question_id=1, answer_id=2,
                            question=question, answer=answer, created_at="2026-11-30T09:15:00.000",
                            similarity=0.8, recency=0.9, score=0.72, turn_start=3, turn_end=4).passage()


def test_a_recalled_exchange_is_a_numbered_source_headed_as_an_earlier_conversation() -> None:
    """Headed plainly and told in the instructions' words: the embedded model copies the shape
    of what it reads (a quoted title and "User:" lines came back as junk answers)."""
    from app.chat.service import sources_in_order

    locker = recalled(7, "My locker code is 4471. | Noted: 4471.")
    ferry = passage(1, "The ferry leaves at 06:40.")
    back = "What did I tell you about my locker?"
    assert sources_in_order(back, [ferry], [locker]) == [locker, ferry]  # what the question asks about first
    assert sources_in_order("When does the ferry leave?", [ferry], [locker]) == [ferry, locker]
    plan = build_prompt(back, sources_in_order(back, [ferry], [locker]), [], [], words,
                        context_window=400, answer_tokens=50, context_share=1.0)
    system = plan.messages[0].content
    assert ("[1] From your earlier conversation of 2026-11-30:\n"
            "The user said: My locker code is 4471.\n\nYou answered: Noted: 4471.") in system
    assert "[2] doc1.txt, lines 1-2:\nThe ferry leaves at 06:40." in system  # a document as before
    assert "past chats" in system
    assert [m.role for m in plan.messages] == ["system", "user"]  # not chat history
    cites = citations_for(plan.passages, "Your locker code is 4471.", back)
    assert cites[0].path == "conversation:7" and cites[0].title == "My locker code is 4471." and cites[0].cited
    assert cites[0].label == "conversation:7 “My locker code is 4471.” of 2026-11-30"
    assert cites[0].position == "turns 3-4" and cites[0].quote == "The user said: My locker code is 4471."
    assert not cites[1].cited
    # The budget drops the last source: the document, for a question that refers back.
    short = build_prompt(back, sources_in_order(back, [ferry], [locker]), [], [], words,
                         context_window=190, answer_tokens=50, context_share=1.0)
    assert [p.path for p in short.passages] == ["conversation:7"] and short.dropped_passages == 1


def test_the_critic_counts_only_what_the_person_said_in_a_recalled_stretch() -> None:
    """A compressed stretch brings all its turns; Engram's earlier answer in it records what it
    said, not that it is true, so a code it invented then supports nothing now."""
    from app.chat.critic import critique
    from app.memory.episodic import RecalledExchange

    said = [("user", "My locker is 4471."), ("assistant", "Noted. The door code is 5510."),
            ("user", "My bike lock is 9921, and the shed key hangs by the back door, on the hook behind the "
                     "blue watering can."), ("assistant", "Noted, your bike lock is 9921.")]
    stretch = RecalledExchange(
        conversation_id=7, title="Codes", question_id=None, answer_id=None, question="", answer="",
        created_at="2026-11-30T09:15:00.000", similarity=0.8, recency=0.9, score=0.72, stretch_id=3,
        turns=[ChatMessage(role=r, content=c) for r, c in said], turn_start=1, turn_end=4).passage()
    assert "You answered: Noted. The door code is 5510." in stretch.text  # the prompt keeps every turn
    question = "What did I tell you about my locker and the door?"
    report = critique("Your locker is 4471. The door code is 5510.", [stretch.support], question)
    assert [v.supported for v in report.sentences] == [True, False]
    assert "5510" in report.flagged[0].reason
    # Cut by a short budget: the critic gets the person's turns as far as the prompt shows them.
    plan = build_prompt(question, [stretch], [], [], words, context_window=186, answer_tokens=50,
                        context_share=1.0)
    shown = plan.passages[0]
    assert shown.text.endswith("You answered: Noted. The door code is 5510.\n\nThe user said: My bike lock "
                               "is 9921, and the shed key hangs by the back door, …")
    assert shown.support == ("The user said: My locker is 4471.\n\nThe user said: My bike lock is 9921, "
                             "and the shed key hangs by the back door,")
    assert shown_evidence(stretch.evidence, "The user said: My locker is 4471.\n\nYou answered: Noted. The "
                          "door …") == "The user said: My locker is 4471."


def test_shown_evidence_counts_a_turn_only_where_the_prompt_shows_it_as_a_turn() -> None:
    """Engram's answer may repeat the person's words ("The user said: ..." as the model copies the
    shape it read); a later turn of the person cut off the prompt is not shown by that, and a
    substring test counted it as support from Engram's own words."""
    evidence = "The user said: Hi.\n\nThe user said: The door code is 5510."
    shown = "The user said: Hi.\n\nYou answered: Noted. The user said: The door code is 5510. Anything …"
    assert shown_evidence(evidence, shown) == "The user said: Hi."
    # Cut just after a turn's first words: that start once, not once for every later turn.
    three = "The user said: Hi.\n\nThe user said: A.\n\nThe user said: B."
    assert shown_evidence(three, "The user said: Hi.\n\nYou answered: Yes.\n\nThe user …") == (
        "The user said: Hi.\n\nThe user")
