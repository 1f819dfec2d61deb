"""``engram bench continual``: the standard continual-learning check on scikit-learn's digits.

Protocol: **class-incremental** (the hard one). The ten digits come as five tasks of two classes
(0-1, 2-3, ...), one after another; one shared 10-way head; no task identity at test time, an
input must be classified among all ten digits. After each task every task's test split is
scored (accuracy matrix ``R[i][j]``: after task i, on task j). Reported per arm:

- average accuracy after the last task: mean_j R[T-1][j];
- backward transfer: mean over j < T-1 of R[T-1][j] - R[j][j] (negative: forgetting).

Arms, all on the same MLP (64-128-128-10), same data order, same seeds, same code in models/:

- ``naive``: sequential finetuning of every weight;
- ``ewc``: the same with the EWC penalty (models.ewc; Fisher of each finished task, summed);
- ``replay``: the same with shuffled replay from a reservoir buffer (models.replay);
- ``cls``: the frozen base with a LoRA expert pool (models.lora_experts). By day a task that
  no expert's keys are close to grows a new expert (cloned from the nearest one, when there is
  one) and only that expert trains; keys (a sample of its inputs) go to the key router
  (models.expert_router). By night, sleep distils every expert into the consolidated adapter
  from the same replay buffer, under EWC (models.consolidation). At test time each input goes
  to the expert its key router picks (no task id given). ``cls_softmax`` / ``cls_kwta`` route
  with the learned gates instead (trained in sleep on the buffer), ``cls_consolidated`` answers
  with the consolidated adapter alone (what remains once experts are recycled).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from models.consolidation import distill, kl_to_teacher
from models.ewc import EWC, fisher_diagonal
from models.expert_router import KeyRouter, KWTAGate, SoftmaxGate
from models.lora_experts import ExpertPool
from models.replay import ReplayBuffer

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
PROTOCOL = "class-incremental (shared 10-way head, no task id at test)"
Episode = tuple[Tensor, int, int]  # (input [64], label, expert slot that learned it)


class ContinualConfig(BaseModel):
    """The recipe every arm shares (and what only CLS reads)."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    hidden: int = 128
    epochs: int = 20
    batch: int = 32
    lr: float = 1e-3
    buffer: int = 200  # replay episodes kept (replay arm and CLS alike)
    ewc_strength: float = 5000.0
    rank: int = 8  # CLS expert rank
    expert_lr: float = 5e-3
    keys_per_expert: int = 32  # inputs kept as an expert's router keys
    novelty: float = 0.15  # mean (1 - best key cosine) above which a task grows a new expert
    sleep_epochs: int = 15
    sleep_lr: float = 3e-3
    sleep_ewc_strength: float = 100.0
    forgetting_bound: float = 0.05  # a sleep losing more on the buffer is rolled back


class ArmResult(BaseModel):
    average_accuracy: float
    backward_transfer: float
    seeds: list[dict[str, float]] = Field(default_factory=list)
    matrix: list[list[float]] = Field(default_factory=list, description="R[i][j] of the first seed")


class ContinualReport(BaseModel):
    protocol: str = PROTOCOL
    tasks: list[list[int]] = Field(default_factory=lambda: [list(t) for t in TASKS])
    arms: dict[str, ArmResult]
    targets: dict[str, bool]
    seconds: float
    threads: int
    events: list[str] = Field(default_factory=list, description="CLS growth/sleep events, first seed")
    config: ContinualConfig


# --- data and model ----------------------------------------------------------------------------
def digits_split(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(data.data / 16.0, data.target, test_size=0.3,
                                              random_state=seed, stratify=data.target)
    return (torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr), torch.tensor(x_te, dtype=torch.float32),
            torch.tensor(y_te))


def task_rows(y: Tensor, task: tuple[int, int]) -> Tensor:
    return (y == task[0]) | (y == task[1])


def mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def minibatches(x: Tensor, y: Tensor, size: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    order = torch.randperm(x.shape[0], generator=generator)
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, x.shape[0], size)]


def accuracy(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((predict(x).argmax(dim=1) == y).float().mean())


def summary(matrix: list[list[float]]) -> dict[str, float]:
    last = matrix[-1]
    t = len(matrix)
    return {"average_accuracy": sum(last) / t,
            "backward_transfer": sum(last[j] - matrix[j][j] for j in range(t - 1)) / (t - 1)}


# --- the baselines -----------------------------------------------------------------------------
def run_baseline(arm: str, cfg: ContinualConfig, seed: int, data: tuple[Tensor, Tensor, Tensor, Tensor]
                 ) -> list[list[float]]:
    """naive / ewc / replay: every weight trained, task after task."""
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = mlp(cfg.hidden)
    params = list(model.parameters())
    buffer: ReplayBuffer[Episode] = ReplayBuffer(cfg.buffer, seed)
    ewc: EWC | None = None
    matrix: list[list[float]] = []
    for task in TASKS:
        rows = task_rows(y_tr, task)
        x, y = x_tr[rows], y_tr[rows]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        for _ in range(cfg.epochs):
            for bx, by in minibatches(x, y, cfg.batch, gen):
                if arm == "replay" and len(buffer):
                    old = buffer.draw(cfg.batch)
                    bx = torch.cat([bx, torch.stack([e[0] for e in old])])
                    by = torch.cat([by, torch.tensor([e[1] for e in old])])
                opt.zero_grad()
                loss = F.cross_entropy(model(bx), by)
                if ewc is not None:
                    loss = loss + ewc.penalty(params)
                loss.backward()
                opt.step()
        if arm == "ewc":
            fisher = fisher_diagonal(params, [(x[i:i + 1], y[i:i + 1]) for i in range(0, x.shape[0], 4)],
                                     lambda b: F.cross_entropy(model(b[0]), b[1]))  # type: ignore[index]
            ewc = EWC(params, fisher, cfg.ewc_strength) if ewc is None else (ewc.absorb(params, fisher) or ewc)
        for i in range(x.shape[0]):
            buffer.add((x[i], int(y[i]), 0))
        matrix.append([accuracy(model, x_te[task_rows(y_te, t)], y_te[task_rows(y_te, t)]) for t in TASKS])
    return matrix


# --- CLS ---------------------------------------------------------------------------------------
class CLSLearner:
    """The expert pool, its routers, the replay buffer and sleep, on the digits MLP."""

    def __init__(self, cfg: ContinualConfig, seed: int) -> None:
        torch.manual_seed(seed)
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed)
        self.model = mlp(cfg.hidden)  # the base: random and frozen (nothing pretrained to lean on)
        self.pool = ExpertPool.install(self.model, lambda name, layer: True, cfg.rank)
        self.keys = KeyRouter()
        self.buffer: ReplayBuffer[Episode] = ReplayBuffer(cfg.buffer, seed)
        self.ewc: EWC | None = None
        self.events: list[str] = []
        self.softmax = SoftmaxGate(64, 16)
        self.kwta = KWTAGate(64, 16, k=1)

    def learn(self, x: Tensor, y: Tensor) -> int:
        """By day: route the task, grow when it is novel, train only its expert."""
        slots = self.pool.slots()
        novelty = float(self.keys.novelty(x).mean()) if slots else float("inf")
        if novelty > self.cfg.novelty:
            slot = max(slots, default=-1) + 1
            if slots:
                _, owner = self.keys.best(x)
                nearest = int(owner.mode().values)
                self.pool.clone(nearest, slot)
                self.events.append(f"grow: slot {slot} cloned from {nearest} (novelty {novelty:.2f})")
            else:
                self.pool.add(slot)
                self.events.append(f"grow: slot {slot}, the first (no expert yet)")
        else:
            slot = int(self.keys.best(x)[1].mode().values)
            self.events.append(f"route: to slot {slot} (novelty {novelty:.2f})")
        self._train_expert(slot, x, y)
        pick = torch.randperm(x.shape[0], generator=self.gen)[:self.cfg.keys_per_expert]
        self.keys.add(slot, x[pick])
        for i in range(x.shape[0]):
            self.buffer.add((x[i], int(y[i]), slot))
        return slot

    def _train_expert(self, slot: int, x: Tensor, y: Tensor) -> None:
        """Only ``slot`` is routed, so only it gets gradients; an expert that already holds
        episodes rehearses them (shuffled from the buffer) beside the new ones."""
        params = self.pool.parameters(slot)
        opt = torch.optim.Adam(params, lr=self.cfg.expert_lr)
        slots = self.pool.slots()
        own: ReplayBuffer[Episode] = ReplayBuffer(self.cfg.buffer, int(torch.randint(1 << 30, (1,), generator=self.gen)))
        for e in self.buffer.items:
            if e[2] == slot:
                own.add(e)
        for _ in range(self.cfg.epochs):
            for bx, by in minibatches(x, y, self.cfg.batch, self.gen):
                if len(own):
                    old = own.draw(self.cfg.batch)
                    bx = torch.cat([bx, torch.stack([e[0] for e in old])])
                    by = torch.cat([by, torch.tensor([e[1] for e in old])])
                w = torch.zeros(bx.shape[0], len(slots))
                w[:, slots.index(slot)] = 1.0
                with self.pool.routing(w, slots, consolidated=0.0):
                    loss = F.cross_entropy(self.model(bx), by)
                opt.zero_grad()
                loss.backward()
                opt.step()

    def expert_logits(self, x: Tensor, slot_of_row: Tensor) -> Tensor:
        slots = self.pool.slots()
        w = torch.zeros(x.shape[0], len(slots))
        for column, slot in enumerate(slots):
            w[:, column] = (slot_of_row == slot).float()
        with self.pool.routing(w, slots, consolidated=0.0):
            return self.model(x)

    def consolidated_logits(self, x: Tensor) -> Tensor:
        with self.pool.routing(None, consolidated=1.0):
            return self.model(x)

    def sleep(self) -> None:
        """By night: distil the experts into the consolidated adapter from shuffled replay,
        under EWC; roll back when the buffer's accuracy drops past the bound; train the gates."""
        params = self.pool.parameters(None)
        before_state = self.pool.consolidated()
        episodes = self.buffer.items
        xs = torch.stack([e[0] for e in episodes])
        ys = torch.tensor([e[1] for e in episodes])
        owners = torch.tensor([e[2] for e in episodes])
        before = accuracy(self.consolidated_logits, xs, ys)

        def loss(batch: object) -> Tensor:
            bx, by, bo = batch  # type: ignore[misc]
            with torch.no_grad():
                teacher = self.expert_logits(bx, bo)
            student = self.consolidated_logits(bx)
            return kl_to_teacher(student, teacher) + F.cross_entropy(student, by)

        batches: list[object] = []
        for _ in range(self.cfg.sleep_epochs):
            for part in self.buffer.batches(self.cfg.batch):
                batches.append((torch.stack([e[0] for e in part]), torch.tensor([e[1] for e in part]),
                                torch.tensor([e[2] for e in part])))
        distill(params, batches, loss, self.cfg.sleep_lr, self.ewc)
        after = accuracy(self.consolidated_logits, xs, ys)
        ratio = (before - after) / before if before > 0 else 0.0
        if ratio > self.cfg.forgetting_bound:
            self.pool.load_consolidated(before_state)
            self.events.append(f"sleep rolled back: buffer accuracy {before:.3f} -> {after:.3f}")
        else:
            self.events.append(f"sleep kept: buffer accuracy {before:.3f} -> {after:.3f}")
            fisher = fisher_diagonal(params, batches[: max(1, len(batches) // self.cfg.sleep_epochs)],
                                     lambda b: F.cross_entropy(self.consolidated_logits(b[0]), b[1]))  # type: ignore[index]
            if self.ewc is None:
                self.ewc = EWC(params, fisher, self.cfg.sleep_ewc_strength)
            else:
                self.ewc.absorb(params, fisher)
        self.softmax.fit(xs, owners)
        self.kwta.fit(xs, owners)

    def predict(self, how: str) -> Callable[[Tensor], Tensor]:
        slots = self.pool.slots()

        def run(x: Tensor) -> Tensor:
            if how == "consolidated":
                return self.consolidated_logits(x)
            if how == "keys":
                w = self.keys.weights(x, slots)
            else:
                gate = self.softmax if how == "softmax" else self.kwta
                w = gate.weights(x)[:, slots]
            with self.pool.routing(w, slots, consolidated=0.0):
                return self.model(x)

        return run


def run_cls(cfg: ContinualConfig, seed: int, data: tuple[Tensor, Tensor, Tensor, Tensor]
            ) -> tuple[dict[str, list[list[float]]], list[str]]:
    x_tr, y_tr, x_te, y_te = data
    learner = CLSLearner(cfg, seed)
    forms = {"cls": "keys", "cls_softmax": "softmax", "cls_kwta": "kwta", "cls_consolidated": "consolidated"}
    matrices: dict[str, list[list[float]]] = {arm: [] for arm in forms}
    for task in TASKS:
        rows = task_rows(y_tr, task)
        learner.learn(x_tr[rows], y_tr[rows])
        learner.sleep()
        for arm, how in forms.items():
            predict = learner.predict(how)
            matrices[arm].append([accuracy(predict, x_te[task_rows(y_te, t)], y_te[task_rows(y_te, t)])
                                  for t in TASKS])
    return matrices, learner.events


# --- the run -----------------------------------------------------------------------------------
def run_continual(cfg: ContinualConfig | None = None, echo: Callable[[str], Any] = print,
                  threads: int | None = None) -> ContinualReport:
    cfg = cfg or ContinualConfig()
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    per_seed: dict[str, list[dict[str, float]]] = {}
    first: dict[str, list[list[float]]] = {}
    events: list[str] = []
    for seed in cfg.seeds:
        data = digits_split(seed)
        matrices = {arm: run_baseline(arm, cfg, seed, data) for arm in ("naive", "ewc", "replay")}
        cls_matrices, cls_events = run_cls(cfg, seed, data)
        matrices.update(cls_matrices)
        if not first:
            first, events = matrices, cls_events
        for arm, matrix in matrices.items():
            per_seed.setdefault(arm, []).append(summary(matrix))
    arms = {arm: ArmResult(average_accuracy=_mean([s["average_accuracy"] for s in runs]),
                           backward_transfer=_mean([s["backward_transfer"] for s in runs]),
                           seeds=runs, matrix=first[arm])
            for arm, runs in per_seed.items()}
    targets = {"cls_backward_transfer_ge_-0.05": arms["cls"].backward_transfer >= -0.05,
               "cls_average_ge_naive_plus_0.15":
                   arms["cls"].average_accuracy >= arms["naive"].average_accuracy + 0.15}
    report = ContinualReport(arms=arms, targets=targets, seconds=time.perf_counter() - started,
                             threads=torch.get_num_threads(), events=events, config=cfg)
    _print(report, echo)
    return report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _print(report: ContinualReport, echo: Callable[[str], Any]) -> None:
    echo(f"digits, 5 tasks of 2 classes, protocol: {report.protocol}; seeds {report.config.seeds}")
    echo(f"{'arm':<18}{'avg accuracy':>14}{'backward transfer':>20}")
    for arm, r in report.arms.items():
        echo(f"{arm:<18}{r.average_accuracy:>14.3f}{r.backward_transfer:>20.3f}")
    for name, ok in report.targets.items():
        echo(f"{'PASS' if ok else 'MISS'} {name}")
    echo(f"{report.seconds:.1f} s on {report.threads} thread(s)")
