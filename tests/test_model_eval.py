"""The bench's instruments: ties count as wrong; each batch is routed by its own rows' queries."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

from app.bench.model_eval import greedy_answers, option_logprobs, perplexity, rank_accuracy


def test_rank_accuracy_needs_a_strict_winner() -> None:
    scores = [[-1.0, -3.0, -2.0], [-2.0, -2.0, -5.0], [-4.0, -1.0, -3.0]]
    assert rank_accuracy(scores, [0, 0, 0]) == [True, False, False]


@pytest.mark.slow
def test_each_batch_is_routed_by_the_queries_of_its_own_rows(neocortex) -> None:
    prompts = ["Q: a long question about the river and its many towns?\nA:", "Q: short?\nA:", "Q: medium one?\nA:"]
    queries = ["long", "short", "medium"]
    options = [[" yes", " no"]] * 3
    unrouted = option_logprobs(neocortex, prompts, options, batch_size=2)
    routed: list[list[str]] = []
    neocortex.router = lambda rows: (routed.append(list(rows)), nullcontext())[1]
    try:
        assert option_logprobs(neocortex, prompts, options, batch_size=2, queries=queries) == unrouted
        assert routed == [["short", "medium"], ["long"]]  # batches run shortest prompt first
        routed.clear()
        greedy_answers(neocortex, prompts, max_new_tokens=1, batch_size=2, queries=queries)
        assert routed == [["short", "medium"], ["long"]]
        routed.clear()
        text = "The river runs past the mill. " * 40
        perplexity(neocortex, text, window=64, batch_size=8)
        assert len(routed) == 1 and "".join(routed[0]).replace(" ", "") == text.strip().replace(" ", "")
        routed.clear()
        perplexity(neocortex, text, window=64, route=False)  # what the learned weights do everywhere
        option_logprobs(neocortex, prompts, options)  # no queries (training, probes): not routed
        assert routed == []
    finally:
        neocortex.router = None
