"""The app's plots (matplotlib figures gradio draws): benches over their runs, what went into
the weights over time, and the CLS engine's memory. The figures are drawn here; the data they
show comes from app/."""

from __future__ import annotations

from app.core import BENCHES, BenchRun, MemoryHistory, WeightsHistory
from ui.formatting import local_moment

OUTCOME_STYLE: dict[str, tuple[str, str]] = {  # marker and colour in the plot
    "kept": ("^", "tab:green"), "rolled back": ("X", "tab:red"),
    "cut short": ("v", "tab:orange"), "nothing to do": ("o", "tab:gray"),
}


def bench_history_figure(runs: list[BenchRun]):
    """A matplotlib figure: each bench's headline figure over its finished runs, one panel each
    (None when no run has a headline yet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_bench: dict[str, list[BenchRun]] = {}
    for run in runs:
        if run.state == "done" and run.headline is not None:
            by_bench.setdefault(run.bench, []).append(run)
    if not by_bench:
        return None
    names = [n for n in BENCHES if n in by_bench]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        done = by_bench[name]
        for i, size in enumerate(dict.fromkeys(r.size for r in done)):
            points = [(n, r.headline) for n, r in enumerate(done, 1) if r.size == size]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{i}", label=size)
        ax.set_title(f"{BENCHES[name].title}: {BENCHES[name].headline_label}", fontsize=8.5)
        ax.set_xlabel("run", fontsize=8)
        ax.set_xticks(range(1, len(done) + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="size", title_fontsize=7)
    fig.tight_layout()
    plt.close(fig)  # gradio draws it from the object; pyplot need not keep it
    return fig


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
    times = [local_moment(e.ts) for e in history.learned]
    total = len(times)
    if times:  # the line runs on to the latest event: the count holds until something changes it
        end = max([*times, *(local_moment(s.ts) for s in history.sleeps)])
        ax.step([*times, end], [*range(1, total + 1), total], where="post", color="tab:blue",
                label="documents learned")
    for outcome, (marker, colour) in OUTCOME_STYLE.items():
        at = [local_moment(s.ts) for s in history.sleeps if s.outcome == outcome]
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


def memory_figure(history: MemoryHistory):
    """A matplotlib figure of four panels: experts in the pool at each pressure reading (one per
    document learned and per sleep; growth and recycling marked where the count rose or fell),
    each document's novelty and gate entropy, the sleep pressure's parts against its threshold,
    and each sleep's drift and forgetting marked by outcome. None when nothing happened yet.
    Readings are numbered rather than timed: a day's changes often fall within seconds."""
    if history.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ((pool, routed), (pressure, sleeps)) = plt.subplots(2, 2, figsize=(10.5, 6.2))
    readings = history.pressure
    at = list(range(1, len(readings) + 1))
    held_to = [*at, len(readings) + 1]  # each reading holds until the next; the last one for a step

    def steps(values: list[float]) -> list[float]:
        return [*values, values[-1]]

    # expert utilisation: experts held and not yet consolidated, against the capacity
    if readings:
        held = [int(r.figures.get("experts", 0)) for r in readings]
        pool.step(held_to, steps(held), where="post", label="experts")
        pool.step(held_to, steps([r.figures.get("unconsolidated", 0) for r in readings]), where="post",
                  label="not consolidated", color="tab:purple")
        pool.axhline(readings[-1].figures.get("capacity", 0), color="gray", ls="--", lw=1, label="capacity")
        before = [0, *held[:-1]]
        for name, marker, colour, changed in (("grew", "^", "tab:green", lambda a, b: a > b),
                                              ("recycled", "x", "tab:red", lambda a, b: a < b)):
            points = [(x, h) for x, h, b in zip(at, held, before) if changed(h, b)]
            if points:
                pool.scatter([x for x, _ in points], [h for _, h in points], marker=marker, color=colour,
                             s=50, zorder=3, label=name)
    pool.set_title("Expert utilisation", fontsize=9)
    pool.set_ylim(bottom=0)

    # routing of each document learned: how new it was, how spread over experts
    n = range(1, len(history.routed) + 1)
    routed.plot(n, [r.novelty for r in history.routed], marker="o", label="novelty")
    routed.plot(n, [r.gate_entropy for r in history.routed], marker="s", label="gate entropy (nats)")
    routed.set_title("Each document learned", fontsize=9)
    routed.set_xlabel("document", fontsize=8)

    # sleep pressure: its three parts stacked, the threshold that starts an idle sleep
    if readings:
        parts = [[r.saturation for r in readings], [r.novelty for r in readings], [r.forgetting for r in readings]]
        pressure.stackplot(held_to, *[steps(p) for p in parts], labels=["saturation", "novelty", "forgetting"], alpha=0.7, step="post")
        if history.threshold is not None:
            pressure.axhline(history.threshold, color="black", ls="--", lw=1, label="threshold")
    pressure.set_title("Sleep pressure (saturation + novelty + forgetting)", fontsize=9)

    # sleeps: drift and forgetting of each, marked by what became of it
    if history.sleeps:
        probed = [(i, s) for i, s in enumerate(history.sleeps, 1) if s.drift is not None]  # not cut short
        sleeps.plot([i for i, _ in probed], [100 * s.drift for _, s in probed], color="tab:blue", lw=1,
                    label="drift %")
        sleeps.plot([i for i, _ in probed], [100 * (s.forgetting or 0.0) for _, s in probed], color="tab:brown",
                    lw=1, label="forgetting %")
        for outcome, (marker, colour) in OUTCOME_STYLE.items():
            at = [(i, s) for i, s in enumerate(history.sleeps, 1) if s.outcome == outcome]
            if at:
                sleeps.scatter([i for i, _ in at], [100 * (s.drift or 0.0) for _, s in at], marker=marker,
                               color=colour, s=60, zorder=3, label=outcome)
        sleeps.axhline(0, color="gray", lw=0.5)
    sleeps.set_title("Each sleep", fontsize=9)
    sleeps.set_xlabel("sleep", fontsize=8)
    for ax in (pool, pressure):
        ax.set_xlabel("reading (after each document learned and each sleep)", fontsize=8)
    for ax in (pool, routed, pressure, sleeps):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    plt.close(fig)  # gradio draws it from the object; pyplot need not keep it
    return fig
