"""What went into the model's weights over time: the documents each weight-writing engine learned,
and every sleep with its outcome (kept, rolled back, cut short, nothing to do).

Read from the episode log, so it shows what happened in every process on the data folder (the app,
a headless run, the CLI), across restarts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from store import activity
from store.database import Database
from store.episodes import EpisodeStore, LearnedEpisode

Outcome = Literal["kept", "rolled back", "cut short", "nothing to do"]
OUTCOME_STYLE: dict[str, tuple[str, str]] = {  # marker and colour in the plot
    "kept": ("^", "tab:green"), "rolled back": ("X", "tab:red"),
    "cut short": ("v", "tab:orange"), "nothing to do": ("o", "tab:gray"),
}


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
    elif any(reason.startswith("rolled back") for reason in reasons):
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


def _moment(ts: str) -> datetime:
    """An SQLite UTC timestamp in this computer's time zone."""
    return datetime.fromisoformat(ts.replace("T", " ")).replace(tzinfo=timezone.utc).astimezone()


def weights_figure(history: WeightsHistory):
    """A matplotlib figure: documents learned into the weights over time (a rising step line),
    with each sleep marked by its outcome. None when nothing happened yet."""
    if not history.learned and not history.sleeps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8.5, 3.0))
    times = [_moment(e.ts) for e in history.learned]
    total = len(times)
    if times:  # the line runs on to the latest event: the count holds until something changes it
        end = max([*times, *(_moment(s.ts) for s in history.sleeps)])
        ax.step([*times, end], [*range(1, total + 1), total], where="post", color="tab:blue",
                label="documents learned")
    for outcome, (marker, colour) in OUTCOME_STYLE.items():
        at = [_moment(s.ts) for s in history.sleeps if s.outcome == outcome]
        if at:
            level = [sum(t <= when for t in times) for when in at]
            ax.scatter(at, level, marker=marker, color=colour, s=60, zorder=3, label=f"sleep: {outcome}")
    ax.set_ylabel("documents in the weights", fontsize=8)
    ax.set_ylim(bottom=0, top=max(total, 1) * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    plt.close(fig)  # gradio draws it from the object; pyplot need not keep it
    return fig
