"""The meta-controller's decision log and its bandit's learned model.

One row per answer: the context the controller saw, the arm it chose, that arm's probability
under the choosing policy (the propensity; 1.0 for the deterministic rules) and, once evaluated,
the reward with its parts and where its accuracy came from (``self``: the critic; ``feedback``:
the person). The bandit's model (plain JSON numbers) sits in ``state`` and is written in the same
transaction as the reward it learned, so a crash never counts a reward twice or loses one.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from store.database import Database

MODEL_KEY = "controller.bandit"


class LoggedDecision(BaseModel):
    id: int
    message_id: int | None
    policy: str
    arm: str
    rules_arm: str
    propensity: float
    context: list[float]
    probabilities: dict[str, float] = Field(default_factory=dict)
    reward: float | None = None
    reward_parts: dict[str, Any] | None = None
    reward_source: str | None = None
    learned_reward: float | None = Field(None, description="The reward the model holds for it "
                                         "(None: not learned yet).")
    created_at: str


def _row(row: Any) -> LoggedDecision:
    data = dict(row)
    data.pop("rewarded_at", None)
    data["context"] = json.loads(data["context"])
    data["probabilities"] = json.loads(data["probabilities"])
    data["reward_parts"] = json.loads(data["reward_parts"]) if data["reward_parts"] else None
    return LoggedDecision(**data)


class ControllerDecisionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def log(self, message_id: int, policy: str, arm: str, rules_arm: str, propensity: float,
            context: list[float], probabilities: dict[str, float]) -> int:
        cur = self.db.execute(
            "INSERT INTO controller_decisions (message_id, policy, arm, rules_arm, propensity, context, "
            "probabilities) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (message_id, policy, arm, rules_arm, propensity, json.dumps(context), json.dumps(probabilities)))
        return int(cur.lastrowid)

    def for_message(self, message_id: int) -> LoggedDecision | None:
        row = self.db.conn.execute("SELECT * FROM controller_decisions WHERE message_id = ?",
                                   (message_id,)).fetchone()
        return _row(row) if row else None

    def all(self, limit: int = 10_000) -> list[LoggedDecision]:
        """The newest ``limit`` decisions, oldest first."""
        rows = self.db.query("SELECT * FROM (SELECT * FROM controller_decisions ORDER BY id DESC LIMIT ?) "
                             "ORDER BY id", (limit,))
        return [_row(r) for r in rows]

    def model(self) -> dict | None:
        raw = self.db.scalar("SELECT value FROM state WHERE key = ?", (MODEL_KEY,))
        return None if raw is None else json.loads(raw)

    def record_reward(self, decision_id: int, reward: float, parts: dict[str, Any], source: str,
                      model: dict | None) -> None:
        """The reward of a decision and, when the bandit learned it, the model that now holds it
        (``learned_reward`` = ``reward``), together."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE controller_decisions SET reward = ?, reward_parts = ?, reward_source = ?, "
                "learned_reward = CASE WHEN ? THEN ? ELSE learned_reward END, "
                "rewarded_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE id = ?",
                (reward, json.dumps(parts), source, model is not None, reward, decision_id))
            if model is not None:
                conn.execute("INSERT INTO state (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                             (MODEL_KEY, json.dumps(model)))
