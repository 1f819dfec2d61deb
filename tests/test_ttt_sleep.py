"""Sleep's plan, its report and the probe's verdict (the training itself runs on the real model in test_ttt_engine)."""

from __future__ import annotations

import pytest

from engines.ttt.sleep import SleepRun, plan, probe_keeps


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


def test_the_probe_keeps_a_sleep_unless_it_goes_past_the_higher_of_before_and_the_original() -> None:
    assert probe_keeps(20.45, 19.98, 19.5, 0.01)  # a sleep that lowers it (the 120-document run)
    # learning's replay had pushed the probe below the original's: a sleep may bring it back
    # (a speed-first run on the small set was rolled back for this: 18.324 -> 18.626)
    assert probe_keeps(18.324, 18.626, 22.75, 0.01)
    assert probe_keeps(18.0, 19.3 * 1.01, 19.3, 0.01) and not probe_keeps(18.0, 19.3 * 1.011, 19.3, 0.01)
    assert not probe_keeps(20.0, 20.3, 19.0, 0.01)  # above both by more than 1%
    assert not probe_keeps(20.0, float("nan"), 19.0, 0.01) and not probe_keeps(20.0, float("inf"), 19.0, 0.01)
    assert not probe_keeps(float("inf"), float("inf"), 19.0, 0.01)  # a non-finite probe never passes
    assert not probe_keeps(20.0, 20.3, float("nan"), 0.01) and not probe_keeps(20.0, 20.3, float("inf"), 0.01)
    assert probe_keeps(float("nan"), 19.1, 19.0, 0.01)  # the finite one of the two decides
    assert probe_keeps(None, None, None, 0.01)  # no probe (ttt.sleep_probe_tokens = 0)
