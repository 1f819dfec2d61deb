"""Which base model learned weights belong to, read without loading the model.

Learned rows are a difference against one model's weights: on another model they are noise. A
bundle records the identity of the neocortex its weights were learned on, and an import compares
it with this machine's before anything changes. The identity is cheap to compute:

- the shapes that learned rows must fit (decoder layers, hidden size, MLP neurons), read from
  the GGUF header's key/values or from ``config.json``;
- a fingerprint: a sha256 over each weight file's size and three 1 MiB samples (start, middle,
  end), so two copies of one model agree and a fine-tune of it does not, in milliseconds even
  for gigabytes of weights.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

SAMPLE = 1 << 20


class BaseModelIdentity(BaseModel):
    """The neocortex a learned state was learned on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=256, description="The model's file or folder name (not its path).")
    kind: str = Field(pattern=r"^(gguf|hf)$")
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    layers: int = Field(ge=1, le=10_000)
    hidden: int = Field(ge=1, le=1_000_000)
    intermediate: int = Field(ge=1, le=10_000_000)


def identity(model: str) -> BaseModelIdentity:
    """The identity of ``model`` as the ``neocortex_model`` setting names it."""
    from app.runtimes.llamacpp import EMBEDDED
    from app.runtimes.torch_runtime import resolve_source

    folder, gguf_file = resolve_source(model)
    if gguf_file is not None:
        path = folder / gguf_file
        shapes = gguf_shapes(path)
        name = EMBEDDED if model == EMBEDDED else path.name
        return BaseModelIdentity(name=name, kind="gguf", fingerprint=fingerprint([path]), **shapes)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    shapes = {"layers": int(config["num_hidden_layers"]), "hidden": int(config["hidden_size"]),
              "intermediate": int(config["intermediate_size"])}
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    return BaseModelIdentity(name=folder.name, kind="hf", fingerprint=fingerprint(files), **shapes)


def fingerprint(files: list[Path]) -> str:
    """sha256 over each file's name, size and three 1 MiB samples (see the module docstring)."""
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}|{size}|".encode())
        with open(path, "rb") as f:
            for at in sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)}):
                f.seek(at)
                digest.update(f.read(SAMPLE))
    return digest.hexdigest()


# --- the GGUF header's key/values (only the scalars are kept) -----------------------------------
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
STRING, ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("the GGUF header ends early")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    if n > 1 << 24:
        raise ValueError("a GGUF header string is too long")
    return f.read(n).decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == STRING:
        return _string(f)
    if kind == ARRAY:
        item, n = _read(f, "<I"), _read(f, "<Q")
        for _ in range(n):  # skipped (the tokenizer's vocabulary): only scalars are wanted
            _value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def gguf_shapes(path: Path) -> dict[str, int]:
    """Layers, hidden size and MLP neurons from a GGUF file's header."""
    values: dict[str, Any] = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path.name} is not a GGUF file")
        _read(f, "<I")  # version
        _read(f, "<Q")  # tensors
        for _ in range(_read(f, "<Q")):
            key = _string(f)
            values[key] = _value(f, _read(f, "<I"))
    arch = values.get("general.architecture")
    try:
        return {"layers": int(values[f"{arch}.block_count"]), "hidden": int(values[f"{arch}.embedding_length"]),
                "intermediate": int(values[f"{arch}.feed_forward_length"])}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path.name}: the GGUF header does not give the model's shapes ({exc})") from None
