"""The fictional fact generator the benches judge learning with."""

from __future__ import annotations

from app.bench.fiction import DOCS_PER_SIZE, generate, load_questions


def test_deterministic_by_seed_and_different_across_seeds() -> None:
    assert generate("small", 3) == generate("small", 3)
    assert generate("small", 3).documents[0].entity != generate("small", 4).documents[0].entity


def test_questions_are_answerable_and_fair() -> None:
    fiction = generate("default", 0)
    assert len(fiction.documents) == DOCS_PER_SIZE["default"]
    assert len(fiction.questions) >= 100  # one question is under 1% of the score
    texts = {d.id: d.text for d in fiction.documents}
    for q in fiction.questions:
        assert q.answer in q.options and len(set(q.options)) == 4
        assert q.sentence in texts[q.doc_id] and q.answer in q.sentence
        assert q.answer in q.paraphrase and q.paraphrase != q.sentence
    first_options = [q.options.index(q.answer) for q in fiction.questions]
    assert len(set(first_options)) == 4  # the answer is not always in the same place
    entities = [d.entity for d in fiction.documents]
    assert len(set(entities)) == len(entities)


def test_even_the_tiniest_set_asks_about_every_fact() -> None:
    fiction = generate("tiny", 0)
    assert len(fiction.questions) == sum(len(d.facts) for d in fiction.documents)


def test_written_files_and_questions_round_trip(tmp_path) -> None:
    fiction = generate("tiny", 1)
    paths = fiction.write(tmp_path / "docs")
    assert len(paths) == len(fiction.documents) and paths[0].read_text() == fiction.documents[0].text
    fiction.write_questions(tmp_path / "qa.jsonl")
    assert load_questions(tmp_path / "qa.jsonl") == fiction.questions
