"""A LoRA adapter in llama.cpp's GGUF form, written from the weights peft names.

llama.cpp loads an adapter GGUF (``general.type = adapter``, ``adapter.type = lora``) beside its
model and adds ``scale * alpha / rank * B (A x)`` to each adapted matrix, where ``scale`` is set
per context (``llama_set_adapters_lora``). So a document's adapter written here answers at
llama.cpp speed with the delta peft's ``lora_alpha / r`` gives in torch. Only the MLP matrices of
Llama-family models are mapped (what Engram's adapters target); anything else is refused by name.
The architecture written is the model's own (its GGUF name, e.g. ``llama``, ``qwen2``): llama.cpp
refuses an adapter of another.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.atomic import remove_stale_temps, write_atomic

if TYPE_CHECKING:
    import torch

GGUF_NAME = "adapter.gguf"
MLP_TENSORS = {"down_proj": "ffn_down", "up_proj": "ffn_up", "gate_proj": "ffn_gate"}
_PEFT = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.mlp\.(\w+)\.lora_([AB])\.weight$")


class LoraGGUFError(ValueError):
    """An adapter llama.cpp's LoRA format cannot hold (a module it does not map)."""


def gguf_tensor_name(peft_name: str) -> str:
    """``base_model.model.model.layers.3.mlp.down_proj.lora_A.weight`` -> ``blk.3.ffn_down.weight.lora_a``."""
    match = _PEFT.match(peft_name)
    if match is None or match.group(2) not in MLP_TENSORS:
        raise LoraGGUFError(f"no llama.cpp tensor for adapter weight {peft_name!r}")
    layer, module, side = match.groups()
    return f"blk.{layer}.{MLP_TENSORS[module]}.weight.lora_{side.lower()}"


def lora_gguf_bytes(weights: dict[str, torch.Tensor], config: dict[str, Any], architecture: str = "llama") -> bytes:
    """The adapter as a GGUF file's bytes (f32 tensors: an adapter of rank 4 is a few hundred KB)."""
    import tempfile

    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / GGUF_NAME
        writer = gguf.GGUFWriter(str(path), architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
        for name in sorted(weights):
            writer.add_tensor(gguf_tensor_name(name), weights[name].detach().float().cpu().contiguous().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def write_lora_gguf(folder: Path, weights: dict[str, torch.Tensor], config: dict[str, Any],
                    architecture: str = "llama") -> Path:
    """Write ``folder/adapter.gguf`` atomically (a crash leaves the old file or none)."""
    path = Path(folder) / GGUF_NAME
    remove_stale_temps(path)
    write_atomic(path, lora_gguf_bytes(weights, config, architecture), sync_dir=False)
    return path
