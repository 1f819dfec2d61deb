"""The critic's revisions (``critic_regenerate``): drop the flagged sentences, or regenerate once
from the supported content; and the hmst bench's hallucination judge and follow-up questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.follow_ups import follow_ups, pronoun_form
from app.bench.hallucination import judge
from app.chat.critic import critique
from app.chat.revision import NOTHING_SUPPORTED, Revision, revise
from app.cli.chat import _print_revision
from engines.generation import ChatMessage, GenerationRequest
from store.conversations import MessageRow
from tests.helpers import open_engram
from tests.test_critic import CRITIC, PASSAGE, _shared
from ui.chat_tab import render_answer

QUESTION = "Which company won the Selpri Bridge contract?"
DRAFT = "Corlum Engineering won the contract in 2016. Ovaquen Metalworks was its lead partner."
JUDGE = Path(__file__).resolve().parents[1] / "app" / "bench" / "hallucination.py"


def _never(_messages):
    raise AssertionError("drop must not generate")


def test_drop_removes_the_flagged_sentences_and_the_answer_says_so(capsys) -> None:
    report = critique(DRAFT, [PASSAGE], QUESTION)
    final, checked, revision = revise(DRAFT, report, QUESTION, [PASSAGE], "drop", _never,
                                      lambda t: critique(t, [PASSAGE], QUESTION))
    assert final == "Corlum Engineering won the contract in 2016." and checked.unsupported == 0
    assert revision is not None and revision.draft == DRAFT and revision.regenerations == 0
    assert [v.sentence for v in revision.dropped] == ["Ovaquen Metalworks was its lead partner."]
    assert revision.line() == "Revised: 1 unsupported sentence dropped"
    meta = {"critic": checked.model_dump(), "unsupported": 0, "revision": revision.model_dump()}
    html = render_answer(final, [], meta)
    assert "engram-revision-note" in html and "Revised: 1 unsupported sentence dropped" in html
    assert "Ovaquen" in html  # in the tooltip only: the answer shown lost it
    assert "not supported by your documents" not in html
    _print_revision(MessageRow(id=2, conversation_id=1, role="assistant", content=final, meta=meta,
                               created_at="2026-01-01T00:00:00"))
    out = capsys.readouterr().out
    assert "Revised: 1 unsupported sentence dropped" in out and "Ovaquen Metalworks was its lead partner." in out
    # Off, or nothing flagged: the answer is delivered as it is.
    assert revise(DRAFT, report, QUESTION, [PASSAGE], "off", _never, critique)[2] is None
    clean = critique(final, [PASSAGE], QUESTION)
    assert revise(final, clean, QUESTION, [PASSAGE], "regenerate", _never, critique)[2] is None


def test_nothing_supported_is_said_instead_of_guessed() -> None:
    wrong = "Ovaquen Metalworks won it in 2019."
    final, _, revision = revise(wrong, critique(wrong, [PASSAGE], QUESTION), QUESTION, [PASSAGE], "drop",
                                _never, lambda t: critique(t, [PASSAGE], QUESTION))
    assert final == NOTHING_SUPPORTED and revision is not None and len(revision.dropped) == 1


@pytest.mark.slow
def test_a_flagged_answer_is_regenerated_once_and_the_meta_records_it(tmp_path: Path, embedder, llama) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bridge.txt").write_text(PASSAGE)
    engram = open_engram(embedder, answer_max_tokens=40, temperature=0, critic_regenerate="regenerate")
    generations = []

    class Counted:  # the real model, counting the generations the revision asks of it
        name, model_name = llama.name, llama.model_name

        def generate(self, request: GenerationRequest):
            generations.append(request)
            return llama.generate(request)

    try:
        engram.runtime.adopt(llama)
        engram.ingest([docs])
        engram.run_pending()
        request = GenerationRequest(messages=[ChatMessage(role="user", content=QUESTION)], max_tokens=40)
        final, meta = engram.chat.check(DRAFT, [PASSAGE], QUESTION, Counted(), request)  # type: ignore[arg-type]
        revision = Revision.model_validate(meta["revision"])
        assert len(generations) == 1 == revision.regenerations and generations[0].temperature == 0.0
        assert "Ovaquen" not in generations[0].messages[-1].content.split("Question:")[1]
        assert revision.draft == DRAFT and revision.draft_unsupported == 1
        assert final and final != DRAFT and meta["unsupported"] == 0 == meta["critic"]["unsupported"]
        assert revision.regenerated or revision.note
        # Through chat: the delivered answer has no unsupported sentence left, and a revision is
        # recorded when the draft had one, with at most one regeneration.
        done = engram.chat.answer("Who billed the town for the Selpri Bridge, and what is the detour?")
        meta = done.message.meta
        assert meta["unsupported"] == 0
        if "revision" in meta:
            assert meta["revision"]["regenerations"] == 1 and meta["revision"]["draft_unsupported"] >= 1
    finally:
        engram.close()


# --- the bench's judge and follow-ups ----------------------------------------------------------
def test_the_judge_uses_the_ground_truth_and_the_whole_document() -> None:
    accepted, options = ["Corlum Engineering"], ["Corlum Engineering", "Ovaquen Metalworks", "Drujo Joinery"]
    assert not judge("Corlum Engineering won it. The span is 95 metres.", PASSAGE, [QUESTION], accepted,
                     options).hallucinated
    wrong = judge("Ovaquen Metalworks won the contract.", PASSAGE, [QUESTION], accepted, options)
    assert wrong.hallucinated and "wrong option" in wrong.unsupported[0].why
    assert judge("The span is 96 metres.", PASSAGE, [QUESTION], accepted, options).hallucinated
    assert judge("It was opened by Mayor Halvard.", PASSAGE, [QUESTION], accepted, options).hallucinated
    assert _shared(JUDGE, CRITIC) in ([], ["re"])  # its own patterns: nothing taken from the critic


def test_follow_ups_leave_the_subject_to_the_conversation() -> None:
    assert pronoun_form("What's the weight limit on the Selpri Bridge now?", "Selpri Bridge") == \
        "And what's the weight limit on it now?"
    assert pronoun_form("How big is Mirvale's population?", "Mirvale") == "And how big is its population?"
    assert pronoun_form("How long was the Selpri Bridge closure?", "Selpri Bridge") is None
    made = follow_ups([("a", "Who built the Selpri Bridge?"), ("a", "How long is the Selpri Bridge?"),
                       ("b", "Where is Mirvale?")], 5)
    assert [(f.first, f.question) for f in made] == [("Who built the Selpri Bridge?", "And how long is it?")]


def test_the_bench_figures_report_the_rates_and_whether_they_halved() -> None:
    from app.bench.controller import ARMS, Asked, _figures, hallucination_figures

    asked = Asked(kind="document", question=QUESTION, accepted=["Corlum Engineering"], document=PASSAGE,
                  options=["Corlum Engineering", "Ovaquen Metalworks"])
    answers = {"on": ["Ovaquen Metalworks won it.", "Corlum Engineering won it in 2019."],
               "off": ["Ovaquen Metalworks won it.", "Corlum Engineering won it."],
               "drop": [NOTHING_SUPPORTED, "Corlum Engineering won it."],
               "regenerate": ["Corlum Engineering won it.", "Corlum Engineering won it in 2016."]}
    results: dict[str, list] = {name: [] for name in ARMS}
    for name, texts in answers.items():
        for text in texts:
            judged = judge(text, PASSAGE, [QUESTION], asked.accepted, asked.options)
            results[name].append((asked, {"seconds": 1.0, "right": "Corlum" in text, "flagged": False, "torch": False,
                                          "answer": text, "hallucinated": judged.hallucinated,
                                          "why": [u.why for u in judged.unsupported], "revised": name != "on",
                                          "regenerated": name == "regenerate"}))
    figures = hallucination_figures(results)
    assert figures.today == 1.0 and figures.always_all == 0.5 and figures.by_mode == {"drop": 0.0, "regenerate": 0.0}
    assert figures.best == "regenerate" and figures.halved and figures.accuracy["drop"] == 0.5
    assert {e["arm"] for e in figures.examples} == {"today"}
    report = _figures(results, False, 1)
    assert report.by_kind[0].revisions["regenerate"].regenerated == 2
    assert report.by_kind[0].revisions["drop"].hallucination_rate == 0.0
