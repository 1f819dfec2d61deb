"""A contextual bandit over a few arms: one ridge regression of reward on context per arm,
trained by importance-weighted regression from logged decisions, acting epsilon-greedy.

Logged data are tuples (context x, chosen arm a, reward r, propensity p = P(a | x) under the
policy that chose). Fitting each arm's regression with weight 1/p on its samples corrects for
that policy having chosen some arms more often in some contexts (importance-weighted
regression; Bietti, Agarwal & Langford 2021, "A contextual bandit bake-off"); ``ips_value``
estimates what any other policy would have earned on the same log (inverse propensity scoring:
mean of r * pi(a | x) / p). For arm a, with d features:

    A_a = lam * I + sum_i w_i x_i x_i^T      (d, d)
    b_a = sum_i w_i r_i x_i                   (d,)
    theta_a = A_a^-1 b_a                      predicted reward theta_a . x

Pure numpy: no I/O. ``to_json``/``from_json`` give plain lists for the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_WEIGHT = 20.0
"""Largest importance weight (1/p) one sample gets: clipping bounds the variance a rare
exploratory choice would otherwise bring."""


class LinearBandit:
    """Per-arm weighted ridge regressions of reward on context."""

    def __init__(self, arms: Sequence[str], dim: int, ridge: float = 1.0) -> None:
        self.arms = list(arms)
        self.dim = dim
        self.ridge = ridge
        self.a = np.stack([np.eye(dim) * ridge for _ in self.arms])  # (K, d, d)
        self.b = np.zeros((len(self.arms), dim))  # (K, d)
        self.weight = np.zeros(len(self.arms))  # (K,) importance weight each arm has seen
        self.count = np.zeros(len(self.arms))  # (K,) samples each arm has seen

    def index(self, arm: str) -> int:
        return self.arms.index(arm)

    def update(self, arm: str, x: Sequence[float], reward: float, propensity: float) -> None:
        """Learn one logged decision, weighted by 1 / propensity (clipped at MAX_WEIGHT)."""
        k, v, w = self.index(arm), self._vector(x), importance_weight(propensity)
        self.a[k] += w * np.outer(v, v)
        self.b[k] += w * reward * v
        self.weight[k] += w
        self.count[k] += 1

    def revise(self, arm: str, x: Sequence[float], old: float, new: float, propensity: float) -> None:
        """Replace a learned sample's reward (feedback arriving after self-evaluation): A is
        unchanged, b moves by w * (new - old) * x, exactly as if the sample had come with ``new``."""
        k, v = self.index(arm), self._vector(x)
        self.b[k] += importance_weight(propensity) * (new - old) * v

    def predict(self, x: Sequence[float]) -> np.ndarray:
        """Predicted reward of every arm in context ``x``: (K,)."""
        v = self._vector(x)
        theta = np.linalg.solve(self.a, self.b[..., None])[..., 0]  # (K, d)
        return theta @ v

    def greedy(self, x: Sequence[float], prior: str, min_samples: int) -> str:
        """The arm predicted best among those with at least ``min_samples`` samples; ``prior`` (the
        rules' arm) until it has that many itself, and wherever nothing else qualifies."""
        known = [k for k in range(len(self.arms)) if self.count[k] >= min_samples]
        if self.index(prior) not in known:
            return prior
        scores = self.predict(x)
        return self.arms[max(known, key=lambda k: (scores[k], self.arms[k] == prior))]

    def policy(self, x: Sequence[float], prior: str, min_samples: int, epsilon: float) -> np.ndarray:
        """Epsilon-greedy probabilities over the arms (sum 1): 1 - epsilon on the greedy arm, the
        rest spread evenly over all arms."""
        probs = np.full(len(self.arms), epsilon / len(self.arms))
        probs[self.index(self.greedy(x, prior, min_samples))] += 1.0 - epsilon
        return probs

    def _vector(self, x: Sequence[float]) -> np.ndarray:
        v = np.asarray(x, dtype=np.float64)
        if v.shape != (self.dim,):
            raise ValueError(f"a context has {self.dim} features, got shape {v.shape}")
        return v

    def to_json(self) -> dict:
        return {"arms": self.arms, "dim": self.dim, "ridge": self.ridge, "a": self.a.tolist(),
                "b": self.b.tolist(), "weight": self.weight.tolist(), "count": self.count.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> LinearBandit:
        bandit = cls(data["arms"], int(data["dim"]), float(data["ridge"]))
        bandit.a, bandit.b = np.asarray(data["a"], dtype=np.float64), np.asarray(data["b"], dtype=np.float64)
        bandit.weight = np.asarray(data["weight"], dtype=np.float64)
        bandit.count = np.asarray(data["count"], dtype=np.float64)
        return bandit


def importance_weight(propensity: float) -> float:
    """1 / propensity, clipped to MAX_WEIGHT; a propensity outside (0, 1] is a logging bug."""
    if not 0.0 < propensity <= 1.0:
        raise ValueError(f"a propensity is a probability in (0, 1], got {propensity}")
    return min(1.0 / propensity, MAX_WEIGHT)


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One arm index drawn from ``probs``."""
    return int(rng.choice(len(probs), p=probs / probs.sum()))


def ips_value(rewards: Sequence[float], propensities: Sequence[float], target: Sequence[float]) -> float:
    """Inverse propensity estimate of a policy's mean reward on logged decisions: mean of
    r_i * target_i / p_i, where target_i is the probability the evaluated policy gives the logged
    arm in the logged context (unbiased where every p_i > 0 and the log covers that policy)."""
    r, p, t = (np.asarray(v, dtype=np.float64) for v in (rewards, propensities, target))
    if len(r) == 0:
        raise ValueError("no logged decisions to estimate from")
    return float(np.mean(r * t / p))
