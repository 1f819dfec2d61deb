"""Atomic file writes: a file is either its old version or its new one, never half of each.

Data is written to a temporary file in the same folder, flushed to disk, and renamed over the
target (``os.replace`` is atomic on POSIX and Windows); the folder is then synced so the rename
itself survives a power cut. A kill mid-write leaves only a hidden temporary file, which
``remove_stale_temps`` clears on the next start.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

TEMP_SUFFIX = ".tmp"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def fsync_dir(folder: Path) -> None:
    """Make a rename durable where the platform allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes | np.ndarray, sync_dir: bool = True) -> None:
    """Replace ``target`` with ``data`` atomically (see the module docstring)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)


def remove_stale_temps(target: Path) -> int:
    """Delete temporary files an interrupted ``write_atomic(target, ...)`` left; returns how many."""
    removed = 0
    if target.parent.is_dir():
        for stale in target.parent.glob(f"{_temp_prefix(target)}*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed
