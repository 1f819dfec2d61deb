"""The critic: rules that catch changed numbers and names, verdicts stored with the answer and
shown under it, the model's judgement under a JSON grammar, and the bench that scores it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.bench.critic import run_critic_bench
from app.bench.critic_set import FABRICATED, FAITHFUL, build
from app.bench.natural import generate
from app.chat.critic import Judgement, ModelJudge, critique, flagged_in, rules_reason
from app.chat.service import sentences_of
from app.cli import cli
from app.cli.chat import Answer
from store.conversations import MessageRow
from tests.helpers import open_engram
from ui.chat_tab import render_answer

ROOT = Path(__file__).resolve().parents[1]
CRITIC = ROOT / "app" / "chat" / "critic.py"
LABELLER = ROOT / "app" / "bench" / "critic_set.py"
PASSAGE = ("Corlum Engineering, which won the contract in 2016, billed the town 82.0 million crowns. "
           "The span is 95 metres long and takes vehicles of up to 33 tonnes. The detour was 27 km. "
           "Torornis Pelsaard, the mayor, reopened the Selpri Bridge on 18 February.")


# --- the rules ---------------------------------------------------------------------------------
def test_a_changed_number_is_flagged() -> None:
    assert rules_reason("Corlum Engineering billed the town 85 million crowns.", PASSAGE)
    assert "33" in rules_reason("It takes vehicles of up to 33 tonnes and opened in 2017.", PASSAGE) or \
        "2017" in rules_reason("It takes vehicles of up to 33 tonnes and opened in 2017.", PASSAGE)
    # a number the sources give, but as another quantity or another day
    assert "t" in rules_reason("Vehicles of up to 27 tonnes may cross.", PASSAGE)
    assert rules_reason("The bridge reopened on 27 February.", PASSAGE)
    # signs, times, dates and versions as written; number words beside a unit
    cold = "It overshot to -5.5 °C at 02:00 and then to 6 °C. Version 0.8.3 shipped; allow four weeks."
    assert rules_reason("It overshot to -6 °C.", cold) and not rules_reason("It fell to -5.5 °C.", cold)
    assert "02:07" in rules_reason("It overshot at 02:07.", cold)
    assert "0.8.2" in rules_reason("Version 0.8.2 shipped.", cold)
    assert "eight weeks" in rules_reason("Allow eight weeks.", cold) and not rules_reason("Allow 4 weeks.", cold)


def test_a_changed_name_is_flagged() -> None:
    assert "Ovaquen" in rules_reason("Ovaquen Metalworks won the contract in 2016.", PASSAGE)
    # two real names recombined are a new name
    assert "Corlum Pelsaard" in rules_reason("Corlum Pelsaard reopened the bridge.", PASSAGE)
    # a real name moved into another fact's context
    assert "another context" in rules_reason("Torornis Pelsaard won the building contract.", PASSAGE)
    assert not rules_reason("Pelsaard, the mayor, reopened the bridge.", PASSAGE)


def test_a_value_swapped_for_another_of_the_same_document_is_flagged() -> None:
    source = "The ferry to Moford leaves 14 times a day from the harbour. The harbour cafe opens 6 days a week."
    reason = rules_reason("The ferry to Moford leaves 6 times a day from the harbour.", source)
    assert reason == "the sources give 14 there, not 6"
    assert rules_reason("The ferry to Moford leaves 14 times a day from the harbour.", source) == ""
    assert rules_reason("The harbour cafe opens 6 days a week.", source) == ""
    # The question's own values and words are not what the sentence claims.
    assert rules_reason("The answer is 6.", source, "Does the cafe open 6 days a week?") == ""


CHANGELOG = ("## Version 2.1.0, released 2024-05-02\n\n- The cache now holds 64 MB.\n\n"
             "## Version 2.0.0, released 2024-01-15\n\n- Start-up is 30% quicker.")


def test_a_value_written_under_another_version_is_flagged() -> None:
    asked = "When did version 2.0.0 come out?"
    assert "for 2.1.0, not 2.0.0" in rules_reason("The answer is 2024-05-02.", CHANGELOG, asked)
    assert "for 2.1.0" in rules_reason("## Version 2.0.0, released 2024-05-02.", CHANGELOG, asked)
    assert not rules_reason("It came out on 2024-01-15.", CHANGELOG, asked)
    # the answer names the version it speaks of; a value under no heading decides nothing
    assert not rules_reason("Version 2.1.0 came out on 2024-05-02.", CHANGELOG, asked)
    assert not rules_reason("The cache holds 64 MB.", "- The cache now holds 64 MB.", "How big is the cache in 2.0.0?")


def test_versions_times_and_dates_in_the_text_flag_no_faithful_answer() -> None:
    """Only a changelog's headings tie a value to a version: a time, a dotted date, a
    dependency's version or an older version named inside the asked entry decide nothing."""
    agenda = "Friday programme\n09:00 Registration\n10:30-12:00 Workshop on grant writing with Ada Holm\n12:00 Lunch"
    assert not rules_reason("Ada Holm runs the workshop on grant writing.", agenda, "What is on at 10:30?")
    dotted = "Version 4.7.0 (15.03.2024)\n- Dark mode, by Ada Holm\n- Export to PDF is 40% faster"
    assert not rules_reason("Export to PDF became 40% faster.", dotted, "What did 4.7.0 add?")
    entries = ("## 4.8.0 (2024-05-02)\n\n- Upgrade urllib3 to 2.2.1\n- Fix the login timeout on Safari\n\n"
               "## 4.7.0 (2024-03-11)\n\n- Fixes the upload bug that 4.6.0 introduced; uploads over 2 GB work again.")
    assert not rules_reason("4.8.0 fixed the login timeout on Safari.", entries, "What did 4.8.0 fix?")
    assert not rules_reason("Uploads over 2 GB work again.", entries, "What does 4.7.0 fix?")
    # a piece of a date the answer writes whole is no value of its own; a heading's context is its section
    kept = "## [2.1.0] - 2024-05-02\n\n### Added\n\n- Offline mode\n\n## [2.0.0] - 2024-01-15\n\n- Sync"
    assert not rules_reason("2.1.0 was released on 2024-05-02 with offline mode.", kept, "When was 2.1.0 released?")


def test_a_name_written_twice_where_the_source_has_two_is_flagged() -> None:
    minutes = "Ada Holm chaired the meeting and Ben Ito took the minutes. The hall is booked."
    reason = rules_reason("Ada Holm chaired the meeting and Ada Holm took the minutes.", minutes)
    assert "Ben Ito there, not Ada Holm again" in reason
    assert not rules_reason("Ada Holm chaired the meeting and Ben Ito took the minutes.", minutes)
    # the first place may be the moved one: the chair's name swapped for one later in the list
    present = "Present: Cy Dunn (chair), Ben Ito, Ada Holm; Eva Lund sent apologies."
    reason = rules_reason("Present: Ada Holm (chair), Ben Ito, Ada Holm; Eva Lund sent apologies.", present)
    assert "Cy Dunn there, not Ada Holm again" in reason
    assert not rules_reason(present, present)
    # a sentence's start is no place of its own: another name starts the source's sentence
    plans = "Ben Ito will book the room and Ada Holm will send the agenda to Cy Dunn."
    assert not rules_reason("Ada Holm will send the agenda, and Cy Dunn will get it from Ada Holm.", plans)
    # an answer joining two sentences, or naming again whom the source calls "her", is faithful
    two = "Ada Holm chaired the meeting, with Ben Ito as secretary. Ada Holm also presented the budget."
    assert not rules_reason("Ada Holm chaired the meeting and Ada Holm presented the budget.", two)
    her = "Hedda Morrow confirmed on Friday that the van will come to her address in Leeds on Saturday."
    assert not rules_reason("Hedda Morrow confirmed it, and the van will come to Hedda Morrow's address.", her)
    assert not rules_reason("Ada Holm met Ada Holm.", "", "Is Ada Holm here?")  # no sources: no crash


def test_a_day_the_sources_write_only_inside_a_year_first_date_is_checked_as_that_date() -> None:
    mail = "Our order was due on May 11. It has been cleared and should reach you by 2021-05-24."
    # "5" is there only as the month of 2021-05-24, which dates nothing May 5
    assert "no source gives the date May 5" in rules_reason("It was due on May 5.", mail)
    # the same date written out is faithful: its month is no unknown name, its day no loose number
    assert not rules_reason("It should reach you by 24 May 2021.", mail)
    assert not rules_reason("It should reach you by May 24, 2021.", mail)
    assert "June" in rules_reason("It should reach you by 24 June 2021.", mail)
    # a day-first date is a date too; a time's minutes, "may" the verb, and a person called April are no days
    assert not rules_reason("The invoice is dated 24 May 2021.", "Invoice 2291. Date: 24-05-2021. Pay by card.")
    assert not rules_reason("Orders placed after 16:30 may ship the next day.",
                            "Orders placed after 16:30 may ship the next day.")
    assert not rules_reason("At 18:20 April Moss got the keys.", "The keys were handed to April Moss at 18:20.")
    # a month known only from a date in digits does not date a count of something else
    assert "May 5" in rules_reason("It shipped on May 5.", "Shipped 2021-05-24 in 5 boxes.")
    # a list's step "3." dates nothing
    minutes = "Held on 15 February 2016.\n1. Fees.\n3. Roof quotes came in."
    assert "February 3" in rules_reason("It was held on 3 February 2016.", minutes)
    assert not rules_reason("It was held on 15 February 2016.", minutes)
    for answer in ("The fair is on March 21.", "The fair is on March 22."):
        assert not rules_reason(answer, "The fair runs on 21 and 22 March."), answer
    assert not rules_reason("The fair is on March 21.", "The fair is on the 21st of March.")
    # an ISO timestamp's date is a date (its "T" was read as a unit of the day: "24 t")
    stamp = "The post went up at 2021-05-24T10:00Z."
    assert not rules_reason("It was published on May 24, 2021.", stamp)
    assert not rules_reason("It went up at 2021-05-24T10:00Z.", stamp)
    assert "23" in rules_reason("It was published on May 23, 2021.", stamp)


def test_a_copied_sentence_with_its_colour_changed_is_flagged() -> None:
    manual = ("Charge the battery for at least 5 hours; the status light turns amber when charging is complete. "
              "Light flashes orange: the front cover is not seated properly. Never use the grey cable outdoors.")
    assert "amber there, not blue" in rules_reason("The status light turns blue when charging is complete.", manual)
    # any other word changed may be a synonym, a spelling or a contraction of a faithful answer
    for faithful in ("The status light becomes amber when charging is complete.",
                     "Light flashes orange: the front lid is not seated properly.",
                     "Never use the gray cable outdoors.", "The status light turns amber when charging is done."):
        assert not rules_reason(faithful, manual), faithful


def test_an_address_or_handle_the_sources_do_not_write_is_flagged() -> None:
    notes = "Write to ada.holm@example.org or ping @ada_h. Fixed the import crash (reported by @kisa51)."
    assert "@kisa52 is in no source" in rules_reason("It was reported by @kisa52.", notes)
    assert "kisa15 is in no source" in rules_reason("The answer is kisa15.", notes)
    assert "ada.holm@example.com is in no source" in rules_reason("Write to ada.holm@example.com.", notes)
    for faithful in ("It was reported by @kisa51.", "The answer is kisa51.", "Write to ada.holm@example.org."):
        assert not rules_reason(faithful, notes)
    # the same code with its separators taken out, or a handle written with "@", is the sources'
    spec = "Files are saved as UTF-8 and need Python 3; ask Marta (marta_s) on the forum."
    for faithful in ("Files are utf8.", "It needs python3.", "Ask @marta_s on the forum."):
        assert not rules_reason(faithful, spec), faithful
    # a word shortened before its number is the sources' ("win11" for "Windows 11"); another number is not
    assert not rules_reason("It needs win11.", "It runs on Windows 11 only.")
    assert "win10 is in no source" in rules_reason("It needs win10.", "It runs on Windows 11 only.")


def test_a_number_the_sources_count_other_things_with_is_flagged() -> None:
    recipe = "1. Mix 2 tsp ginger with the flour.\n2. Bake it.\nThe biscuits keep for 3 days."
    assert "only as tsp" in rules_reason("They keep for 2 months.", recipe)
    # a step's place in a list is no quantity; "3 days" is
    assert "only as day" in rules_reason("They keep for 3 years.", recipe)
    assert not rules_reason("They keep for 3 days.", recipe)
    # a number counting nothing named ("against 9 before") may be anything
    assert not rules_reason("It took 9 tonnes.", "It takes 18 tonnes now, against 9 before the closure.")
    assert "only as min" in rules_reason("Press it for 4 seconds.", "Wait 4 minutes, then press the key.")


def test_a_quantity_the_sources_write_only_as_a_time_date_or_step_number_is_flagged() -> None:
    manual = "1. Charge it for 3 hours.\n2. Press the key.\n3. Wait.\n4. Done.\nThe 10:20 bus stops here on 2024-05-08."
    assert "only in a time, date or step number" in rules_reason("Charge it for 4 hours.", manual)
    assert "only in a time, date or step number" in rules_reason("The walk took 10 minutes.", manual)
    assert "only in a time, date or step number" in rules_reason("The discount is 8%.", manual)
    assert not rules_reason("Charge it for 3 hours.", manual)
    assert not rules_reason("The bus comes at 10:20.", manual)
    assert not rules_reason("The bus stops here on May 8.", manual)  # a date's day, with its month
    # a duration's pieces are its hours and minutes, or minutes and seconds; a clock time's are none
    assert not rules_reason("The flight takes 1 hour and 45 minutes.", "Flight time: 1:45.")
    assert "only in a time" in rules_reason("The flight takes 45 hours.", "Flight time: 1:45.")
    assert not rules_reason("Cook the eggs for 6 minutes and 30 seconds.", "Boil, then cook for 6:30.")
    assert not rules_reason("Heat it for 2 minutes 30 seconds to 3 minutes.", "Heat on high for 2:30 to 3:00.")
    assert "only in a time" in rules_reason("The break lasts 30 minutes.", "Coffee break at 10:30, then talks.")
    # number words are quantities; the answer's own times and dates are none of its quantities
    assert not rules_reason("Step 2 takes 2 hours.", "1. Mix.\n2. Let it rise for two hours.")
    dough = "Pizza dough\n1. Dissolve the yeast in warm water.\n2. Let the dough rise for an hour.\n3. Bake."
    assert not rules_reason("Let the dough rise for 1 hour.", dough)
    assert not rules_reason("The welcome dinner is at 19:30 on day 1.", "Day 1: welcome dinner at 19:30.")
    assert not rules_reason("The crossing takes 1:30 hours.", "Crossing time: 1:30.")
    assert not rules_reason("The meeting is on June 15 this year.", "The meeting is held on 2024-06-15.")


def test_a_numbered_list_s_items_are_sentences_without_their_numbers() -> None:
    # "1. Mix." was split into "1." and "Mix.", so the number stood in a context of its own
    assert sentences_of("Pizza:\n1. Mix.\n2. Let the dough rise\nfor an hour.\n3. Bake. Enjoy.") == [
        "Pizza:", "Mix.", "Let the dough rise for an hour.", "Bake.", "Enjoy."]
    # a line that starts with a number ending the sentence above is no item
    assert sentences_of("The fee was\n5. Then we left.") == ["The fee was 5.", "Then we left."]
    assert not rules_reason("Let the dough rise for 1 hour.", "1. Mix.\n2. Let the dough rise for an hour.")


def test_words_between_a_number_and_its_unit_and_short_units_are_read() -> None:
    for answer, source in [("Refunds take up to 5 days.", "Refunds are paid within 5 working days."),
                           ("Bake it for another 10 minutes.", "Bake for 10 further minutes."),
                           ("Sales rose 20% last year.", "Sales rose 20 per cent last year."),
                           ("Charge it for 2 hours first.", "Charge the drill for 2 hr before first use."),
                           ("The warranty lasts 3 years.", "Warranty: 3 yrs parts and labour."),
                           ("Preheat the oven to 180 °C.", "Preheat the oven to 180 degrees."),
                           ("He moved to Oslo when he was 30 years old.", "He moved to Oslo in his 30s."),
                           ("The warranty is 2 years.", "Warranty (years): 2\nweight 1.2 kg")]:
        assert not rules_reason(answer, source), (answer, rules_reason(answer, source))


def test_the_pronoun_i_and_its_contractions_are_no_names() -> None:
    from app.chat.critic import names_in

    assert names_in("Sorry, I'm not sure what I’d say, and I've no source.", PASSAGE) == []
    assert critique("Sorry, I'm not sure. I'll look again.", [PASSAGE]).unsupported == 0


def test_a_function_word_starting_a_quote_or_after_a_colon_is_no_name() -> None:
    """'You said: "Your locker code is 4471."' was flagged for the name "Your", and with
    regenerate on by default a right answer was revised away; a name in the same place still counts."""
    from app.chat.critic import names_in

    said = "Please note: my locker code is 4471."
    assert names_in('You said: "Your locker code is 4471."', said) == []
    assert names_in("The user said: The locker code is 4471 (Your note).", said) == []
    assert critique('You said: "Your locker code is 4471."', [said]).unsupported == 0
    assert names_in("He said: Parsec is the cat.", said) == ["Parsec"]
    assert names_in('She wrote: "Corlum Engineering built it."', said) == ["Corlum Engineering"]


def test_a_faithful_paraphrase_passes() -> None:
    answer = ("The contract went to Corlum Engineering in 2016 [1], and it billed about 82 million crowns. "
              "According to the mayor, Pelsaard, vehicles up to 33 t may now cross the 95-metre span. "
              "Drivers took a 27 kilometre detour. It reopened on February 18.")
    report = critique(answer, [PASSAGE], "Who built the Selpri Bridge?")
    assert report.mode == "rules" and len(report.sentences) == 4
    assert report.unsupported == 0, [v.reason for v in report.flagged]
    # numbers with thousands separators, and the question itself, count as sources
    assert not rules_reason("It holds 1200 people.", "The hall holds 1,200 people.")
    assert not rules_reason("Mirvale lies 26 km away.", "It lies 26 km away.", "How far away is Mirvale?")


def test_off_and_no_sources_check_nothing() -> None:
    assert critique("It cost 5 crowns.", [PASSAGE], mode="off").sentences == []
    unchecked = critique("It cost 5 crowns.", [], mode="rules")
    assert unchecked.sentences == [] and "no sources" in unchecked.note
    with pytest.raises(ValueError):
        critique("It cost 5 crowns.", [PASSAGE], mode="model")


# --- stored and shown --------------------------------------------------------------------------
def _answer_row(text: str, meta: dict) -> MessageRow:
    return MessageRow(id=7, conversation_id=3, role="assistant", content=text, citations=[], meta=meta,
                      created_at="2026-01-01T00:00:00")


def test_verdicts_are_shown_in_the_chat_and_in_engram_ask() -> None:
    text = "Corlum Engineering won the contract in 2016. Ovaquen Metalworks billed the town."
    report = critique(text, [PASSAGE])
    meta = {"critic": report.model_dump(), "unsupported": report.unsupported}
    assert report.unsupported == 1 and flagged_in(meta)[0].sentence.startswith("Ovaquen")
    html = render_answer(text, [], meta)
    assert "1 sentence not supported by your documents" in html
    underlined = re.search(r"<span class='engram-unsupported' title=\"([^\"]+)\">([^<]+)</span>", html)
    assert underlined and underlined.group(2).startswith("Ovaquen")
    assert underlined.group(1).startswith("no source says this: ") and "Ovaquen" in underlined.group(1)
    assert "Corlum Engineering won" in html and html.count("engram-unsupported'") == 1
    clean = render_answer("Corlum Engineering won the contract in 2016.", [],
                          {"critic": critique("Corlum Engineering won the contract in 2016.", [PASSAGE]).model_dump()})
    assert "not supported" not in clean and "engram-unsupported" not in clean
    answer = Answer.of("Who?", _answer_row(text, meta))
    assert answer.unsupported == [{"sentence": report.flagged[0].sentence, "reason": report.flagged[0].reason}]


@pytest.mark.slow
def test_verdicts_are_stored_with_the_answer(tmp_path: Path, embedder, llama) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bridge.txt").write_text(PASSAGE)
    engram = open_engram(embedder, answer_max_tokens=40, temperature=0, critic_regenerate="off")
    try:
        engram.runtime.adopt(llama)
        engram.ingest([docs])
        engram.run_pending()
        done = engram.chat.answer("Which company won the Selpri Bridge contract?")
        critic = done.message.meta["critic"]
        assert critic["mode"] == "rules"
        assert [v["sentence"] for v in critic["sentences"]] == sentences_of(done.message.content)
        assert done.message.meta["unsupported"] == sum(not v["supported"] for v in critic["sentences"])
        reopened = engram.conversations.messages(done.message.conversation_id)[-1]
        assert reopened.meta["critic"] == critic
        engram.settings = engram.settings.model_copy(update={"critic": "off"})
        engram.chat.settings = engram.settings
        assert "critic" not in engram.chat.answer("Who reopened the bridge?").message.meta
    finally:
        engram.close()


@pytest.mark.slow
def test_the_model_judges_under_its_json_grammar(llama) -> None:
    judged = ModelJudge(llama).judge("The span is 95 metres long.", [PASSAGE], "")
    assert isinstance(judged, Judgement) and len(judged.reason) <= 80
    report = critique("Ovaquen Metalworks won it. The span is 95 metres long and takes heavy vehicles.",
                      [PASSAGE], mode="model", judge=ModelJudge(llama))
    assert report.sentences[0].by == "rules" and not report.sentences[0].supported
    assert report.mode == "model" and len(report.sentences) == 2


# --- the bench ---------------------------------------------------------------------------------
def test_the_labelled_set_has_both_kinds_and_true_labels() -> None:
    natural = generate("tiny", 0)
    labelled = build(natural, 0)
    kinds = {a.how for a in labelled.answers}
    assert kinds == set(FAITHFUL) | set(FABRICATED)
    by_question: dict[str, list] = {}
    for a in labelled.answers:
        by_question.setdefault(a.question, []).append(a)
    for question, items in by_question.items():
        taken = next(a for a in items if a.how == "taken")
        q = next(q for q in natural.questions if q.question == question)
        assert q.answer in taken.sentence and not taken.fabricated
        for a in items:
            if a.how == "swapped":
                assert a.fabricated and q.answer not in a.sentence and a.sentence != taken.sentence


def test_bench_runs_on_a_tiny_set_and_writes_the_issue_json(tmp_path: Path) -> None:
    report = run_critic_bench(open_engram().settings, size="tiny", model=False, handwritten=False,
                              echo=lambda _: None)
    rules = report.critic.natural.rules
    assert rules.items > 100 and 0 < rules.fabricated < rules.items
    assert report.critic.precision == rules.precision and rules.precision >= 0.8 and rules.recall >= 0.8
    out = tmp_path / "hmst.json"
    result = CliRunner().invoke(cli, ["bench", "hmst", "--size", "tiny", "--no-model", "--no-handwritten",
                                      "--no-controller", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["critic"]) >= {"precision", "recall"} and data["controller"] is None
    assert "precision" in result.output


# --- independence of the labelled set ----------------------------------------------------------
def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def _literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Module) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs}


def _runs(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _shared(labeller: Path, critic: Path) -> list[str]:
    """What ``labeller`` takes from ``critic``: an import of the critic or of the chat, the re
    module (the critic's rules are patterns), or a 3-word run of its string literals."""
    found = [name for name in _imports(labeller) if name.startswith("app.chat") or name == "re"]
    theirs = {r for lit in _literals(critic) for r in _runs(lit)}
    found += [" ".join(r) for lit in _literals(labeller) for r in _runs(lit) if r in theirs]
    return found


def test_the_labelled_set_shares_nothing_with_the_critic(tmp_path: Path) -> None:
    assert _shared(LABELLER, CRITIC) == []
    assert not {n for n in _imports(CRITIC) if n.startswith("app.bench")}
    copy = tmp_path / "copy.py"
    copy.write_text("import re\nfrom app.chat.critic import plain\nWHY = 'is in no source'\n", encoding="utf-8")
    assert len(_shared(copy, CRITIC)) >= 3  # the check would catch a labeller that borrowed


@pytest.mark.browser
@pytest.mark.slow
def test_a_reopened_conversation_underlines_the_unsupported_sentence(page, embedder, llama) -> None:
    from playwright.sync_api import expect

    from tests.browser import App, shot

    app = App(embedder, llama)
    try:
        text = "Corlum Engineering won the contract in 2016. Ovaquen Metalworks billed the town."
        report = critique(text, [PASSAGE], "Who won the contract?")
        store = app.engram.conversations
        conversation = store.create("Who won the contract?").id
        store.add_question(conversation, "Who won the contract?")
        store.add_answer(conversation, text, [], {"critic": report.model_dump(), "unsupported": report.unsupported})
        page.goto(app.url)
        page.locator("#engram-conversations label").first.click()
        flagged = page.locator("#engram-chat .engram-unsupported")
        expect(flagged).to_have_count(1, timeout=30_000)
        expect(flagged).to_contain_text("Ovaquen Metalworks billed the town.")
        assert flagged.get_attribute("title").startswith("no source says this: the name 'Ovaquen'")
        assert "wavy" in flagged.evaluate("e => getComputedStyle(e).textDecorationStyle")
        expect(page.locator("#engram-chat .engram-unsupported-note")).to_contain_text(
            "1 sentence not supported by your documents")
        shot(page, "ui-chat-critic.png")
    finally:
        app.close()
