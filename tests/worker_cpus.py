"""Each pytest-xdist worker (pyproject's addopts) keeps to its own share of the CPUs.

llama.cpp, torch and ONNX Runtime size their threads to the CPUs a process may run on, so a
worker and every process it starts stay on that share and the workers never oversubscribe the
cores (llama.cpp's threads wait for each other at every token: one thread too many makes decoding
many times slower). The browser is the exception: it is a user's, and gets every CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

EVERY_CPU = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()


def keep_to_this_workers_cpus() -> None:
    """Pin this worker to its share; nothing outside xdist or with fewer CPUs than workers."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if count < 2 or not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(EVERY_CPU)
    if len(cpus) < count:
        return
    index = int(worker[2:]) % count
    os.sched_setaffinity(0, cpus[index * len(cpus) // count:(index + 1) * len(cpus) // count])


@contextmanager
def every_cpu() -> Iterator[None]:
    """Processes started inside may run on every CPU (they inherit the starting thread's set)."""
    if not EVERY_CPU or not hasattr(os, "sched_setaffinity"):
        yield
        return
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, EVERY_CPU)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
