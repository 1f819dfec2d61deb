"""Shared test helpers: open a real Engram on the test's temporary folders, wait for conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.core import Engram
from app.settings import load_settings


def open_engram(embedder=None, **overrides: Any) -> Engram:
    return Engram(load_settings(cli={k: str(v) for k, v in overrides.items()}), embedder=embedder)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until ``condition()`` is truthy; fail with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
