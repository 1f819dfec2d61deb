"""The test suite's own set-up: pytest-xdist's workers each keep to their share of the CPUs."""

from __future__ import annotations

import os

import pytest

from app.runtimes.llamacpp import physical_cores


def test_each_worker_sizes_the_models_threads_to_its_own_share_of_the_cpus() -> None:
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if count < 2:
        pytest.skip("the tests run in one process here: there is nothing to share")
    mine = os.sched_getaffinity(0)
    assert 1 <= len(mine) <= max(1, (os.cpu_count() or 1) // count + 1)
    assert physical_cores() <= len(mine)  # llama.cpp's threads, and every process a test starts


def test_a_process_started_for_the_browser_may_use_every_cpu() -> None:
    import subprocess
    import sys

    from tests.worker_cpus import EVERY_CPU, every_cpu

    probe = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    before = os.sched_getaffinity(0)
    with every_cpu():
        started = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    assert started == str(sorted(EVERY_CPU))
    assert os.sched_getaffinity(0) == before  # the worker itself keeps to its share
