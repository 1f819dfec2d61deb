"""Where a running Engram listens: ``DATA_DIR/running.json``, so the command line can ask it.

``engram run`` writes the record atomically once its /v1 API answers and removes it at a clean
stop; a crash leaves it behind, so readers check the process (``app/instance.py``). It holds no
secret: a client reads the API key from its own settings, as the server does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ValidationError

from store.atomic import write_atomic

log = logging.getLogger(__name__)

RUNNING_FILE = "running.json"


class RunningRecord(BaseModel):
    pid: int
    pid_started: float
    """The process's start time (seconds since the epoch): a pid reused by another process
    after a crash is not taken for Engram."""
    url: str
    """The /v1 API's base URL, on a loopback address."""
    data_dir: str
    started: str
    """When it began serving (ISO 8601, UTC)."""


def running_path(root: Path) -> Path:
    return Path(root) / RUNNING_FILE


def write_running(root: Path, record: RunningRecord) -> None:
    write_atomic(running_path(root), record.model_dump_json(indent=2).encode())


def read_running(root: Path) -> RunningRecord | None:
    """The record, or None when there is none or it cannot be read (half a record never is:
    it is written atomically)."""
    try:
        return RunningRecord.model_validate(json.loads(running_path(root).read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        log.debug("%s is unreadable: %s", running_path(root), exc)
        return None


def remove_running(root: Path, pid: int | None = None) -> bool:
    """Remove the record (only when it names ``pid``, if given: another Engram started on the same
    data folder since keeps its own); True when it was removed."""
    if pid is not None:
        record = read_running(root)
        if record is not None and record.pid != pid:
            return False
    try:
        running_path(root).unlink()
        return True
    except FileNotFoundError:
        return False
