"""Which bullets go into the prompt for a question: the most relevant and proven, within a budget.

Relevance is the cosine similarity of question and bullet embeddings; a bullet's record nudges it
(each net helpful tag adds a little, each net harmful one takes a little, capped), so that of two
equally relevant bullets the proven one wins. Bullets under the similarity floor stay out, and the
chosen ones must fit the token budget whole: the prompt never carries half a strategy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engines.ace.playbook import Bullet

RECORD_WEIGHT = 0.03
RECORD_CAP = 5


def rank(bullets: list[Bullet], bullet_vectors: np.ndarray, question_vector: np.ndarray,
         min_similarity: float) -> list[tuple[Bullet, float]]:
    """(bullet, score) at or above the similarity floor, best first (ties: lower id first)."""
    if not bullets:
        return []
    similarity = bullet_vectors @ question_vector
    scored = []
    for bullet, sim in zip(bullets, similarity):
        if sim < min_similarity:
            continue
        record = max(-RECORD_CAP, min(RECORD_CAP, bullet.score))
        scored.append((bullet, float(sim) + RECORD_WEIGHT * record))
    return sorted(scored, key=lambda pair: (-pair[1], pair[0].id))


def select(bullets: list[Bullet], bullet_vectors: np.ndarray, question_vector: np.ndarray, *,
           max_bullets: int, token_budget: int, count_tokens: Callable[[str], int],
           min_similarity: float) -> list[Bullet]:
    """Up to ``max_bullets`` of the best-ranked bullets whose text fits ``token_budget``."""
    chosen: list[Bullet] = []
    left = token_budget
    for bullet, _ in rank(bullets, bullet_vectors, question_vector, min_similarity):
        if len(chosen) >= max_bullets:
            break
        cost = count_tokens(bullet.content) + 2  # "- " and the line break
        if cost <= left:
            chosen.append(bullet)
            left -= cost
    return chosen
