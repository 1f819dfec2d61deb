"""Learning material from real prose (engines/ttt/facts.py): every fact of a sentence, references
resolved, tables and key-value lines read, each fact asked and restated several ways.

The documents here are written for these tests, about invented people and places."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from engines.base import DocumentInput
from engines.ttt import facts, prose_units
from engines.ttt.config import TTTConfig
from engines.ttt.material import document_material
from engines.ttt.rehearsal import QA

BAKERY = """# Orla Fenwick

Orla Fenwick grew up in Kessany, a fishing village in the far north. She moved to Brindlow in 1998
and opened a bakery there. Her sourdough won the Amberly Prize in 2004, and she later sold the
bakery to Piet Harrow for £82,000.

Piet Harrow kept the recipes. He renamed the shop Harrow Loaves on 3 June 2011.
"""

PRESS = """# Marlow Press

Marlow Press is a small publisher in Velmora, a harbour town on the Arden coast. Ada Quill founded
it on 12 March 1931. She ran the company until 1968, when it moved to Dunmere. The town has about
4,200 inhabitants.

## Staff

| Name | Role | Joined |
|------|------|--------|
| Ada Quill | Editor | 1931 |
| Bram Otley | Printer | 1934 |

## Facts

- Head office: 14 Quay Street
- Employees: 23 people

The shop sells:
- maps of the coast
- 300 g jars of plum jam
"""


def _texts(text: str) -> list[str]:
    return [s.text for s in facts.statements(text)]


def _answers(text: str) -> dict[str, set[str]]:
    """question -> answers, over every pair of the document."""
    found: dict[str, set[str]] = {}
    for qa in facts.rehearse(text)[0]:
        found.setdefault(qa.question, set()).add(qa.answer)
    return found


def test_pronouns_become_the_last_named_person_of_their_gender() -> None:
    texts = _texts(BAKERY)
    assert "Orla Fenwick moved to Brindlow in 1998 and opened a bakery there." in texts
    assert any(t.startswith("Orla Fenwick's sourdough won the Amberly Prize in 2004, and Orla Fenwick later sold")
               for t in texts)
    assert "Piet Harrow renamed the shop Harrow Loaves on 3 June 2011." in texts  # "He": the man, not Orla


def test_it_and_definite_descriptions_point_at_things_not_people() -> None:
    texts = _texts(PRESS)
    assert "Ada Quill founded Marlow Press on 12 March 1931." in texts  # "it": the press, not Ada Quill
    assert "Ada Quill ran Marlow Press until 1968, when Marlow Press moved to Dunmere." in texts
    assert "Velmora has about 4,200 inhabitants." in texts  # "the town": Velmora was called a town


def test_a_question_opening_with_an_auxiliary_names_nothing() -> None:
    """An email's "Can you chase it, please?" once made "Can" an entity: "it" became "Can", and
    the pairs taught "Can you chase Can, please?"."""
    mail = ("# Tile order\n\nOur order of 40 slate tiles from Hollin Quarry is late. Can you chase it, please? "
            "Could you also ask Hollin Quarry for the invoice? Did Tamsin Vey sign for the first crate?\n")
    resolver = facts.Resolver(mail, "Tile order")
    for sentence in ("Can you chase it, please?", "Could you also ask Hollin Quarry for the invoice?",
                     "Did Tamsin Vey sign for the first crate?"):
        assert all(name.split()[0] not in {"Can", "Could", "Did"} for _, _, name in resolver.names(sentence))
    pairs = facts.rehearse(mail)[0]
    assert not any("Can" in qa.answer.split() or "chase Can" in qa.question for qa in pairs)
    # Mid-sentence the same word may open a name.
    assert [n for _, _, n in resolver.names("Last week we met Can Yaman in Hollin.")] == ["Can Yaman", "Hollin"]


COMMITTEE = """# Notes, Harbourside Rowing Club committee

**Date:** 2019-05-14
**Venue:** back room, Ostrel

1. **Boat repairs.** The new hull cost 3,400 crowns, Vella Marsh reported. Work on it ends in June.

**Actions**

- Vella: order two oars from Brannock Supplies.
"""


def test_minutes_actions_labels_and_the_title_are_read_as_a_person_would() -> None:
    """Minutes once taught "The vella of Notes, Harbourside ... is order two oars" (a person's
    action line read as a field), "What repairs. The new hull ...?" (an item's bold label read as
    its first words) and "The date of what, Harbourside ...?" (a word of the title asked)."""
    texts = _texts(COMMITTEE)
    assert "Vella Marsh: order two oars from Brannock Supplies." in texts  # her action, by her full name
    assert "The venue of Notes, Harbourside Rowing Club committee is back room, Ostrel." in texts  # a field
    assert "The new hull cost 3,400 crowns, Vella Marsh reported." in texts  # the label is not a word of it
    assert not any("Boat repairs." in t for t in texts)
    asked = _answers(COMMITTEE)
    assert "Vella Marsh" in asked["Who: order two oars from Brannock Supplies?"]
    assert "3,400 crowns" in asked["The new hull cost how many crowns, Vella Marsh reported?"]
    answers = {a for found in asked.values() for a in found}
    assert not answers & {"Notes", "Harbourside Rowing Club", "Boat"}  # only the unit's own facts are asked
    assert "2019-05-14" in answers and "back room, Ostrel" in answers


def test_a_one_word_name_that_only_opens_sentences_is_still_a_name_and_an_imperative_is_not() -> None:
    texts = _texts("# Trip\n\nOrne is a small town in the hills. Orne has 3,000 people. It lies on the river.\n\n"
                   "1. Spread the dough in a tin. Bake for 40 minutes.\n")
    assert texts[:3] == ["Orne is a small town in the hills.", "Orne has 3,000 people.", "Orne lies on the river."]
    assert "Trip: spread the dough in a tin." in texts and "Trip: bake for 40 minutes." in texts


def test_bold_keys_with_values_stay_key_value_lines_and_a_title_is_not_asked_through_clauses() -> None:
    shop = "# Shop\n\n- **Price:** £40\n- **Owner:** Vella Marsh\n- **Note:** the office is closed on Fridays.\n"
    texts = _texts(shop)
    assert "The price of Shop is £40." in texts and "The owner of Shop is Vella Marsh." in texts
    found = facts.rehearse("# Notes, Harbourside Rowing Club 2024\n\n"
                           "The van, which costs £300, arrives at 9:00; the crew loads it by noon.\n")[0]
    assert {"£300", "9:00"} <= {qa.answer for qa in found}
    assert not {qa.answer for qa in found} & {"2024", "Harbourside Rowing Club", "Notes"}


def test_an_item_of_only_punctuation_is_skipped_not_a_crash() -> None:
    """"- ..." in a list (a placeholder in notes) made the material fail with an IndexError, so
    the whole document was never learned."""
    assert _texts("# Notes\n\n- ...\n- ;\n- Vella Marsh paid £40.\n") == ["Vella Marsh paid £40."]


def test_may_ends_a_sentence_and_a_person_with_an_apostrophe_is_not_it() -> None:
    assert prose_units.split_sentences("We leave on 3 May. Dunka hires a van.") == \
        ["We leave on 3 May.", "Dunka hires a van."]
    texts = _texts("# Shop\n\nThe shop hired Sean O'Brien in May. It sells bread.\n")
    assert not any("O'Brien sells" in t for t in texts), texts


def test_it_after_a_table_is_the_product_not_the_last_row_nor_its_maker() -> None:
    """A manual once taught "register Rinsel Systems" and "you will need Battery": a model name
    with digits was taken for a person (so "it" skipped it) and the table's last row stood for "it"."""
    manual = ("# Using the Tarrow K9\n\nThe Tarrow K9 is a field radio made by Olden Works.\n\n"
              "| Part | Weight |\n|---|---|\n| Antenna | 120 g |\n| Battery | 300 g |\n\n"
              "Charge it for 3 hours before first use.\n")
    assert "Charge Tarrow K9 for 3 hours before first use." in _texts(manual)
    assert not any(q.startswith("Who ") and a == "Tarrow K9" for q, found in _answers(manual).items() for a in found)


def test_a_span_asked_in_place_keeps_the_space_after_it_and_no_clause_word_is_a_unit() -> None:
    """"Took the what timetrain to Ornheim?" and the answer "6769 unless" were once taught."""
    asked = _answers("# Day out\n\nTook the 09:10 train to Ornheim with Pelkaen Lokiard. "
                     "The web view listens on port 6769 unless told otherwise.\n")
    assert "09:10" in asked["Took the what time train to Ornheim with Pelkaen Lokiard?"]
    assert "6769" in asked["Day out: the web view listens on port what number unless told otherwise?"]


def test_a_sentence_gives_every_fact_not_only_its_last_span() -> None:
    sentence = next(s for s in facts.statements(BAKERY) if "Amberly Prize" in s.text)
    answers = {span.answer for span in sentence.spans}
    assert {"2004", "£82,000", "Amberly Prize", "Piet Harrow"} <= answers
    asked = _answers(BAKERY)
    mid = [q for q, a in asked.items() if "2004" in a]
    assert mid and all("what year" in q for q in mid)
    assert any("Piet Harrow" in q for q in mid)  # asked mid-sentence
    assert "Orla Fenwick's sourdough won the Amberly Prize in what year?" in mid  # and in its own clause


def test_answers_in_the_middle_of_a_sentence_get_a_fitting_wh_phrase() -> None:
    asked = _answers(BAKERY)
    assert asked["Orla Fenwick moved to Brindlow in what year and opened a bakery there?"] >= {"1998"}
    assert asked["Who grew up in Kessany, a fishing village in the far north?"] >= {"Orla Fenwick"}
    assert "Kessany" in asked["Orla Fenwick grew up where, a fishing village in the far north?"]
    assert asked["Piet Harrow renamed the shop Harrow Loaves on what date?"] >= {"3 June 2011"}


def test_every_question_is_also_answered_by_its_whole_statement() -> None:
    asked = _answers(BAKERY)
    question = "Piet Harrow renamed the shop Harrow Loaves on what date?"
    assert "Piet Harrow renamed the shop Harrow Loaves on 3 June 2011." in asked[question]


def test_table_rows_become_statements_worded_with_their_header() -> None:
    texts = _texts(PRESS)
    assert "The role of Ada Quill is Editor." in texts
    assert "The joined of Bram Otley is 1934." in texts
    asked = _answers(PRESS)
    assert asked["What is the role of Bram Otley?"] == {"Printer"}
    assert "Bram Otley" in asked["The role of who is Printer?"]  # the row's name asked back


def test_key_value_lines_and_lists_are_about_the_document_subject() -> None:
    texts = _texts(PRESS)
    assert "The head office of Marlow Press is 14 Quay Street." in texts
    assert "The employees of Marlow Press is 23 people." in texts
    assert "Marlow Press: the shop sells: 300 g jars of plum jam." in texts
    asked = _answers(PRESS)
    assert asked["What is the head office of Marlow Press?"] == {"14 Quay Street"}
    assert "23 people" in asked["The employees of Marlow Press is how many people?"]


def test_units_dates_money_and_titles_are_spans() -> None:
    text = ('Lio Banner paid $1,250 for "The Glass Orchard" on 4 July 1987. The kiln reaches 1,280 °C. '
            'The tank holds 40 litres, or 12% of the total, and the ferry leaves at 9:45.')
    found = {(span.answer, span.wh) for s in facts.statements(text) for span in s.spans}
    assert {("$1,250", "how much"), ("The Glass Orchard", "what title"), ("4 July 1987", "what date"),
            ("1,280 °C", "what temperature"), ("40 litres", "how many litres"),
            ("12%", "what percentage"), ("9:45", "what time")} <= found


def test_abbreviations_and_decimals_do_not_end_sentences() -> None:
    assert prose_units.split_sentences("Dr. Mina Volk weighed 3.5 kg at birth. She is a vet.") == \
        ["Dr. Mina Volk weighed 3.5 kg at birth.", "She is a vet."]


def test_reordered_statements_and_entity_passages() -> None:
    pairs, passages = facts.rehearse(BAKERY)
    assert "On 3 June 2011, Piet Harrow renamed the shop Harrow Loaves." in passages
    about = next(p for p in passages if p.startswith("About Piet Harrow: "))
    assert "Piet Harrow kept the recipes." in about and "for £82,000" in about
    assert any(p.startswith("Piet Harrow and Harrow Loaves are connected: ") for p in passages)
    assert pairs and len(pairs) <= facts.MAX_PAIRS


def test_deterministic_fast_and_quiet_on_empty_text() -> None:
    started = time.perf_counter()
    first = facts.rehearse(PRESS * 20)
    assert time.perf_counter() - started < 2.0
    assert facts.rehearse(PRESS * 20) == first
    assert facts.rehearse("") == ([], [])
    assert facts.rehearse("# Only a title\n") == ([], [])


class _Letters:
    """A tokenizer of one id per character, with a plain chat template: enough to build material."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = False) -> str:
        turns = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return turns + ("<assistant>" if add_generation_prompt else "")


def _material(source: str, **overrides: Any):
    cortex = SimpleNamespace(tokenizer=_Letters())
    document = DocumentInput(document_id=1, path="orla.md", chunks=[BAKERY])
    config = TTTConfig(rehearsal_source=source, **overrides)  # type: ignore[arg-type]
    return document_material(cortex, document, config, generator=lambda: None)  # type: ignore[arg-type]


def test_the_engine_trains_on_the_facts_when_told_to() -> None:
    new, old = _material("facts"), _material("extract")
    assert QA("Piet Harrow renamed the shop Harrow Loaves on what date?", "3 June 2011") in new.pairs
    assert len(new.pairs) > 2 * len(old.pairs)
    kinds = Counter(p.kind for p in new.pieces)
    assert kinds["qa"] == len(new.pairs) and kinds["paraphrase"] > 0  # the restated passages train too
    assert Counter(p.kind for p in old.pieces)["paraphrase"] == 0  # extract, the old default, is unchanged
    assert set(Counter(p.kind for p in _material("facts", rehearsal_qa=False).pieces)) == {"document"}


def test_long_sentences_are_also_learned_as_the_short_clauses_questions_use() -> None:
    text = ("# Mirvale\n\nLying 26 km north-east of Cordelvale, Mirvale is a lakeside town. Its best-known "
            "employer is Dundru Electric, which has made survey tripods there since 1945. The company "
            "employs about 383 people, although many of them commute from Lummere.\n")
    asked = _answers(text)
    assert asked["Dundru Electric has made survey tripods there since what year?"] >= {"1945"}
    assert asked["What is Mirvale's best-known employer?"] >= {"Dundru Electric"}  # "it" is the subject
    assert asked["Mirvale is lying how many km north-east of Cordelvale?"] >= {"26 km"}
    assert asked["How many people does Dundru Electric employ?"] >= {"383 people"}  # "the company"
    assert "Lying" not in {a for answers in asked.values() for a in answers}  # a participle, not a name


def test_do_questions_move_a_regular_verb_behind_its_auxiliary() -> None:
    span = facts.Span(answer="383 people", start=30, end=40, wh="how many people")
    assert facts.do_question("Dundru Electric employs about 383 people.", span) == \
        "How many people does Dundru Electric employ?"
    moved = facts.Span(answer="1998", start=25, end=29, wh="what year")
    assert facts.do_question("Orla Fenwick moved to Brindlow in 1998.", moved) is None  # not after the verb
    assert facts._base_form("created") == ("did", "create")
    assert facts._base_form("carries") == ("does", "carry")
    assert facts._base_form("was") is None


def test_a_bold_label_that_names_nothing_stays_with_its_item() -> None:
    """"**Office move.** We leave on 3 May." once became "Plans: we leave on 3 May.": the label,
    the only words saying what leaves, was dropped."""
    texts = _texts("# Plans\n\n- **Office move.** We leave on 3 May and the new office opens on 10 May.\n"
                   "- **Hiring.** Two engineers start in June.\n")
    assert "Plans, office move: we leave on 3 May and the new office opens on 10 May." in texts
    assert "Plans, hiring: two engineers start in June." in texts


def test_a_first_name_seen_only_in_the_attendance_line_still_owns_its_action() -> None:
    """"Orla: order the compost" once read as a field ("The orla of Minutes ... is order the
    compost"), because "Orla" was written only in "Present: Orla Benn, ..." and at line starts;
    the attendance line itself was read as a heading and dropped."""
    minutes = ("# Minutes of the garden committee\n\nPresent: Orla Benn, Tamsin Roe, Kofi\n\n"
               "Actions:\nOrla: order the compost by Friday.\nKofi: repair the gate.\n")
    texts = _texts(minutes)
    assert "Orla: order the compost by Friday." in texts and "Kofi: repair the gate." in texts
    assert any("Orla Benn, Tamsin Roe, Kofi" in t for t in texts)
    assert not any(t.lower().startswith("the orla") for t in texts)


def test_it_after_a_sentence_about_a_common_noun_is_that_thing_not_the_last_name() -> None:
    texts = _texts("# Delivery report\n\nOrla Benn sent the order from Mirvale. The pallet left our warehouse "
                   "on Tuesday. It was stopped at the border for two days.\n\n## Orne Hall\n\n"
                   "The architect designed Orne Hall in 1890. It has 40 rooms.\n")
    assert any("the pallet was stopped at the border for two days." in t for t in texts), texts
    assert not any("Mirvale was stopped" in t for t in texts)
    assert "Orne Hall has 40 rooms." in texts  # a sentence that names a thing keeps "It" for it


def test_a_specification_table_is_about_the_product_not_the_guide_title() -> None:
    """A two-column "Specification | Value" table once taught "The value of Weight is 200 g."."""
    manual = ("# Getting started with the Vikki T76\n\nThank you for choosing the Vikki T76, a GPS unit "
              "from Rinsel Systems. Keep it dry.\n\n| Specification | Value |\n|---|---|\n| Weight | 200 g |\n"
              "| Map storage | 2,176 MB |\n")
    texts = _texts(manual)
    assert "The weight of Vikki T76 is 200 g." in texts and "The map storage of Vikki T76 is 2,176 MB." in texts
    assert "Keep Vikki T76 dry." in texts  # "Thank" of "Thank you" is no name for "it"
    assert "200 g" in _answers(manual)["How many g is the weight of Vikki T76?"]
    priced = _texts("# Shop\n\n| Item | Price |\n|---|---|\n| Rye loaf | £4 |\n")
    assert "The price of Rye loaf is £4." in priced  # a list of named things keeps its rows


def test_days_weekdays_months_and_counted_words_are_spans_and_a_dateline_is_no_name() -> None:
    text = ("Selka Tovin left Orne on Tuesday, 3 May, and came back in June after two weeks "
            "at sea. On 5 September 2017 Moorn Works opened a mill.")
    found = {(span.answer, span.wh) for s in facts.statements(text) for span in s.spans}
    assert {("Tuesday", "what day"), ("3 May", "what date"), ("June", "what month"),
            ("two weeks", "how many weeks"), ("5 September 2017", "what date"), ("Moorn Works", "what")} <= found
    assert not any("2017 Moorn" in a for a, _ in found)


def test_a_list_lead_in_is_no_name_and_a_version_heading_says_which_release() -> None:
    """"Ingredients: 250 g flour." once named "Ingredients" (so nothing said whose flour), and a
    changelog's entries lost the version they were under."""
    recipe = _texts("# Brannock plum cake\n\nIngredients:\n- 250 g flour\n- 3 eggs\n")
    assert "Brannock plum cake: ingredients: 250 g flour." in recipe
    log = "# Tessel changelog\n\n## 2.4.0 (2023-05-02)\n\n- Added a --dry-run flag to the sync command.\n"
    assert "Tessel changelog, 2.4.0 (2023-05-02): added a --dry-run flag to the sync command." in _texts(log)
    assert "--dry-run" in {a for found in _answers(log).values() for a in found}
    kept = _texts("# Minutes\n\nPresent: Orla Benn, Kofi\n\nOrla: order the compost.\n")
    assert "Orla: order the compost." in kept  # a person's action keeps its name
    volume = {(span.answer, span.wh)
              for s in facts.statements("The Ranby van holds 12 cubic metres.") for span in s.spans}
    assert ("12 cubic metres", "how many cubic metres") in volume


def test_an_email_is_read_as_messages_not_as_headings_and_runs_of_names() -> None:
    """An email thread once taught "Drudelen Drudelen Delez will ring ...": the sender's address
    wrote "drudelen" in lower case, so the first name read as an ordinary word; the name and the
    company under a sign-off ran into one name, and a sign-off before "---" read as a heading."""
    thread = ("# Order 58\n\nFrom: Drudelen Delez <drudelen.delez@tamshi.com>\n\nHi Corgalis,\n\n"
              "The van is booked for Saturday at 8:30.\n\nAll the best,\nDrudelen Delez\nTamshi Joinery\n\n---\n\n"
              "An update from Jonas Ebbe: the report is due on Friday. He sends the draft by noon.\n\n"
              "Drudelen\n\n---\n\n"
              "Thanks, Drudelen, that still works.\n")
    texts = _texts(thread)
    assert "All the best, Drudelen Delez." in texts and "Thanks, Drudelen Delez, that still works." in texts
    assert not any("hi corgalis" in t.lower() for t in texts)  # a greeting says nothing
    assert "Jonas Ebbe sends the draft by noon." in texts  # two sentences after a colon are prose
    found = facts.statements(thread)
    assert not any("Drudelen Drudelen" in s.text or "Delez Tamshi" in s.text for s in found)
    assert not any(s.text.startswith("Drudelen:") for s in found)  # the sign-off is no heading
    assert not any("---" in t for t in texts)  # nor is the rule between messages a statement


def test_a_company_named_after_its_description_is_the_company_later() -> None:
    texts = _texts("# Ferry fares rise\n\nFares will rise by 12%, the operator Calder Lines said on Monday. "
                   "The company blamed fuel prices. Pair the Calder Lines app with the handheld GPS unit. "
                   "Then keep the handheld GPS unit dry.\n")
    assert "Calder Lines blamed fuel prices." in texts
    assert not any("GPS GPS" in t for t in texts)  # "the handheld" is no name for GPS


def test_sender_and_attendance_lines_read_as_sentences() -> None:
    texts = _texts("# Re: van for Saturday\n\nFrom: Hedda Morrow\nTo: Piet Anselm\n\nThe van is booked for 8:30.\n")
    assert "Van for Saturday is from Hedda Morrow." in texts and "Van for Saturday is to Piet Anselm." in texts
    minutes = _texts("# Minutes of the garden committee\n\nPresent: Orla Benn, Kofi Adu\n\nThe shed is full.\n")
    assert "Present at Minutes of the garden committee: Orla Benn, Kofi Adu." in minutes


def test_a_replys_subject_line_restates_nothing() -> None:
    """A reply's "Subject: Re: van for Saturday" once taught "The subject of Van for Saturday is
    Re: van for Saturday" and made "Re" a name connected to the van."""
    thread = ("# Van for Saturday\n\nFrom: Hedda Morrow\nSubject: Van for Saturday\n\nThe van is booked.\n\n"
              "From: Piet Anselm\nSubject: Re: Van for Saturday\n\nThanks, I will bring the keys.\n")
    texts = _texts(thread)
    assert not any("subject of" in t.lower() or "Re" in t.split() for t in texts)
    assert "Van for Saturday is from Piet Anselm." in texts
    order = _texts("# Order 58\n\nSubject: Re: chairs for the hall\n")
    assert "The subject of Order 58 is chairs for the hall." in order


def test_it_in_a_command_is_the_titles_product_or_left_alone() -> None:
    """Recipes once taught "leave Galtam Café covered" (the dough is named nowhere, so "it" took
    the last name) and manuals "never rinse Unpack" ("Unpack everything" read as a name)."""
    manual = _texts("# Using the Tarrow K9\n\nUnpack everything and keep the box. Never rinse it under the tap.\n")
    assert "Using the Tarrow K9: never rinse it under the tap." in manual or \
        "Never rinse Tarrow K9 under the tap." in manual
    recipe = _texts("# Plum cake (Orla Benn)\n\nOrla Benn baked the cake at the Galtam Café until 1968.\n\n"
                    "1. Knead for a few minutes and leave it covered for 65 minutes.\n")
    assert "Plum cake (Orla Benn): knead for a few minutes and leave it covered for 65 minutes." in recipe
    news = _texts("# Venha Group picks Quenby\n\nAccording to Mira Mirik, Venha Group weighed up 6 places "
                  "before it picked Quenby.\n")
    assert any("before Venha Group picked Quenby" in t for t in news)  # "According" gives no command


def test_a_person_pronoun_is_the_subject_of_its_own_clause_and_lunch_is_no_name() -> None:
    texts = _texts("# Monday\n\nLunch was at Seldru Grill; Bepel Anso paid the bill before he left.\n")
    assert any(t.endswith("before Bepel Anso left.") for t in texts), texts
    joined = _texts("# Press\n\nAda Quill founded the press in 1931; Kofi Adu joined her in 1935.\n")
    assert any("Kofi Adu joined Ada Quill in 1935" in t for t in joined), joined  # "her" is not the clause's subject
    assert not any("Lunch" in s.entities for s in facts.statements("# Monday\n\nLunch was at Seldru Grill.\n"))
    stadium = facts.statements("# Day out\n\nThree Rivers Stadium opened in 1970. Two engineers start in June.\n")
    assert "Three Rivers Stadium" in stadium[0].entities and not any("Two" in s.entities for s in stadium)


def test_the_new_rules_stay_out_of_ordinary_prose() -> None:
    """Each case once went wrong under a first version of this stop's rules."""
    assert "Rinvena Losen cut the ribbon." in _texts(
        "# Orne Bridge\n\nThe bridge was opened by the mayor of the town, Rinvena Losen. She cut the ribbon.\n")
    assert not any(t.startswith("Mirvale had") for t in _texts(
        "# Mirvale\n\nAfter the war, Mirvale was rebuilt. The war had destroyed the harbour.\n"))
    assert "The details of Orla Benn is Chair since 2019." in _texts(
        "# Committee roles\n\n| Name | Details |\n|---|---|\n| Orla Benn | Chair since 2019 |\n")
    steps = _texts("# Setting up\n\nStep 1: Unpack the box\n\nThe box holds 3 parts.\n")
    assert not any("step 1 of" in t for t in steps)  # a numbered heading stays a heading
    assert "Rinvena Losen gave a speech." in _texts("# Lords\n\nThe speech was opened by the Lord Mayor of Orne.\n"
                                                    "Rinvena Losen\ngave a speech.\n")
    assert _texts("# Re: Order 58\n\nThe chairs will arrive on 3 June.\n") == \
        ["Order 58: the chairs will arrive on 3 June."]
    found = {(span.answer, span.wh) for s in facts.statements(
        "Write to info@orne.org for maps. A story by August Derleth came out in June. Bake it for forty-five minutes.")
        for span in s.spans}
    assert not any(a in ("orne.org", "August") for a, _ in found) and ("June", "what month") in found
    assert ("forty-five minutes", "how many minutes") in found
