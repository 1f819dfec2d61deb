"""metrics.jsonl under the data folder: one JSON line per training step (which engine, what
phase, loss, expert), appended, for plots and for anyone who wants the raw curve; the same records
also go to a mirror when one is given (``store.wandb_mirror``: Weights & Biases, never required)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.wandb_mirror import WandbMirror

FILE = "metrics.jsonl"


class MetricsLog:
    def __init__(self, data_dir: Path, mirror: WandbMirror | None = None) -> None:
        self.path = Path(data_dir) / FILE
        self.mirror = mirror
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        stamped = {"ts": time.time(), **record}
        line = json.dumps(stamped)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        if self.mirror is not None:
            self.mirror.log(stamped)

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
