"""Sleep pressure over time (table from migration 012_sleep_pressure): one reading per change.

An engine that knows how much sleep it needs (``engines.cls``: its experts' saturation, the
novelty of what arrived since its last sleep, the forgetting its last probe measured) records a
reading whenever that changes; the sleep scheduler reads the latest, the Memory tab all of them.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from store.database import Database


class PressureReading(BaseModel):
    engine: str
    saturation: float = Field(ge=0.0, description="Share of expert capacity holding unconsolidated material.")
    novelty: float = Field(ge=0.0, description="Mean novelty of the documents learned since the last kept sleep.")
    forgetting: float = Field(ge=0.0, description="Forgetting ratio the last probe measured.")
    figures: dict[str, Any] = {}  # what the parts were computed from (experts, capacity, documents)
    created_at: str = ""

    @property
    def total(self) -> float:
        return self.saturation + self.novelty + self.forgetting


class SleepPressureLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, reading: PressureReading) -> None:
        self.db.execute("INSERT INTO sleep_pressure (engine, saturation, novelty, forgetting, total, figures) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (reading.engine, reading.saturation, reading.novelty, reading.forgetting,
                         reading.total, json.dumps(reading.figures)))

    def latest(self, engine: str) -> PressureReading | None:
        found = self.history(engine, limit=1)
        return found[-1] if found else None

    def history(self, engine: str, limit: int = 1000) -> list[PressureReading]:
        """The latest ``limit`` readings of ``engine``, oldest first."""
        rows = self.db.query("SELECT engine, saturation, novelty, forgetting, figures, created_at FROM sleep_pressure "
                             "WHERE engine = ? ORDER BY id DESC LIMIT ?", (engine, limit))
        return [PressureReading(engine=r[0], saturation=r[1], novelty=r[2], forgetting=r[3],
                                figures=json.loads(r[4]), created_at=r[5]) for r in reversed(rows)]
