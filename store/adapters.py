"""LoRA adapters on disk in peft's format, one folder per document.

``ROOT/NAME/doc-ID/`` holds ``adapter_config.json`` and ``adapter_model.safetensors`` exactly as
peft saves a LoRA (so ``peft.PeftModel.from_pretrained`` or ``peft.utils.load_peft_weights`` can
read it), plus ``route_keys.safetensors``: the embeddings questions are routed by. Each file is
written atomically (``store.atomic``), the config last: a folder without its config is a save
that did not finish and is never read. Nothing is pickled.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.atomic import remove_stale_temps, write_atomic

if TYPE_CHECKING:
    import torch

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
KEYS = "route_keys.safetensors"
_FOLDER = re.compile(r"^doc-(\d+)$")


@dataclass
class StoredAdapter:
    config: dict[str, Any]  # adapter_config.json
    weights: dict[str, torch.Tensor]  # adapter_model.safetensors
    keys: torch.Tensor  # route keys [n, D]
    meta: dict[str, Any]
    probe: torch.Tensor | None = None  # the probe sentence as the keys' embedder embedded it


class AdapterStore:
    """The adapters one engine wrote, under ``root/adapters/engine``."""

    def __init__(self, root: Path, engine: str) -> None:
        self.root = Path(root) / "adapters" / engine

    def folder(self, document_id: int) -> Path:
        return self.root / f"doc-{int(document_id)}"

    def save(self, document_id: int, config: dict[str, Any], weights: dict[str, torch.Tensor],
             keys: torch.Tensor, meta: dict[str, Any] | None = None, probe: torch.Tensor | None = None) -> Path:
        """Write (or replace) a document's adapter (``meta``: JSON kept beside the route keys,
        outside peft's files); returns its folder."""
        from safetensors.torch import save as save_bytes

        folder = self.folder(document_id)
        for name in (WEIGHTS, KEYS, CONFIG):
            remove_stale_temps(folder / name)
        write_atomic(folder / WEIGHTS, save_bytes({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                                                  metadata={"format": "pt"}), sync_dir=False)
        self._write_keys(folder, keys, meta or {}, probe)
        write_atomic(folder / CONFIG, json.dumps(config, indent=2, sort_keys=True).encode())
        return folder

    def save_keys(self, document_id: int, keys: torch.Tensor, probe: torch.Tensor | None) -> bool:
        """Replace a saved adapter's route keys (embedded again by another embedding model),
        keeping its meta; False when the document has no adapter."""
        saved = self.load(document_id)
        if saved is None:
            return False
        self._write_keys(self.folder(document_id), keys, saved.meta, probe)
        return True

    @staticmethod
    def _write_keys(folder: Path, keys: torch.Tensor, meta: dict[str, Any], probe: torch.Tensor | None) -> None:
        from safetensors.torch import save as save_bytes

        tensors = {"keys": keys.detach().cpu().contiguous()}
        if probe is not None:
            tensors["probe"] = probe.detach().cpu().float().contiguous()
        write_atomic(folder / KEYS, save_bytes(tensors, metadata={"engram": json.dumps(meta)}), sync_dir=False)

    def load(self, document_id: int) -> StoredAdapter | None:
        """A document's adapter as saved; None when it has none."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        folder = self.folder(document_id)
        if not all((folder / name).is_file() for name in (CONFIG, WEIGHTS, KEYS)):
            return None
        config = json.loads((folder / CONFIG).read_text())
        with safe_open(str(folder / KEYS), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get("engram", "{}"))
            keys = f.get_tensor("keys")
            probe = f.get_tensor("probe") if "probe" in f.keys() else None
        return StoredAdapter(config=config, weights=load_file(str(folder / WEIGHTS)), keys=keys, meta=meta,
                             probe=probe)

    def load_keys(self, document_id: int) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None] | None:
        """A saved adapter's config, route keys and probe, without its weights (routing needs no
        more); None when the document has no complete adapter."""
        from safetensors import safe_open

        folder = self.folder(document_id)
        if not all((folder / name).is_file() for name in (CONFIG, WEIGHTS, KEYS)):
            return None
        config = json.loads((folder / CONFIG).read_text())
        with safe_open(str(folder / KEYS), framework="pt", device="cpu") as f:
            keys = f.get_tensor("keys")
            probe = f.get_tensor("probe") if "probe" in f.keys() else None
        return config, keys, probe

    def documents(self) -> list[int]:
        """The documents with a complete adapter."""
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = _FOLDER.match(child.name)
            if match and (child / CONFIG).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def delete(self, document_id: int) -> bool:
        """Remove a document's adapter (config first: a half-deleted folder is never read)."""
        folder = self.folder(document_id)
        if not folder.exists():
            return False
        (folder / CONFIG).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        return True
