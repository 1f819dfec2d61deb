"""Second-pass ranking aids that use the first ranking itself: pseudo-relevance feedback on the
query vector and support from the other chunks of the same document.

A paraphrase shares few words with the passage it asks about, and a short question's embedding
sits between several topics. The chunks that already rank first usually are on the right topic,
so moving the query toward them (Rocchio 1971; "pseudo-relevance feedback" in Manning et al.,
*Introduction to Information Retrieval*, ch. 9) and searching again pulls the other chunks of that
topic up. A document several of whose chunks rank well is more likely the answer than one lucky
chunk (CombSUM-style aggregation, Fox & Shaw 1994), so a chunk can borrow score from its
document's other high-ranking chunks. Pure functions: the app runs the searches.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def rocchio(query: np.ndarray, feedback: np.ndarray, weight: float) -> np.ndarray:
    """Unit-length ``query + weight * mean(feedback)``; ``feedback`` is (m, dim) of unit vectors.
    No feedback or no weight: the query itself."""
    if weight <= 0 or feedback.size == 0:
        return query
    moved = query + weight * feedback.mean(axis=0)
    norm = float(np.linalg.norm(moved))
    return (moved / norm).astype(np.float32) if norm > 0 else query


def document_support(fused: Mapping[int, float], document_of: Mapping[int, int], weight: float,
                     chunks: int) -> dict[int, float]:
    """Each chunk's score plus ``weight`` times the scores of the best ``chunks`` other chunks of
    its document among the candidates (chunks of unknown document keep their own score)."""
    if weight <= 0:
        return dict(fused)
    by_document: dict[int, list[float]] = {}
    for cid, score in fused.items():
        if cid in document_of:
            by_document.setdefault(document_of[cid], []).append(score)
    best = {doc: sorted(scores, reverse=True) for doc, scores in by_document.items()}
    out: dict[int, float] = {}
    for cid, score in fused.items():
        doc = document_of.get(cid)
        if doc is None:
            out[cid] = score
            continue
        others = list(best[doc])
        others.remove(score)
        out[cid] = score + weight * sum(others[:chunks])
    return out
