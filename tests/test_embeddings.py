"""The embedder with the real embedded all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np

from app.ingest.embeddings import RECENT_QUERIES


def test_a_question_asked_again_is_not_encoded_again(embedder, monkeypatch) -> None:
    """A chat question was embedded twice per answer: once to search, once to route."""
    calls: list[list[str]] = []
    encode = embedder.model.encode
    monkeypatch.setattr(embedder.model, "encode", lambda texts, **kw: calls.append(list(texts)) or encode(texts, **kw))
    question = "On which pier does the Oskel Isle ferry leave? (embedder test)"
    first = embedder.embed([question])
    first[0, 0] = 99.0  # a caller changing its copy changes nothing kept
    again = embedder.embed([question])
    assert calls == [[question]] and again[0, 0] != 99.0
    assert np.allclose(embedder.encode([question]), again, atol=1e-6) and len(calls) == 2  # benches' raw part: computed
    assert np.allclose(again, embedder.embed([question, "a batch is always encoded"])[:1], atol=1e-5)
    for n in range(RECENT_QUERIES):
        embedder.embed([f"another question {n} (embedder test)"])
    embedder.embed([question])  # pushed out by the newer ones: encoded again
    assert calls.count([question]) == 3 and len(calls) == RECENT_QUERIES + 4
