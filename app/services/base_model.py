"""Which base model learned weights belong to, read without loading the model.

Learned rows are a difference against one model's weights: on another model they are noise. A
bundle records the identity of the neocortex its weights were learned on, and an import compares
it with this machine's before anything changes. The identity is cheap to compute:

- the shapes that learned rows must fit (decoder layers, hidden size, MLP neurons), read from
  the GGUF header's key/values (the ``gguf`` package's reader, memory-mapped: no tensor is
  read) or from ``config.json``;
- a fingerprint: a sha256 over each weight file's size and three 1 MiB samples (start, middle,
  end), so two copies of one model agree and a fine-tune of it does not, in milliseconds even
  for gigabytes of weights.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

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


# --- the GGUF header's key/values, through the gguf package's reader ----------------------------
def _header_reader() -> type:
    """``gguf.GGUFReader`` that leaves array values unparsed. The reader memory-maps the file
    (no tensor is read), but it turns every item of an array into its own numpy view: the
    embedded model's 49,152-token vocabulary alone costs it about 2 s of CPU. Only scalars are
    wanted here, so an array is stepped over by its items' sizes (its field then has no
    contents); everything else (magic, version, byte order, duplicate keys, the tensor table,
    alignment) is the reader's own."""
    import numpy as np
    from gguf import GGUFEndian, GGUFReader, GGUFValueType

    class HeaderReader(GGUFReader):
        def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
            if raw_type != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            item, count = self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)
            end = self._skip(orig_offs + 12, int(item[0]), int(count[0]))
            return end - orig_offs, [item, count], [], [GGUFValueType.ARRAY, GGUFValueType(int(item[0]))]

        def _skip(self, offs: int, kind: int, count: int) -> int:
            """Where ``count`` values of type ``kind`` starting at ``offs`` end."""
            scalar = self.gguf_scalar_to_np.get(GGUFValueType(kind))
            if scalar is not None:
                return offs + count * np.dtype(scalar).itemsize
            order = ">" if self.endianess == GGUFEndian.BIG else "<"
            length, header = struct.Struct(order + "Q"), struct.Struct(order + "IQ")
            data, size = memoryview(self.data), len(self.data)
            for _ in range(count):
                if kind == GGUFValueType.STRING:
                    offs += 8 + length.unpack_from(data, offs)[0]
                elif kind == GGUFValueType.ARRAY:
                    inner, n = header.unpack_from(data, offs)
                    offs = self._skip(offs + 12, inner, n)
                else:
                    raise ValueError(f"unknown GGUF value type {kind}")
                if offs > size:
                    raise ValueError("the GGUF header ends early")
            return offs

    return HeaderReader


def gguf_shapes(path: Path) -> dict[str, int]:
    """Layers, hidden size and MLP neurons from a GGUF file's header (``{arch}.block_count``,
    ``.embedding_length``, ``.feed_forward_length``), without reading a tensor."""
    try:
        fields = _header_reader()(path).fields
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise ValueError(f"{path.name} is not a readable GGUF file ({exc})") from None

    def value(key: str) -> Any:
        field = fields.get(key)
        if field is None:
            raise ValueError(f"{path.name}: the GGUF header does not give the model's shapes (no {key})")
        return field.contents()

    arch = value("general.architecture")
    try:
        return {"layers": int(value(f"{arch}.block_count")), "hidden": int(value(f"{arch}.embedding_length")),
                "intermediate": int(value(f"{arch}.feed_forward_length"))}
    except TypeError as exc:
        raise ValueError(f"{path.name}: the GGUF header's shapes are not numbers ({exc})") from None
