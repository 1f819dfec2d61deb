"""metrics.jsonl under the data folder: one JSON line per training step (which engine, what
phase, loss, expert), appended, for plots and for anyone who wants the raw curve."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

FILE = "metrics.jsonl"


class MetricsLog:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"ts": time.time(), **record})
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
