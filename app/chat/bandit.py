"""The meta-controller's learning side: a contextual bandit over the rules' choices, and its reward.

**Arms** are the decisions the rules and ``off`` make, made choosable for every question:

- ``exit``: answer from the conversation alone (the rules' choice for small talk);
- ``retrieve``: passages and playbook, no learned weights, no critic;
- ``retrieve_critic``: the same, checked by the critic;
- ``routed``: learned weights only where their engine routes the question, critic (the rules'
  choice for every other question);
- ``all``: every learned weight, critic (``controller = off``).

**Context** (``FEATURES``): the question's small-talk share and the rules' verdict, the best
passage's cosine similarity, the largest share an engine routed to its learned weights, whether
any learned weights exist, the question's length and whether it follows earlier turns. The
engines are consulted first (retrieval is milliseconds); the costly parts (passages in the
prompt, the torch model, the critic) follow the arm.

**Policy**: epsilon-greedy over per-arm ridge regressions (``models.linear_bandit``): the rules'
arm until it has ``controller_warmup`` samples, then the arm predicted best; each
decision logs its propensity. **Reward** (HMST): ``w_acc * accuracy - w_lat * seconds -
w_compute * thousand tokens + w_cal * calibration``, where calibration is 1 - |shown confidence -
accuracy| (the critic's supported share when it ran; an unqualified answer claims 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, Field

from engines.base import Contribution
from models.linear_bandit import LinearBandit, sample

ARMS = ("exit", "retrieve", "retrieve_critic", "routed", "all")
FEATURES = ("bias", "small_talk_share", "small_talk", "top_similarity", "routed_share", "has_learned",
            "length", "follow_up")
LENGTH_WORDS = 30
RIDGE = 1.0
_WORD = re.compile(r"[a-z']+")


class RewardWeights(BaseModel):
    accuracy: float = 1.0
    latency: float = 0.05
    compute: float = 0.1
    calibration: float = 0.2


class Choice(BaseModel):
    """The arm a policy chose, with the probability it had (the propensity) and why."""

    arm: str
    propensity: float = Field(gt=0.0, le=1.0)
    probabilities: dict[str, float]
    chosen_by: str


def context(question: str, contributions: list[Contribution], follow_up: bool,
            small_talk_words: frozenset[str], small_talk: bool) -> list[float]:
    """The features (``FEATURES``) of one question once the engines contributed."""
    words = _WORD.findall(question.lower())
    share = sum(w in small_talk_words for w in words) / len(words) if words else 0.0
    top = max((p.score for c in contributions for p in c.passages), default=0.0)
    routed = max((float(c.meta.get("routed_share") or 0.0) for c in contributions), default=0.0)
    learned = any(c.learned_states for c in contributions)
    return [1.0, round(share, 4), float(small_talk), round(float(top), 4), round(routed, 4), float(learned),
            round(min(len(words), LENGTH_WORDS) / LENGTH_WORDS, 4), float(follow_up)]


def new_bandit() -> LinearBandit:
    return LinearBandit(ARMS, len(FEATURES), RIDGE)


def load_bandit(model: dict | None) -> LinearBandit:
    """The stored model, or a fresh one (also when the stored one has other arms or features)."""
    if model is None or model.get("arms") != list(ARMS) or model.get("dim") != len(FEATURES):
        return new_bandit()
    return LinearBandit.from_json(model)


class BanditPolicy:
    """Chooses arms epsilon-greedily from the stored model; seeded, so a run can be repeated."""

    def __init__(self, model: Callable[[], dict | None], seed: int = 0) -> None:
        self.model = model  # the stored model JSON, read at each choice: the worker updates it
        self.rng = np.random.default_rng(seed)

    def choose(self, x: list[float], rules_arm: str, epsilon: float, warmup: int) -> Choice:
        """An arm for context ``x``: with probability ``epsilon`` any arm, else the greedy one (the
        rules' arm until it has ``warmup`` samples)."""
        bandit = load_bandit(self.model())
        probs = bandit.policy(x, rules_arm, warmup, epsilon)
        k = sample(probs, self.rng)
        greedy = bandit.greedy(x, rules_arm, warmup)
        arm = ARMS[k]
        how = ("exploring" if arm != greedy else "rules' prior (too little data)" if greedy == rules_arm
               and bandit.count[bandit.index(rules_arm)] < warmup else "best predicted reward")
        return Choice(arm=arm, propensity=float(probs[k]), chosen_by=f"bandit: {how}",
                      probabilities={a: round(float(p), 4) for a, p in zip(ARMS, probs)})


def calibration(confidence: float, accuracy: float) -> float:
    return 1.0 - abs(confidence - accuracy)


def reward(accuracy: float, seconds: float, compute: float, confidence: float,
           weights: RewardWeights) -> tuple[float, dict[str, float]]:
    """The HMST reward of one answer and its parts (``compute``: thousands of model tokens)."""
    cal = calibration(confidence, accuracy)
    value = (weights.accuracy * accuracy - weights.latency * seconds - weights.compute * compute
             + weights.calibration * cal)
    parts = {"accuracy": round(accuracy, 4), "latency_s": round(seconds, 3), "compute": round(compute, 4),
             "confidence": round(confidence, 4), "calibration": round(cal, 4)}
    return round(value, 4), parts
