"""The training steps of metrics.jsonl mirrored to Weights & Biases, when the person wants it.

wandb is never required: the package is looked up without importing it (``importlib.util.find_spec``)
and imported only when the first record arrives, so nothing of it loads on a machine that lacks it
or under ``off``. ``offline`` (what ``auto`` means when wandb is installed) writes the run under
DATA_DIR/wandb and never touches the network; only ``online`` sends it to wandb's servers. A
failure in wandb stops the mirror (warned once) and never a training step: metrics.jsonl is the
record, this a copy.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

WandbMode = Literal["auto", "off", "offline", "online"]


def installed() -> bool:
    """Whether the wandb package can be imported here (it is not imported)."""
    try:
        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        return False


def resolved(mode: WandbMode) -> Literal["off", "offline", "online"]:
    """What the setting means on this machine: ``auto`` is offline with wandb installed, else off;
    an explicit offline or online without wandb is off (warned)."""
    if mode == "off":
        return "off"
    if not installed():
        if mode != "auto":
            log.warning("metrics.wandb is %s but the wandb package is not installed: the training steps "
                        "go to metrics.jsonl only (pip install wandb to mirror them)", mode)
        return "off"
    return "offline" if mode == "auto" else mode


class WandbMirror:
    """One wandb run per process, started at the first record (``dir``: the data folder, so wandb
    writes DATA_DIR/wandb)."""

    def __init__(self, data_dir: Path, mode: WandbMode = "auto", project: str = "engram") -> None:
        self.data_dir, self.project = Path(data_dir), project
        self.mode = resolved(mode)
        self._run: Any = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def log(self, record: dict[str, Any]) -> None:
        """The record as metrics.jsonl has it (one training step)."""
        if not self.active:
            return
        with self._lock:
            try:
                if self._run is None:
                    self._run = self._start()
                self._run.log(dict(record))
            except Exception:
                log.warning("wandb logging failed; the training steps go to metrics.jsonl only from now on",
                            exc_info=True)
                self.mode, self._run = "off", None

    def _start(self) -> Any:
        wandb = importlib.import_module("wandb")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return wandb.init(project=self.project, mode=self.mode, dir=str(self.data_dir), job_type="engram")

    def close(self) -> None:
        """End the run (its files complete); a later record starts another."""
        with self._lock:
            run, self._run = self._run, None
        if run is not None:
            try:
                run.finish()
            except Exception:
                log.warning("wandb could not finish its run", exc_info=True)
