"""The meta-controller: small talk is answered without any memory, learned weights answer only
the questions routed to them, the critic runs where there were sources, and the decision is
stored with the answer and shown under it (app, CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.chat import controller
from app.chat.controller import Decision, is_small_talk
from engines.base import Contribution, Passage
from tests.helpers import open_engram


def test_small_talk_is_told_from_questions():
    for said in ["hi", "Thanks!", "thank you very much", "Good morning", "ok, got it", "bye", "cheers"]:
        assert is_small_talk(said), said
    for asked in ["hi, when does the ferry leave", "thanks, and who designed it?", "ok?",
                  "what is a good morning routine", "", "yes please tell me about Parsec"]:
        assert not is_small_talk(asked), asked


def passage(text: str) -> Passage:
    return Passage(chunk_id=1, document_id=1, path="/notes/a.txt", line_start=1, line_end=1,
                   score=0.9, text=text)


def test_a_learned_state_routed_nothing_is_left_inactive_with_its_notes():
    rag = Contribution(engine="rag", passages=[passage("The ferry leaves at 06:40.")])
    ttt = Contribution(engine="ttt", learned_states=["ttt rev 3: 2 documents"], meta={"routed_share": 0.0},
                       notes=["answered with 0% of the weights learned from 2 documents"])
    decision = controller.after(controller.before("when does the ferry leave", ["rag", "ttt"], "rules"), [rag, ttt])
    assert decision.learned == [] and decision.skipped_learned == ["ttt rev 3: 2 documents"] and decision.critic
    assert any("routed 0%" in r for r in decision.reasons)
    used = controller.active([rag, ttt], decision)
    assert used[0] == rag and used[1].learned_states == [] and used[1].notes == []
    assert decision.summary() == "memory: rag, ttt · learned weights: not needed"

    routed = ttt.model_copy(update={"meta": {"routed_share": 0.4}})
    decision = controller.after(controller.before("q", ["rag", "ttt"], "rules"), [routed])
    assert decision.learned == ["ttt rev 3: 2 documents"] and not decision.critic  # no passages to check
    assert controller.active([routed], decision) == [routed]
    unreported = ttt.model_copy(update={"meta": {}})  # routing off: the engine says nothing of shares
    assert controller.after(controller.before("q", ["ttt"], "rules"), [unreported]).learned == ["ttt rev 3: 2 documents"]
    off = controller.after(controller.before("thanks", ["rag", "ttt"], "off"), [ttt])
    assert off.memory and off.learned == ["ttt rev 3: 2 documents"] and off.critic  # everything, as before


@pytest.mark.slow
def test_chat_skips_memory_for_small_talk_and_says_so(embedder, tmp_path: Path, isolated_dirs):
    from app.cli import cli
    from app.core import Sources
    from ui.chat_tab import render_answer

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
    engram = open_engram(embedder, answer_max_tokens=24, temperature=0)
    try:
        engram.ingest([notes])
        engram.run_pending()
        events = list(engram.chat.ask("Thanks a lot!"))
        sources = next(e for e in events if isinstance(e, Sources))
        message = events[-1].message
        decision = Decision.model_validate(message.meta["controller"])
        assert not sources.consulted and sources.citations == [] and not decision.memory
        assert decision.consulted == [] and "critic" not in message.meta
        assert "memory: none needed (small talk)" in render_answer(message.content, [], message.meta)

        message = engram.chat.answer("When does the ferry to Oskel Isle leave?").message
        decision = Decision.model_validate(message.meta["controller"])
        assert decision.memory and decision.consulted == ["rag"] and decision.critic
        assert message.citations and "critic" in message.meta
        assert "memory: rag" in render_answer(message.content, message.citations, message.meta)

        newest, older = engram.decisions()  # the app's table, newest first
        assert (newest.question, newest.memory, newest.critic, newest.answered_by) == (
            "When does the ferry to Oskel Isle leave?", "rag", "on", "llamacpp")
        assert (older.question, older.memory, older.critic) == ("Thanks a lot!", "none (small talk)", "off")
        assert newest.seconds is not None and newest.seconds > 0
    finally:
        engram.close()

    result = CliRunner().invoke(cli, ["--answer-max-tokens", "16", "ask", "hello", "--local"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "No passage" not in result.output and "memory: none needed (small talk)" in result.output


@pytest.mark.slow
def test_the_controller_bench_asks_each_question_with_the_controller_on_and_off(isolated_dirs):
    from app.bench.controller import run_controller_bench

    lines: list[str] = []
    report = run_controller_bench(open_engram(answer_max_tokens=16).settings, documents=1, general=2,
                                  learn=False, small_talk=2, echo=lines.append, epochs=1, follow_up=0,
                                  revisions=False)
    kinds = {k.kind: k for k in report.by_kind}
    assert list(kinds) == ["document", "general", "small talk"] and kinds["general"].questions == 2
    assert report.hallucination is None and report.follow_up_accuracy_on is None
    assert kinds["small talk"].on.accuracy is None and kinds["document"].questions >= 3
    # Nothing learned: llama.cpp answers every question in both arms.
    for kind in kinds.values():
        assert kind.on.torch_answers == kind.off.torch_answers == 0
        assert kind.on.accuracy is None or 0.0 <= kind.on.accuracy <= 1.0
    assert 0.0 <= report.accuracy_on <= 1.0 and report.latency_on_s > 0 and report.latency_off_s > 0
    assert not report.learned and report.samples
    # The bandit: trained on half of each kind (feedback from the known answers), compared on the other half.
    bandit = report.bandit
    assert bandit is not None and bandit.train_questions + bandit.held_out_questions == sum(
        k.questions for k in report.by_kind)
    assert bandit.learned == bandit.train_questions  # one epoch: every training answer's reward learned
    assert set(bandit.held_out) == {"bandit", "rules", "off"} and sum(bandit.arms.values()) == bandit.held_out_questions
    assert all(f.latency_s > 0 for f in bandit.held_out.values())
    assert any(line.startswith("  bandit: training epoch 1/1") for line in lines)


@pytest.mark.slow
def test_the_bench_asks_follow_ups_and_judges_the_critics_revisions(isolated_dirs):
    from app.bench.controller import run_controller_bench

    report = run_controller_bench(open_engram(answer_max_tokens=16).settings, documents=1, general=0,
                                  learn=False, small_talk=0, echo=lambda _: None, bandit=False,
                                  follow_up=1, document_questions=0)
    kinds = {k.kind: k for k in report.by_kind}
    assert list(kinds) == ["follow-up"] and kinds["follow-up"].questions == 1
    assert report.follow_up_accuracy_on is not None and report.follow_up_accuracy_off is not None
    assert set(kinds["follow-up"].revisions) == {"drop", "regenerate"}
    assert kinds["follow-up"].revisions["drop"].regenerated == 0
    figures = [kinds["follow-up"].on, kinds["follow-up"].off, *kinds["follow-up"].revisions.values()]
    assert all(f.recalled == 0 for f in figures)  # always-all never copies another arm's earlier answer
    halluc = report.hallucination
    assert halluc is not None and halluc.questions == 1 and set(halluc.by_mode) == {"drop", "regenerate"}
    assert all(0.0 <= r <= 1.0 for r in [halluc.today, halluc.always_all, *halluc.by_mode.values()])
    assert halluc.best in halluc.by_mode and halluc.halved == (
        halluc.by_mode[halluc.best] <= halluc.today / 2 if halluc.today else halluc.by_mode[halluc.best] == 0)
    data = report.model_dump(mode="json")
    assert {"follow_up_accuracy_on", "follow_up_accuracy_off", "hallucination"} <= set(data)
    assert {"today", "always_all", "by_mode", "accuracy", "halved"} <= set(data["hallucination"])
