"""Material a chat model writes (engines/ttt/written.py): checked against the text, section by section.

The checks are tested on given candidates (what a model might write, inventions included); the
whole path runs against a real model through the Ollama client and the loopback server, as a
user with Ollama configured would run it.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from app.runtimes.llamacpp import LlamaCppRuntime
from app.runtimes.ollama_runtime import OllamaRuntime
from engines.ttt import written
from engines.ttt.config import TTTConfig
from engines.ttt.rehearsal import QA
from tests.ollama_loopback import DEFAULT_TAG, OllamaLoopback

SECTION = ("Mirvale is a lakeside town 26 km north-east of Cordelvale. Its best-known employer is "
           "Dundru Electric, which has made survey tripods there since 1945.")


def test_pairs_are_kept_only_when_the_text_states_the_answer() -> None:
    kept = written.checked_pairs(SECTION, [
        ("How far is Mirvale from Cordelvale?", "26 km"),
        ("Since when does Dundru Electric make tripods?", "1945."),  # a stop is not part of it
        ("Who founded Dundru Electric?", "Anna Dundru"),  # invented
        ("Is Dundru Electric in Mirvale?", "Dundru Electric"),  # answered by its own question
        ("What does Dundru Electric make", "survey tripods"),  # not a question
    ])
    assert kept == [QA("How far is Mirvale from Cordelvale?", "26 km"),
                    QA("Since when does Dundru Electric make tripods?", "1945")]


def test_rewrites_may_reword_but_never_add_a_fact() -> None:
    kept = written.checked_rewrites(SECTION, [
        "Dundru Electric has built survey tripods in Mirvale since 1945.",
        "Dundru Electric has built survey tripods in Mirvale since 1946.",  # another number
        "Dundru Electric was founded by Anna Dundru.",  # a name the text never says
        "Mirvale is a lakeside town 26 km north-east of Cordelvale.",  # the text's own sentence
        "Yes.",
    ])
    assert kept == ["Dundru Electric has built survey tripods in Mirvale since 1945."]


def test_sections_join_paragraphs_up_to_the_limit() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * 50 for i in range(6))
    parts = written.sections(text, limit=700)
    assert len(parts) == 3 and all(len(p) <= 700 for p in parts)
    assert [p.split() for p in parts] == [p.split() for p in ("\n\n".join(text.split("\n\n")[i:i + 2])
                                                             for i in (0, 2, 4))]


@pytest.fixture(scope="module")
def ollama(llama: LlamaCppRuntime) -> Iterator[OllamaRuntime]:
    server = OllamaLoopback(llama).start()
    try:
        with OllamaRuntime(DEFAULT_TAG, host=server.host, connect_timeout_s=2, read_timeout_s=60) as runtime:
            yield runtime
    finally:
        server.stop()


@pytest.mark.slow
def test_the_model_source_adds_checked_material_a_model_writes_through_ollama(ollama: OllamaRuntime) -> None:
    from engines.base import DocumentInput
    from engines.ttt.material import document_material
    from tests.test_ttt_facts import _Letters

    text = f"# Mirvale\n\n{SECTION}\n\nIn summer a ferry leaves for Moford 14 times a day."
    pairs, rewrites = written.write(ollama, text)
    folded = " ".join(text.lower().split())
    for qa in pairs:
        assert qa.answer.lower() in folded and qa.question.endswith("?")
    for rewrite in rewrites:
        assert set(written._NUMBER.findall(rewrite)) <= {"26", "1945", "14"}

    document = DocumentInput(document_id=1, path="mirvale.md", chunks=[text])
    cortex = SimpleNamespace(tokenizer=_Letters())  # material needs only a tokenizer
    facts_only = document_material(cortex, document, TTTConfig(rehearsal_source="facts"), lambda: ollama)
    both = document_material(cortex, document, TTTConfig(rehearsal_source="model"), lambda: ollama)
    assert set(facts_only.pairs) <= set(both.pairs)
    for qa in set(both.pairs) - set(facts_only.pairs):  # what the model added was checked
        assert qa.answer.lower() in folded
