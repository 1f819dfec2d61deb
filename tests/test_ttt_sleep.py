"""Sleep's plan and its report (the training itself runs on the real model in test_ttt_engine)."""

from __future__ import annotations

import pytest

from engines.ttt.sleep import SleepRun, plan


def test_each_pass_takes_every_batch_once_in_a_new_order_and_the_budget_cuts_it() -> None:
    order = plan(5, 3, seed=7)
    passes = [order[i:i + 5] for i in range(0, 15, 5)]
    assert all(sorted(p) == list(range(5)) for p in passes) and len({tuple(p) for p in passes}) > 1
    assert plan(5, 3, seed=7) == order  # the same state sleeps the same way
    assert plan(5, 3, seed=7, steps=4) == order[:4]


def test_the_report_counts_whole_passes_only() -> None:
    losses = [(4.0, 0.1), (2.0, 0.3), (1.0, 0.2), (0.5, 0.2), (9.0, 0.2)]
    full = SleepRun(losses=losses[:4], planned=6, batches=2).details()
    assert full["epochs_done"] == 2 and full["loss_first_epoch"] == 3.0 and full["loss_last_epoch"] == 0.75
    assert full["held_mean"] == pytest.approx(0.2)
    partial = SleepRun(losses=losses, planned=6, batches=2).details()  # the third pass is unfinished
    assert partial["epochs_done"] == 2 and partial["loss_last_epoch"] == 0.75 and partial["steps"] == 5
    one = SleepRun(losses=losses[:3], planned=6, batches=2).details()
    assert one["epochs_done"] == 1 and one["loss_first_epoch"] == 3.0 and one["loss_last_epoch"] is None
    none = SleepRun(losses=[], planned=6, batches=2).details()
    assert none["epochs_done"] == 0 and none["loss_first_epoch"] is None and none["held_mean"] is None
