"""The training loop on a small random Llama: distillation replay holds the model's predictions
on background text where the original model had them, while the material is still learned."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engines.ttt.trainer import (
    Piece,
    Prefix,
    collate,
    distill_loss,
    firing_counts,
    frozen_prefix,
    frozen_prefixes,
    labelled_loss,
    opening,
    teach,
    train,
)
from models.dual_mlp import DualMLP, install, original
from models.neuron_gate import FiringCounts

FIRST = 2


def tiny_model() -> tuple[LlamaForCausalLM, list[DualMLP]]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=64))
    model.requires_grad_(False)
    return model, install(model, [2, 3])


def batch(seed: int, rows: int = 2, length: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pieces = [Piece(ids, ids, "document") for ids in torch.randint(0, 64, (rows, length), generator=g).tolist()]
    return collate(pieces, 0, "cpu")


def learn(distill: bool) -> tuple[float, float]:
    """Material loss and replay KL after training the tiny model with or without distillation."""
    model, duals = tiny_model()
    for dual in duals:
        dual.alpha = 0.0

    params = [p for dual in duals for p in dual.open_rows(torch.arange(dual.neurons)).trainable()]
    lock = threading.Lock()
    material, replay = list(frozen_prefixes(model, lock, [batch(1)], FIRST)), [batch(2)]
    report = train(model, lock, params, material, passes=30, lr=3e-2, max_grad_norm=1.0,
                   report=lambda *_: None, first=FIRST,
                   replay=list(frozen_prefixes(model, lock, replay, FIRST)) if distill else (),
                   original=lambda: original(duals), replay_weight=5.0)
    with torch.no_grad():
        kl = float(distill_loss(model, frozen_prefix(model, replay[0], FIRST), FIRST, lambda: original(duals)))
    assert all(dual.alpha == 0.0 for dual in duals)  # the original() context restored alpha
    return report.last_loss, kl


def test_distillation_is_zero_for_the_untouched_model() -> None:
    model, duals = tiny_model()
    prefix = frozen_prefix(model, batch(3), FIRST)
    with torch.no_grad():
        assert float(distill_loss(model, prefix, FIRST, lambda: original(duals))) < 1e-6
        assert float(labelled_loss(model, prefix, FIRST)) > 0.0


def test_distillation_replay_holds_background_predictions_while_the_material_is_learned() -> None:
    plain_loss, plain_kl = learn(distill=False)
    held_loss, held_kl = learn(distill=True)
    assert plain_kl > 0.01  # learning the material alone moves background predictions
    assert held_kl < plain_kl / 5
    assert plain_loss < 3.7 and held_loss < plain_loss + 0.05  # from ln(64) = 4.16: both learned


def test_an_answer_between_calibration_batches_sees_the_learned_model_and_is_not_counted() -> None:
    model, duals = tiny_model()
    for dual in duals:
        dual.alpha = 0.4
    batches = [batch(4), batch(5)]
    seen: list[list[float]] = []

    def answer_between_batches(_: float) -> None:  # what another thread may do while unlocked
        seen.append([dual.alpha for dual in duals])
        with torch.no_grad():
            model(input_ids=batch(6, rows=3, length=10)["input_ids"])

    lock = threading.Lock()
    counts = firing_counts(model, lock, duals, list(frozen_prefixes(model, lock, batches, FIRST)), (FIRST, 3), 0.1,
                           answer_between_batches, inside=lambda: original(duals))
    assert seen == [[0.4, 0.4], [0.4, 0.4]]
    assert counts.tokens == sum(int(b["attention_mask"].sum()) for b in batches)
    assert all(dual.observer is None for dual in duals)


def test_the_gate_counts_only_the_documents_own_tokens() -> None:
    pieces = [Piece([1, 2, 3], [1, 2, 3], "document"), Piece([4, 5], [4, 5], "replay"),
              Piece([6, 7, 8, 9], [-100, -100, 8, 9], "recall"), Piece([10], [10], "qa")]
    counted = collate(pieces, 0, "cpu")["counted"]
    assert counted.tolist() == [[True, True, True, False], [False] * 4, [False] * 4,
                                [True, False, False, False]]


def test_counts_from_the_prefixes_equal_a_full_forward_observed() -> None:
    model, duals = tiny_model()
    batches = [batch(7), batch(8, rows=3, length=11)]
    expected = FiringCounts(len(duals), duals[0].neurons)
    for b in batches:
        mask = b["attention_mask"].bool()
        for j, dual in enumerate(duals):
            dual.observer = lambda h, j=j, mask=mask: expected.add(j, h, 0.1, mask)
        with torch.no_grad():
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    for dual in duals:
        dual.observer = None
    lock = threading.Lock()
    counts = firing_counts(model, lock, duals, list(frozen_prefixes(model, lock, batches, FIRST)), (FIRST, 3), 0.1)
    assert torch.equal(counts.counts, expected.counts) and counts.tokens == expected.tokens


def test_a_kept_teacher_gives_the_same_distillation_loss_as_a_fresh_one() -> None:
    model, duals = tiny_model()
    for dual in duals:
        dual.alpha = 0.3
        rows = dual.open_rows(torch.arange(dual.neurons))
        with torch.no_grad():
            rows.down.add_(0.05)
    prefix = frozen_prefix(model, batch(9), FIRST)
    with torch.no_grad():
        fresh = distill_loss(model, prefix, FIRST, lambda: original(duals))
        teach(model, prefix, FIRST, lambda: original(duals))
        kept = distill_loss(model, prefix, FIRST, lambda: original(duals))
    assert float(fresh) > 0 and torch.equal(fresh, kept)


def test_teachers_over_the_memory_budget_are_not_kept(monkeypatch) -> None:
    model, duals = tiny_model()
    for dual in duals:
        dual.alpha = 0.5
    lock = threading.Lock()
    kept = list(frozen_prefixes(model, lock, [batch(10)], FIRST))
    over = list(frozen_prefixes(model, lock, [batch(11)], FIRST))
    params = [p for dual in duals for p in dual.open_rows(torch.arange(dual.neurons)).trainable()]
    for budget, replay in ((10**9, kept), (0, over)):
        monkeypatch.setattr("engines.ttt.trainer.TEACHER_BUDGET", budget)
        train(model, lock, params, list(frozen_prefixes(model, lock, [batch(1)], FIRST)), passes=2, lr=1e-2,
              max_grad_norm=1.0, report=lambda *_: None, first=FIRST, replay=replay,
              original=lambda: original(duals))
    assert kept[0].teacher is not None and over[0].teacher is None  # recomputed at each step instead


def opening_batch() -> dict[str, torch.Tensor]:
    """Three rows opening with the same 12 tokens (then their own, of different lengths, so the
    batch is padded), a recalled pair with the same opening, and a row of other text."""
    g = torch.Generator().manual_seed(12)
    opening = torch.randint(1, 64, (12,), generator=g).tolist()
    own = [torch.randint(1, 64, (n,), generator=g).tolist() for n in (5, 9, 2, 7)]
    pieces = [Piece(opening + o, [-100] * 12 + o, "qa") for o in own[:3]]
    pieces.append(Piece(opening + own[3], [-100] * 12 + own[3], "recall"))
    other = torch.randint(1, 64, (16,), generator=g).tolist()
    pieces.append(Piece(other, other, "replay"))
    return collate(pieces, 0, "cpu")


def whole(model: LlamaForCausalLM, b: dict[str, torch.Tensor]) -> Prefix:
    """The prefix as the batch's own full forward gives it."""
    return frozen_prefix(model, b, FIRST)


def same_arguments(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_arguments(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same_arguments(x, y) for x, y in zip(a, b))
    return a == b


def test_regrouped_rows_with_a_shared_opening_give_each_batchs_full_forward(monkeypatch) -> None:
    model, duals = tiny_model()
    batches = [opening_batch(), batch(14, rows=3), opening_batch()]
    assert len(opening([[int(t) for t in row[:n]] for row, n in
                        zip(batches[0]["input_ids"], batches[0]["attention_mask"].sum(1))])) == 12
    monkeypatch.setattr("engines.ttt.trainer.FORWARD_TOKENS", 64)  # several forwards per group
    done: list[float] = []
    got = list(frozen_prefixes(model, threading.Lock(), batches, FIRST, done.append))
    assert len(done) > 3 and done == sorted(done) and done[-1] == 1.0  # progress after each forward
    for b, prefix in zip(batches, got):
        expected = whole(model, b)
        real = b["attention_mask"].bool()
        assert prefix.hidden.shape == expected.hidden.shape
        assert torch.allclose(prefix.hidden[real], expected.hidden[real], atol=1e-5)
        assert torch.equal(prefix.labels, expected.labels) and torch.equal(prefix.counted, expected.counted)
        assert same_arguments(prefix.layer_kwargs, expected.layer_kwargs)
        with torch.no_grad():
            assert float(labelled_loss(model, prefix, FIRST)) == pytest.approx(
                float(labelled_loss(model, expected, FIRST)), abs=1e-5)


@pytest.mark.parametrize("types", [["full_attention", "sliding_attention"] * 3, ["linear_attention"] * 6])
def test_models_with_other_attention_below_the_first_learning_layer_run_per_batch(monkeypatch, types) -> None:
    model, _ = tiny_model()
    model.config.layer_types = types[:model.config.num_hidden_layers]
    monkeypatch.setattr("engines.ttt.trainer._regrouped", lambda *a, **k: pytest.fail("regrouped"))
    b = opening_batch()
    (prefix,) = frozen_prefixes(model, threading.Lock(), [b], FIRST)
    assert torch.equal(prefix.hidden, whole(model, b).hidden)


def test_rows_without_a_common_opening_share_nothing() -> None:
    assert opening([[1] * 9, [2] * 9, [3] * 20]) == []
    assert opening([[5] * 12 + [1], [5] * 10 + [2, 2], [7] * 12]) == [5] * 10
    assert opening([[5] * 9, [5] * 12]) == [5] * 8  # each row keeps a token of its own


def test_the_gate_skips_rows_it_does_not_count_and_counts_the_rest_as_a_full_forward(monkeypatch) -> None:
    model, duals = tiny_model()
    b = opening_batch()
    expected = FiringCounts(len(duals), duals[0].neurons)
    for j, dual in enumerate(duals):
        dual.observer = lambda h, j=j: expected.add(j, h, 0.1, b["counted"])
    with torch.no_grad():
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    for dual in duals:
        dual.observer = None
    prefix = frozen_prefix(model, b, FIRST)
    rows: list[int] = []
    add = FiringCounts.add
    monkeypatch.setattr(FiringCounts, "add", lambda self, j, h, *rest: (rows.append(h.shape[0]), add(self, j, h, *rest)))
    counts = firing_counts(model, threading.Lock(), duals, [prefix], (FIRST, 3), 0.1)
    assert set(rows) == {3}  # the recalled pair and the replay are not run
    assert torch.equal(counts.counts, expected.counts) and counts.tokens == expected.tokens
