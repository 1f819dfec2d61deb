"""The app's plots (matplotlib figures gradio draws): benches over their runs, and what went into
the weights over time. The figures are drawn here; the data they show comes from app/."""

from __future__ import annotations

from app.core import BENCHES, BenchRun, WeightsHistory
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
