"""The maths of learning into weights, without a language model: DualMLP mixing, the TF-IDF neuron
gate, row-masked updates (untouched neurons stay bit-identical) and routing the delta by keys."""

from __future__ import annotations

import torch
from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

import pytest

from models.delta_router import DeltaRouter
from models.dual_mlp import DualMLP, layer_range, shared
from models.neuron_gate import FiringCounts, firing, quiet, tfidf, top_neurons

HIDDEN, NEURONS = 16, 48


def make_mlp(seed: int = 0) -> LlamaMLP:
    torch.manual_seed(seed)
    return LlamaMLP(LlamaConfig(hidden_size=HIDDEN, intermediate_size=NEURONS, hidden_act="silu",
                                num_attention_heads=4, num_key_value_heads=4))


def dense(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A gated MLP from neuron-major weights: down(silu(gate x) * up x)."""
    return (torch.nn.functional.silu(x @ gate.t()) * (x @ up.t())) @ down


def test_alpha_one_is_exactly_the_original_even_after_learning() -> None:
    mlp = make_mlp()
    x = torch.randn(2, 5, HIDDEN)
    expected = mlp(x)
    dual = DualMLP(mlp, alpha=1.0)
    assert torch.equal(dual(x), expected)
    rows = dual.open_rows(torch.tensor([1, 7]))
    with torch.no_grad():
        rows.gate.add_(1.0)
    dual.commit()
    assert torch.equal(dual(x), expected)  # learned rows exist, but alpha = 1 ignores them


def test_output_is_frozen_plus_one_minus_alpha_times_the_delta() -> None:
    mlp = make_mlp(1)
    dual = DualMLP(mlp, alpha=0.3)
    rows = dual.open_rows(torch.tensor([0, 5, 9, 40]))
    with torch.no_grad():
        for p in rows.parameters():
            p.add_(0.1 * torch.randn_like(p))
    dual.commit()
    x = torch.randn(3, 4, HIDDEN)
    frozen = mlp(x)
    copy = dense(dual.gate, dual.up, dual.down, x)  # the full trainable copy, every neuron
    torch.testing.assert_close(dual(x), frozen + 0.7 * (copy - frozen), rtol=1e-5, atol=1e-5)


def test_shares_scale_each_rows_delta_and_follow_rows_repeated_after_they_were_set() -> None:
    mlp = make_mlp(3)
    dual = DualMLP(mlp, alpha=0.4)
    rows = dual.open_rows(torch.tensor([2, 8, 33]))
    with torch.no_grad():
        rows.down.add_(0.5)
    dual.commit()
    x = torch.randn(2, 3, HIDDEN)
    full = dual(x)
    frozen = mlp(x)
    with shared([dual], torch.tensor([0.0, 0.25])):
        routed = dual(x)
        torch.testing.assert_close(dual(x.repeat_interleave(3, 0)), routed.repeat_interleave(3, 0))
        with pytest.raises(ValueError, match="2 shares cannot route a batch of 3"):
            dual(x[:1].repeat(3, 1, 1))
    assert torch.equal(routed[0], frozen[0])  # no share: exactly the original
    torch.testing.assert_close(routed[1], frozen[1] + 0.25 * (full[1] - frozen[1]))
    with shared([dual], torch.zeros(2)):
        assert torch.equal(dual(x), frozen)
    assert dual.share is None and torch.equal(dual(x), full)  # outside: the whole delta again


def test_router_shares_rise_with_similarity_and_keys_leave_with_their_document() -> None:
    router = DeltaRouter(low=0.5, high=0.7)
    assert router.shares(torch.eye(3)).tolist() == [0.0, 0.0, 0.0]  # no keys: nothing learned applies
    router.add(1, torch.eye(4)[:2])
    router.add(2, torch.eye(4)[2:3])
    probe = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0, 0], [0.6, 0, 0, 0.8], [0.0, 0, 0, 1],
                                                        [0, 0.0, 1, 0]]), dim=1)
    torch.testing.assert_close(router.shares(probe), torch.tensor([1.0, 0.5, 0.0, 1.0]))
    router.add(1, torch.eye(4)[3:])  # a changed document's keys replace its old ones
    assert sorted(router.owners.tolist()) == [1, 2] and router.shares(probe)[0] == 0.0
    state = router.state()
    assert router.drop({2}) and not router.drop({2}) and router.owners.tolist() == [1]
    router.keep(set())
    assert len(router) == 0
    router.load(state)
    assert len(router) == 2 and router.shares(probe)[2] == 1.0
    with pytest.raises(ValueError, match="dimensions"):
        router.shares(torch.ones(1, 3))
    with pytest.raises(ValueError, match="do not fit"):
        router.add(3, torch.ones(1, 5))
    for bad in ({"keys": torch.ones(2, 4), "owners": torch.tensor([1])},
                {"keys": torch.ones(1, 4), "owners": torch.tensor([1.0])}, {"keys": torch.ones(1, 4)}):
        with pytest.raises(ValueError):
            router.load(bad)
    with pytest.raises(ValueError):
        DeltaRouter(low=0.7, high=0.5)


def test_untouched_rows_stay_bit_identical_and_gradients_reach_only_open_rows() -> None:
    dual = DualMLP(make_mlp(2), alpha=0.5)
    before = {k: getattr(dual, k).clone() for k in ("gate", "up", "down")}
    frozen_before = [p.clone() for p in dual.frozen.parameters()]
    open_ids = torch.tensor([3, 11, 30])
    rows = dual.open_rows(open_ids)
    optimizer = torch.optim.Adam(rows.parameters(), lr=1e-2)
    x = torch.randn(2, 6, HIDDEN)
    for _ in range(3):
        loss = dual(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert dual.commit() == 3
    untouched = torch.ones(NEURONS, dtype=torch.bool)
    untouched[open_ids] = False
    for k, old in before.items():
        new = getattr(dual, k)
        assert torch.equal(new[untouched], old[untouched])
        assert not torch.equal(new[open_ids], old[open_ids])
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, dual.frozen.parameters()))
    assert dual.touched.nonzero().flatten().tolist() == open_ids.tolist()


def test_learned_rows_round_trip_and_reject_a_model_of_another_shape() -> None:
    dual = DualMLP(make_mlp(3), alpha=0.4)
    rows = dual.open_rows(torch.tensor([2, 4]))
    with torch.no_grad():
        rows.up.mul_(2.0)
    dual.commit()
    x = torch.randn(1, 3, HIDDEN)
    state = dual.learned()
    other = DualMLP(make_mlp(3), alpha=0.4)
    other.load_learned(state)
    assert torch.equal(other(x), dual(x))
    bad = dict(state, ids=torch.tensor([2, NEURONS]))
    try:
        other.load_learned(bad)
    except ValueError:
        pass
    else:
        raise AssertionError("rows outside the MLP were accepted")


def test_gate_ranks_neurons_specific_to_the_document_first() -> None:
    torch.manual_seed(0)
    background = FiringCounts(layers=1, neurons=8)
    common = torch.zeros(1, 100, 8)
    common[..., 0] = 5.0  # neuron 0 fires on every general token
    common[..., 1:] = torch.rand(1, 100, 7) * 0.1
    background.add(0, common, fraction=1 / 8)
    doc = FiringCounts(layers=1, neurons=8)
    h = torch.rand(1, 20, 8) * 0.1
    h[0, :, 0] = 5.0  # also on the document: common, so low IDF
    h[0, :15, 6] = 9.0  # fires on most of the document, never in the background: specific
    h[0, 15:, 3] = 9.0  # fires on a few document tokens
    doc.add(0, h, fraction=2 / 8)
    scores = tfidf(doc, background.counts, background.tokens)
    assert scores[0, 6] > scores[0, 3] > scores[0, 0]
    assert top_neurons(scores, k=2)[0].tolist() == [3, 6]
    assert top_neurons(scores, k=8, min_score=float(scores[0, 3]))[0].tolist() == [6]


def test_a_neuron_busy_in_general_use_is_kept_out_even_when_tfidf_ranks_it_first() -> None:
    background = FiringCounts(layers=1, neurons=4)
    h = torch.zeros(1, 100, 4)
    h[0, :60, 0] = 1.0  # fires on 60% of general tokens
    h[0, 60:, 1] = 1.0  # on 40%
    h[0, :2, 2] = 2.0  # on 2%
    background.add(0, h, fraction=1 / 4)
    doc = FiringCounts(layers=1, neurons=4)
    d = torch.zeros(1, 10, 4)
    d[0, :, 0] = 1.0  # on every document token: the highest TF-IDF ...
    d[0, :1, 2] = 2.0  # ... above this rarely-firing neuron's
    doc.add(0, d, fraction=1 / 4)
    scores = tfidf(doc, background.counts, background.tokens)
    assert top_neurons(scores, k=1)[0].tolist() == [0]
    allowed = quiet(background.counts, background.tokens, max_rate=0.05)
    assert allowed[0].tolist() == [False, False, True, True]
    assert top_neurons(scores, k=1, allowed=allowed)[0].tolist() == [2]


def test_firing_marks_each_tokens_strongest_share_of_neurons() -> None:
    h = torch.tensor([[0.1, -3.0, 0.2, 2.0], [1.0, 0.0, 0.5, -0.2]])
    assert firing(h, 0.5).tolist() == [[False, True, False, True], [True, False, True, False]]
    assert firing(h, 0.25).tolist() == [[False, True, False, False], [True, False, False, False]]


def test_layer_range_defaults_to_the_last_quarter_and_checks_explicit_ranges() -> None:
    assert layer_range(30, 0.75) == list(range(22, 30))
    assert layer_range(30, 0.75, "20-22,29") == [20, 21, 22, 29]
    try:
        layer_range(30, 0.75, "28-31")
    except ValueError as exc:
        assert "outside" in str(exc)
    else:
        raise AssertionError("a layer outside the model was accepted")


def test_values_only_rows_train_what_neurons_write_not_when_they_fire() -> None:
    dual = DualMLP(make_mlp(4), alpha=0.5)
    gate, up = dual.gate.clone(), dual.up.clone()
    rows = dual.open_rows(torch.tensor([1, 6, 20]), values_only=True)
    assert [p.shape for p in rows.trainable()] == [rows.down.shape]
    optimizer = torch.optim.Adam(rows.trainable(), lr=1e-2)
    x = torch.randn(2, 6, HIDDEN)
    for _ in range(3):
        dual(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert dual.commit() == 3
    assert torch.equal(dual.gate, gate) and torch.equal(dual.up, up)
    # the delta is the neurons' own (frozen) activations times what their writes changed by
    h = dual.frozen.act_fn(dual.frozen.gate_proj(x)) * dual.frozen.up_proj(x)
    ids = dual.touched_ids()
    change = dual.down[ids] - dual.frozen.down_proj.weight[:, ids].t()
    torch.testing.assert_close(dual(x), dual.frozen(x) + 0.5 * h[..., ids] @ change, rtol=1e-5, atol=1e-5)
