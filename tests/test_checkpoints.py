"""Learned states on disk: safetensors checkpoints with metadata rows, names that cannot escape
their folder, and saves that a SIGKILL cannot tear (the previous checkpoint stays loadable)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from store.blobs import BlobStore, read_state
from store.database import Database


def state(seed: int, rows: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"format": 1, "documents": seed, "layers": [22, 23], "alpha": 0.5,
            "layer22.gate": torch.randn(rows, 16, generator=g), "layer22.ids": torch.arange(rows)}


@pytest.fixture
def blobs(tmp_path: Path):
    db = Database(tmp_path / "engram.db")
    yield BlobStore(db, tmp_path)
    db.close()


def test_save_list_load_delete(blobs: BlobStore) -> None:
    blobs.save_checkpoint("first", "ttt", state(1), meta={"documents": 1})
    blobs.save_checkpoint("second", "ttt", state(2), meta={"documents": 2})
    assert [r.name for r in blobs.checkpoints()] == ["second", "first"]
    row, loaded = blobs.load_checkpoint("first")
    assert row.engine == "ttt" and row.meta == {"documents": 1} and row.size_bytes > 0
    assert loaded["documents"] == 1 and loaded["layers"] == [22, 23]
    assert torch.equal(loaded["layer22.gate"], state(1)["layer22.gate"])
    blobs.save_checkpoint("first", "ttt", state(3))  # same name: replaced
    assert blobs.load_checkpoint("first")[1]["documents"] == 3
    blobs.delete_checkpoint("first")
    assert [r.name for r in blobs.checkpoints()] == ["second"]
    assert not (blobs.checkpoint_dir / "first.safetensors").exists()
    with pytest.raises(KeyError):
        blobs.load_checkpoint("first")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65, "bad name", "c.tmp"])
def test_names_that_could_leave_the_folder_are_refused(blobs: BlobStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid name"):
        blobs.save_checkpoint(name, "ttt", state(1))
    assert not list(blobs.checkpoint_dir.parent.rglob("*.safetensors"))


def test_values_json_cannot_hold_fail_before_anything_is_written(blobs: BlobStore) -> None:
    with pytest.raises(TypeError):
        blobs.save_checkpoint("odd", "ttt", {"when": object()})
    assert blobs.checkpoints() == [] and not blobs.checkpoint_dir.exists()


def test_blobs_are_keyed_and_replaced(blobs: BlobStore) -> None:
    blobs.put("ttt/live", "state", state(4), meta={"documents": 4})
    assert blobs.get("ttt/live")["documents"] == 4 and blobs.meta("ttt/live") == {"documents": 4}
    blobs.put("ttt/live", "state", state(5))
    assert blobs.get("ttt/live")["documents"] == 5
    values = blobs.get("ttt/live", tensors=False)  # the header alone: what a status line needs
    assert values is not None and values["documents"] == 5
    assert not any(isinstance(v, torch.Tensor) for v in values.values())
    assert any(isinstance(v, torch.Tensor) for v in blobs.get("ttt/live").values())
    with pytest.raises(ValueError):
        blobs.put("../../etc/x", "state", state(1))
    blobs.delete("ttt/live")
    assert blobs.get("ttt/live") is None


SAVER = """
import sys
from pathlib import Path
import torch
from store.blobs import BlobStore
from store.database import Database
store = BlobStore(Database(Path(sys.argv[1]) / "engram.db"), Path(sys.argv[1]))
n = 0
print("ready", flush=True)
while True:
    n += 1
    store.save_checkpoint("live", "ttt", {"format": 1, "n": n, "rows": torch.full((800, 576), float(n))})
"""


@pytest.mark.slow
def test_a_kill_mid_save_leaves_the_previous_checkpoint_intact(tmp_path: Path, blobs: BlobStore) -> None:
    blobs.save_checkpoint("live", "ttt", {"format": 1, "n": 0, "rows": torch.zeros(800, 576)})
    rng = random.Random(5)
    seen = set()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE,
                                cwd=Path(__file__).parent.parent)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        row, loaded = blobs.load_checkpoint("live")  # always a whole save, old or new
        assert torch.equal(loaded["rows"], torch.full((800, 576), float(loaded["n"])))
        seen.add(loaded["n"])
        blobs.save_checkpoint("live", "ttt", {"format": 1, "n": 0, "rows": torch.zeros(800, 576)})
        assert not list(blobs.checkpoint_dir.glob(".*.tmp")), "a killed save left a temporary file"
    assert read_state(blobs.checkpoint_dir / "live.safetensors")["n"] == 0
    assert len(seen) >= 2  # the kills landed at different moments
