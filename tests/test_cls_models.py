"""The CLS maths in models/: expert pool routing and freeze masks, per-expert files, EWC, routers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from models.consolidation import adam_tensors, distill, kl_to_teacher, load_adam_tensors
from models.ewc import EWC, fisher_diagonal
from models.expert_router import KeyRouter, KWTAGate, SoftmaxGate
from models.lora_experts import ExpertPool
from models.replay import ReplayBuffer


def _pool(experts: int = 3) -> tuple[nn.Sequential, ExpertPool]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    pool = ExpertPool.install(model, lambda name, layer: True, rank=2)
    for slot in range(experts):
        pool.add(slot)
        with torch.no_grad():  # B starts at zero: give every expert an effect
            for p in pool.parameters(slot):
                p.add_(0.1 * torch.randn_like(p))
    return model, pool


def test_only_routed_experts_get_gradients() -> None:
    model, pool = _pool()
    x = torch.randn(5, 8)
    w = torch.zeros(5, 3)
    w[:, 1] = 1.0
    with pool.routing(w):
        model(x).sum().backward()
    for slot in (0, 2):
        assert all(p.grad is None for p in pool.parameters(slot))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.parameters(1))
    assert all(p.grad is None for layer in pool.layers.values() for p in layer.base.parameters())


def test_unrouted_rows_get_the_base_exactly() -> None:
    model, pool = _pool()
    x = torch.randn(4, 8)
    with pool.routing(None, consolidated=0.0):
        plain = model(x)
    pool.uninstall(model)
    assert torch.equal(plain, model(x))


def test_routed_rows_repeat_over_a_batch_of_options() -> None:
    model, pool = _pool()
    x = torch.randn(2, 8)
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    with pool.routing(w, consolidated=torch.tensor([1.0, 0.0])):
        single = model(x)
        repeated = model(x.repeat_interleave(3, 0))  # each row scored for 3 options
    assert torch.allclose(repeated, single.repeat_interleave(3, 0))


def test_freeze_mask_holds_rows_bit_identical() -> None:
    model, pool = _pool(1)
    layer = "2"
    frozen = torch.zeros(4, dtype=torch.bool)
    frozen[:2] = True
    pool.freeze_rows(0, {layer: frozen})
    before = pool.layers[layer].experts["0"].B.detach().clone()
    opt = torch.optim.Adam(pool.parameters(0), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        with pool.routing(torch.ones(6, 1)):
            model(torch.randn(6, 8)).pow(2).sum().backward()
        opt.step()
    after = pool.layers[layer].experts["0"].B.detach()
    assert torch.equal(after[:2], before[:2])
    assert not torch.equal(after[2:], before[2:])


def test_expert_save_load_round_trip_through_safetensors(tmp_path) -> None:
    model, pool = _pool()
    x = torch.randn(3, 8)
    one = torch.zeros(3, 3)
    one[:, 2] = 1.0
    with pool.routing(one):
        expected = model(x)
    save_file(pool.expert(2), str(tmp_path / "expert-2.safetensors"))
    pool.drop(2)
    assert pool.slots() == [0, 1]
    pool.load(2, load_file(str(tmp_path / "expert-2.safetensors")))
    with pool.routing(one):
        assert torch.equal(model(x), expected)


def test_ewc_penalty_zero_at_anchor_positive_away() -> None:
    lin = nn.Linear(4, 2)
    params = list(lin.parameters())
    batches = [(torch.randn(3, 4), torch.randint(2, (3,))) for _ in range(4)]
    fisher = fisher_diagonal(params, batches, lambda b: F.cross_entropy(lin(b[0]), b[1]))
    assert all((f >= 0).all() for f in fisher) and sum(float(f.sum()) for f in fisher) > 0
    ewc = EWC(params, fisher, strength=10.0)
    assert float(ewc.penalty(params).detach()) == 0.0
    with torch.no_grad():
        lin.weight.add_(0.5)
    assert float(ewc.penalty(params).detach()) > 0.0


def test_routers_pick_the_expert_whose_inputs_they_saw() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(20, 6) + 3.0, torch.randn(20, 6) - 3.0
    keys = KeyRouter()
    keys.add(0, a[:10])
    keys.add(1, b[:10])
    w = keys.weights(torch.cat([a[10:], b[10:]]), [0, 1])
    assert w[:10, 0].sum() == 10 and w[10:, 1].sum() == 10
    elsewhere = torch.randn(10, 6) + torch.tensor([3.0, 3.0, 3.0, -3.0, -3.0, -3.0])  # at right angles
    assert float(keys.novelty(a[10:]).mean()) + 0.5 < float(keys.novelty(elsewhere).mean())
    x, owner = torch.cat([a, b]), torch.cat([torch.zeros(20), torch.ones(20)]).long()
    for gate in (SoftmaxGate(6, 2), KWTAGate(6, 2, k=1)):
        gate.fit(x, owner, epochs=50)
        assert (gate.weights(x).argmax(1) == owner).float().mean() > 0.95
    kw = KWTAGate(6, 4, k=2).weights(x)
    assert ((kw > 0).sum(1) == 2).all()


def test_a_gate_masks_experts_gone_and_its_saved_state_answers_alike() -> None:
    from engines.cls.gating import LearnedGate

    torch.manual_seed(0)
    centres = torch.eye(6)[:3] * 4.0
    x = torch.cat([c + 0.3 * torch.randn(12, 6) for c in centres])
    owners = torch.tensor([5] * 12 + [7] * 12 + [9] * 12)  # expert slots, not columns
    allowed = torch.tensor([True, False, True])
    kw = KWTAGate(6, 3, k=1)
    kw.fit(x, torch.repeat_interleave(torch.arange(3), 12), epochs=80)
    w = kw.weights(x[12:24], allowed)  # their winner is gone: the best expert left takes them
    assert (w[:, 1] == 0).all() and ((w > 0).sum(1) == 1).all() and torch.allclose(w.sum(1), torch.ones(12))
    soft = SoftmaxGate(6, 3).weights(x, allowed)
    assert (soft[:, 1] == 0).all() and (soft[:, [0, 2]] > 0).all()

    gate, fit = LearnedGate.fit("kwta", 1, x, owners)
    assert gate.slots == [5, 7, 9] and fit["accuracy"] > 0.95
    picked = gate.weights(x, {5, 7, 9}).argmax(1)
    assert (torch.tensor(gate.slots)[picked] == owners).float().mean() > 0.95
    assert gate.covers({5, 9, 11}) == [5, 9]
    state = gate.state()
    assert state["gate.slots"].tolist() == [5, 7, 9] and state["gate.weight"].shape == (3, 6)
    again = LearnedGate.from_state("kwta", 1, state)
    assert again is not None and torch.equal(again.weights(x, {5, 9}), gate.weights(x, {5, 9}))
    dense = LearnedGate.from_state("softmax", 1, state)  # the same weights read as a softmax gate
    assert dense is not None and ((dense.weights(x, {5, 7, 9}) > 0).sum(1) == 3).all()
    assert LearnedGate.from_state("kwta", 1, {}) is None


def test_distill_moves_student_towards_teacher() -> None:
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    xs = [torch.randn(8, 4) for _ in range(60)]

    def loss(x: object) -> torch.Tensor:
        return kl_to_teacher(student(x), teacher(x).detach())  # type: ignore[arg-type]

    start = float(loss(xs[0]))
    report = distill(list(student.parameters()), xs, loss, lr=0.05)
    assert report.steps == 60 and float(loss(xs[0])) < start / 2
    stopped = distill(list(student.parameters()), xs, loss, lr=0.05, stop=lambda: True)
    assert stopped.stopped and stopped.steps == 0


def test_replay_buffer_keeps_a_uniform_room() -> None:
    buf: ReplayBuffer[int] = ReplayBuffer(50, seed=0)
    for i in range(1000):
        buf.add(i)
    assert len(buf) == 50 and buf.seen == 1000
    assert min(buf.items) < 500 < max(buf.items)  # early items survive, not only the last ones
    assert sorted(buf.shuffled()) == sorted(buf.items) and buf.shuffled() != buf.items


def test_key_router_gate_entropy_is_zero_for_one_expert_and_ln2_for_an_even_split() -> None:
    router = KeyRouter()
    router.add(3, torch.tensor([[1.0, 0.0, 0.0]]))
    router.add(7, torch.tensor([[0.0, 1.0, 0.0]]))
    near_three = torch.tensor([[0.9, 0.1, 0.0], [1.0, 0.0, 0.2]])
    assert router.entropy(near_three) == 0.0
    split = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.1]])
    assert abs(router.entropy(split) - torch.log(torch.tensor(2.0)).item()) < 1e-6
    assert KeyRouter().entropy(split) == 0.0  # no experts yet


def test_a_sleep_cut_in_two_with_adams_moments_saved_ends_where_one_run_ends(tmp_path) -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    xs = [torch.randn(8, 4) for _ in range(10)]
    start = nn.Linear(4, 3).state_dict()

    def run(student: nn.Linear, batches: list[torch.Tensor], opt: torch.optim.Optimizer) -> None:
        distill(list(student.parameters()), batches,
                lambda x: kl_to_teacher(student(x), teacher(x).detach()), lr=0.05, opt=opt)  # type: ignore[arg-type]

    whole = nn.Linear(4, 3)
    whole.load_state_dict(start)
    run(whole, xs, torch.optim.Adam(whole.parameters(), lr=0.05))

    halves, fresh = nn.Linear(4, 3), nn.Linear(4, 3)
    halves.load_state_dict(start)
    first = torch.optim.Adam(halves.parameters(), lr=0.05)
    run(halves, xs[:5], first)
    save_file({**adam_tensors(first), **halves.state_dict()}, str(tmp_path / "resume.safetensors"))
    aside = load_file(str(tmp_path / "resume.safetensors"))
    halves.load_state_dict({k: v for k, v in aside.items() if not k.startswith("adam.")})
    fresh.load_state_dict(halves.state_dict())
    resumed, restarted = torch.optim.Adam(halves.parameters(), lr=0.05), torch.optim.Adam(fresh.parameters(), lr=0.05)
    assert load_adam_tensors(resumed, aside)
    run(halves, xs[5:], resumed)
    run(fresh, xs[5:], restarted)  # Adam's moments lost: another path
    assert torch.allclose(halves.weight, whole.weight, atol=1e-6)
    assert not torch.allclose(fresh.weight, whole.weight, atol=1e-4)
    assert not load_adam_tensors(torch.optim.Adam(nn.Linear(5, 3).parameters()), aside)  # not its parameters
