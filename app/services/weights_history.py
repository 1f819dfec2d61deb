"""What went into the model's weights over time: the documents each weight-writing engine learned,
and every sleep with its outcome (kept, rolled back, cut short, nothing to do).

Read from the episode log, so it shows what happened in every process on the data folder (the app,
a headless run, the CLI), across restarts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from store import activity
from store.database import Database
from store.episodes import EpisodeStore, LearnedEpisode

Outcome = Literal["kept", "rolled back", "cut short", "nothing to do"]


class SleepPoint(BaseModel):
    """One sleep as the person reads it."""

    ts: str
    outcome: Outcome
    why: str


class WeightsHistory(BaseModel):
    learned: list[LearnedEpisode]  # oldest first
    sleeps: list[SleepPoint]  # oldest first


def sleep_point(sleep: activity.SleepEpisode, engines: set[str]) -> SleepPoint:
    """Kept when a weight-writing engine changed its weights; rolled back when one undid its
    work (the forgetting probe); otherwise cut short or nothing to do."""
    reports = [r for r in sleep.reports if r.get("engine") in engines]
    reasons = [str((r.get("details") or {}).get("reason", "")) for r in reports]
    if any(r.get("changed") for r in reports):
        outcome: Outcome = "kept"
    elif any(reason.startswith("rolled back") for reason in reasons) or any(
            (r.get("details") or {}).get("rolled_back") for r in reports):
        outcome = "rolled back"
    elif sleep.interrupted:
        outcome = "cut short"
    else:
        outcome = "nothing to do"
    why = "; ".join(r for r in reasons if r) or ("new work or a question came" if sleep.interrupted else "")
    return SleepPoint(ts=sleep.ts, outcome=outcome, why=why)


def weights_history(db: Database, engines: list[str]) -> WeightsHistory:
    """The history of ``engines`` (the weight-writing ones)."""
    named = set(engines)
    return WeightsHistory(learned=EpisodeStore(db).learned(engines),
                          sleeps=[sleep_point(s, named) for s in reversed(activity.sleeps(db))])
