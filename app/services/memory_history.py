"""What the CLS engine's memory did over time, for the Memory tab: its experts (how many, how many
not yet consolidated, against the pool's capacity), each document's routing (novelty, gate
entropy), growth and pruning with their reasons, the sleep pressure and its parts, and every
sleep's result with its probe figures.

Read from the store only (the event log, the pressure log), so it shows what every process on the
data folder did, across restarts, without loading the engine or its model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from store.cls_episodes import ClsEpisodeStore, ClsEvent
from store.database import Database
from store.sleep_pressure import PressureReading, SleepPressureLog

ENGINE = "cls"
ROUTED = ("grow", "route")  # a document learned: into a new expert, or its nearest
SLEPT = ("sleep", "rollback", "interrupted")
SleepOutcome = Literal["kept", "rolled back", "cut short"]
OUTCOMES: dict[str, SleepOutcome] = {"sleep": "kept", "rollback": "rolled back", "interrupted": "cut short"}


class Routed(BaseModel):
    """One document learned by day."""

    ts: str
    kind: str  # grow | route
    slot: int | None
    novelty: float | None
    gate_entropy: float | None
    reason: str


class PoolChange(BaseModel):
    """An expert added or recycled."""

    ts: str
    kind: str  # grow | prune
    slot: int | None
    reason: str


class SleepResult(BaseModel):
    ts: str
    outcome: SleepOutcome
    reason: str
    drift: float | None = None
    forgetting: float | None = None
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    steps: int | None = None


class MemoryHistory(BaseModel):
    enabled: bool  # the cls engine is among the enabled engines
    threshold: float | None = None  # the sleep pressure that starts an idle sleep
    pressure: list[PressureReading] = []  # oldest first; figures hold experts, unconsolidated, capacity
    routed: list[Routed] = []
    pool: list[PoolChange] = []
    sleeps: list[SleepResult] = []

    @property
    def empty(self) -> bool:
        return not (self.pressure or self.routed or self.pool or self.sleeps)


def _number(figures: dict[str, Any], key: str) -> float | None:
    value = figures.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _sleep(event: ClsEvent) -> SleepResult:
    f = event.figures
    steps = f.get("steps")
    return SleepResult(ts=event.created_at, outcome=OUTCOMES[event.kind], reason=event.reason,
                       drift=_number(f, "drift"), forgetting=_number(f, "forgetting"),
                       perplexity_before=_number(f, "perplexity_before"),
                       perplexity_after=_number(f, "perplexity_after"),
                       steps=int(steps) if isinstance(steps, (int, float)) else None)


def memory_history(db: Database, enabled: bool, threshold: float | None, limit: int = 2000) -> MemoryHistory:
    """The CLS engine's history (the latest ``limit`` events and pressure readings)."""
    if not enabled:
        return MemoryHistory(enabled=False)
    events = ClsEpisodeStore(db).events(limit)
    return MemoryHistory(
        enabled=True, threshold=threshold, pressure=SleepPressureLog(db).history(ENGINE, limit),
        routed=[Routed(ts=e.created_at, kind=e.kind, slot=e.slot, novelty=_number(e.figures, "novelty"),
                       gate_entropy=_number(e.figures, "gate_entropy"), reason=e.reason)
                for e in events if e.kind in ROUTED],
        pool=[PoolChange(ts=e.created_at, kind=e.kind, slot=e.slot, reason=e.reason)
              for e in events if e.kind in ("grow", "prune")],
        sleeps=[_sleep(e) for e in events if e.kind in SLEPT])
