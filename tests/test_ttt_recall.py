"""The recall pool: a uniform sample of every learned pair, per-document drop, and a saved form
that is validated before it is trusted."""

from __future__ import annotations

import pytest

from engines.ttt.recall import RecallPool


def filled(capacity: int, documents: int, per_document: int = 4) -> RecallPool:
    pool = RecallPool(capacity)
    for d in range(documents):
        pool.add(d, [(f"q{d}.{i}", f"a{d}.{i}") for i in range(per_document)], seed=d)
    return pool


def test_a_full_pool_keeps_early_documents_as_often_as_late_ones() -> None:
    pool = filled(capacity=400, documents=1000)
    assert len(pool) == 400 and pool.seen == 4000
    early = sum(e.document_id < 500 for e in pool.entries)
    assert 160 <= early <= 240  # about half: not only the most recent documents


def test_draw_excludes_the_document_being_learned_and_is_seeded() -> None:
    pool = filled(capacity=100, documents=3)
    drawn = pool.draw(8, seed=5, exclude=1)
    assert len(drawn) == 8 and all(e.document_id != 1 for e in drawn)
    assert drawn == pool.draw(8, seed=5, exclude=1)
    assert len(pool.draw(50, seed=5, exclude=0)) == 8  # no more than there are


def test_drop_and_keep_forget_documents() -> None:
    pool = filled(capacity=100, documents=4)
    assert pool.drop({1}) and not pool.drop({1})
    assert sorted({e.document_id for e in pool.entries}) == [0, 2, 3]
    pool.keep({0, 3, 7})  # the documents still in the store
    assert sorted({e.document_id for e in pool.entries}) == [0, 3]


def test_a_pair_too_long_to_be_a_fact_is_skipped_not_an_error() -> None:
    pool = RecallPool(10)
    pool.add(1, [("q" * 5000, "a"), ("short question", "answer")], seed=0)
    assert [e.question for e in pool.entries] == ["short question"] and pool.seen == 1


def test_the_saved_form_round_trips_and_is_trimmed_to_the_capacity() -> None:
    pool = filled(capacity=100, documents=10)
    again = RecallPool.from_json(pool.to_json(), 100)
    assert again.entries == pool.entries and again.seen == pool.seen
    smaller = RecallPool.from_json(pool.to_json(), 16)
    assert len(smaller) == 16 and set(smaller.entries) <= set(pool.entries)
    assert len(RecallPool.from_json(None, 16)) == 0  # a state saved before recall existed


@pytest.mark.parametrize("bad", [
    [[1, "q", "a"]],  # not the object form
    {"pairs": [[1, "q"]]},
    {"pairs": [["1", "q", "a"]]},
    {"pairs": [[1, "q", 3]]},
    {"pairs": [[1, "q", "a"]], "seen": "many"},
])
def test_a_malformed_saved_pool_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="recall pool"):
        RecallPool.from_json(bad, 100)
