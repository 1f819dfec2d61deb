"""Learned state on disk: safetensors files with a metadata row each, written crash-safely.

Two kinds of files live here:

- checkpoints (``checkpoints/NAME.safetensors`` + a ``checkpoints`` row): learned states the
  person saves, lists, loads and deletes by name;
- blobs (``blobs/KEY.safetensors`` + a ``blobs`` row): state the engines keep for themselves,
  such as the live learned weights (restored on the next start) and calibration caches.

A state is a flat dict of tensors and JSON values: tensors go into the safetensors body, the
rest into its header as JSON, so nothing is ever pickled. Files are written to a temp file,
fsynced and renamed over the old one (``store.atomic``): a kill mid-save leaves the previous
file intact, and the row is only written once its file is complete.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from store.atomic import remove_stale_temps, write_atomic
from store.database import Database

if TYPE_CHECKING:
    import torch

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,3}$")
JSON_KEY = "engram.json"


class CheckpointRow(BaseModel):
    id: int
    name: str
    engine: str
    path: str
    created_at: str
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        path = Path(self.path)
        return path.stat().st_size if path.is_file() else 0


def check_name(name: str) -> str:
    """A checkpoint name is a plain file name: letters, digits, ``._-`` (no paths)."""
    if not NAME.match(name) or name.endswith(".tmp"):
        raise ValueError(f"invalid name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch  # only when a state is written: listing checkpoints needs no torch

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    json.dumps(values)  # fails here, before any write, on a value JSON cannot hold
    return tensors, values


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and JSON values) to ``path`` atomically."""
    from safetensors.torch import save as save_bytes

    tensors, values = split_state(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # what a save killed earlier left behind
    write_atomic(path, save_bytes(tensors, metadata={JSON_KEY: json.dumps(values)}))


def read_state(path: Path, tensors: bool = True) -> dict[str, Any]:
    """What ``write_state`` wrote (tensors on the CPU); without ``tensors``, its JSON values only,
    read from the file's header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        header = f.metadata() or {}
        state: dict[str, Any] = json.loads(header.get(JSON_KEY, "{}"))
        for key in f.keys() if tensors else ():
            state[key] = f.get_tensor(key)
    return state


class BlobStore:
    """Checkpoints and engine blobs under the data folder ``root``."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = Path(root)
        self.checkpoint_dir = Path(root) / "checkpoints"
        self.blob_dir = Path(root) / "blobs"

    # --- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, name: str, engine: str, state: dict[str, Any],
                        meta: dict[str, Any] | None = None) -> CheckpointRow:
        """Save (or replace) checkpoint ``name``; the previous one survives a crash mid-save."""
        path = self.checkpoint_dir / f"{check_name(name)}.safetensors"
        write_state(path, state)
        self.db.execute(
            "INSERT INTO checkpoints (name, engine, path, meta) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET engine = excluded.engine, path = excluded.path, "
            "meta = excluded.meta, created_at = datetime('now')",
            (name, engine, str(path), json.dumps(meta or {})),
        )
        found = self.checkpoint(name)
        assert found is not None
        return found

    def checkpoints(self) -> list[CheckpointRow]:
        rows = self.db.query("SELECT * FROM checkpoints ORDER BY created_at DESC, id DESC")
        return [_checkpoint(r) for r in rows]

    def checkpoint(self, name: str) -> CheckpointRow | None:
        row = self.db.conn.execute("SELECT * FROM checkpoints WHERE name = ?", (name,)).fetchone()
        return None if row is None else _checkpoint(row)

    def load_checkpoint(self, name: str) -> tuple[CheckpointRow, dict[str, Any]]:
        row = self.checkpoint(check_name(name))
        if row is None:
            raise KeyError(f"no checkpoint named {name!r}")
        path = Path(row.path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {name!r} lost its file {path}")
        return row, read_state(path)

    def delete_checkpoint(self, name: str) -> None:
        row = self.checkpoint(check_name(name))
        if row is None:
            raise KeyError(f"no checkpoint named {name!r}")
        self.db.execute("DELETE FROM checkpoints WHERE name = ?", (name,))
        Path(row.path).unlink(missing_ok=True)

    # --- blobs ---------------------------------------------------------------------------------
    def put(self, key: str, kind: str, state: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        """Store ``state`` under ``key`` (``engine/what``), replacing what was there."""
        path = self._blob_path(key)
        write_state(path, state)
        self.db.execute(
            "INSERT INTO blobs (key, kind, path, meta) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO "
            "UPDATE SET kind = excluded.kind, path = excluded.path, meta = excluded.meta, "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now')",
            (key, kind, str(path), json.dumps(meta or {})),
        )

    def get(self, key: str, tensors: bool = True) -> dict[str, Any] | None:
        """The state stored under ``key``; None when there is none (or its file is gone). Without
        ``tensors``: its JSON values only, read from the file's header."""
        path = self.db.scalar("SELECT path FROM blobs WHERE key = ?", (key,))
        if path is None or not Path(path).is_file():
            return None
        return read_state(Path(path), tensors)

    def meta(self, key: str) -> dict[str, Any] | None:
        raw = self.db.scalar("SELECT meta FROM blobs WHERE key = ?", (key,))
        return None if raw is None else json.loads(raw)

    def delete(self, key: str) -> None:
        path = self.db.scalar("SELECT path FROM blobs WHERE key = ?", (key,))
        self.db.execute("DELETE FROM blobs WHERE key = ?", (key,))
        if path:
            Path(path).unlink(missing_ok=True)

    def _blob_path(self, key: str) -> Path:
        if not KEY.match(key) or any(part.endswith(".tmp") for part in key.split("/")):
            raise ValueError(f"invalid blob key {key!r}")
        return self.blob_dir / f"{key}.safetensors"


def _checkpoint(row: Any) -> CheckpointRow:
    data = dict(row)
    data["meta"] = json.loads(data["meta"])
    return CheckpointRow(**data)
