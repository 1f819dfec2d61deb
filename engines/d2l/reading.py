"""The frozen model reading a document, and the adapters' names in peft's format.

``activations`` runs the neocortex over the document chunk by chunk (each chunk on its own, so
a document longer than the context window still fits and memory stays bounded) and keeps the
residual stream entering each adapted layer, which is what the hypernetwork reads. The model's
weights never change and no gradient reaches them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from engines.base import Neocortex
from models.dual_mlp import DualMLP, decoder_layers, layer_range
from models.lora_experts import ExpertLinear

Adapter = dict[str, tuple[Tensor, Tensor]]
"""Per target module: (A [layers, r, in], B [layers, out, r]) over the adapted layers."""


GGUF_ARCHITECTURES = {"mistral": "llama"}  # transformers' model_type -> llama.cpp's name, where they differ


def gguf_architecture(cortex: Neocortex) -> str:
    """The model's architecture as llama.cpp names it (what an adapter GGUF must declare)."""
    model_type = str(getattr(cortex.model.config, "model_type", "llama"))
    return GGUF_ARCHITECTURES.get(model_type, model_type)


def adapted_layers(cortex: Neocortex, layers: str) -> list[int]:
    """The decoder layers that get an adapter (``layers`` empty: all of them)."""
    total = len(decoder_layers(cortex.model))
    return layer_range(total, 0.0, layers)


def target_modules(cortex: Neocortex, layer_ids: list[int], target: str) -> list[torch.nn.Module]:
    """The model's own ``target`` linear of each layer's MLP, found inside the modules ttt and cls
    put around it (a hook on it still fires, since their forwards call it), so d2l works beside
    either engine, whichever was installed first."""
    layers = decoder_layers(cortex.model)
    found = [_own(getattr(_own(layers[i].mlp), target, None)) for i in layer_ids]
    if any(not isinstance(m, torch.nn.Linear) for m in found):
        raise TypeError(f"the model's MLPs have no linear {target}: it cannot be adapted")
    return found  # type: ignore[return-value]


def _own(module: Any) -> Any:
    """The model's own module inside ttt's ``DualMLP`` or cls's ``ExpertLinear`` (else itself)."""
    if isinstance(module, DualMLP):
        return module.frozen
    return module.base if isinstance(module, ExpertLinear) else module


def token_chunks(cortex: Neocortex, text: str, chunk_tokens: int, max_tokens: int) -> list[list[int]]:
    ids = cortex.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return [ids[i:i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)] or [[]]


@torch.no_grad()
def activations(cortex: Neocortex, chunk: list[int], layer_ids: list[int]) -> Tensor:
    """[layers, T, hidden]: the residual stream entering each of ``layer_ids`` on one chunk."""
    if not chunk:
        raise ValueError("an empty document has nothing to read")
    ids = torch.tensor([chunk], device=cortex.device)
    out = cortex.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return torch.stack([out.hidden_states[i][0] for i in layer_ids]).float().cpu()


def peft_weights(adapter: Adapter, layer_ids: list[int]) -> dict[str, Tensor]:
    """The adapter under the names peft gives a LoRA of a Llama-family causal LM."""
    out = {}
    for target, (a, b) in adapter.items():
        for n, i in enumerate(layer_ids):
            stem = f"base_model.model.model.layers.{i}.mlp.{target}"
            out[f"{stem}.lora_A.weight"] = a[n].contiguous()
            out[f"{stem}.lora_B.weight"] = b[n].contiguous()
    return out


def from_peft_weights(weights: dict[str, Tensor], layer_ids: list[int], targets: list[str]) -> Adapter:
    """``peft_weights`` read back; KeyError when a layer or module is missing."""
    out: Adapter = {}
    for target in targets:
        stems = [f"base_model.model.model.layers.{i}.mlp.{target}" for i in layer_ids]
        out[target] = (torch.stack([weights[f"{s}.lora_A.weight"] for s in stems]).float(),
                       torch.stack([weights[f"{s}.lora_B.weight"] for s in stems]).float())
    return out


def peft_config(model_name: str, rank: int, scale: float, targets: list[str], layer_ids: list[int]
                ) -> dict[str, Any]:
    """adapter_config.json as peft writes one for a LoRA (``lora_alpha / r`` = ``scale``)."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model_name,
            "r": rank, "lora_alpha": scale * rank, "lora_dropout": 0.0, "bias": "none",
            "fan_in_fan_out": False, "target_modules": sorted(targets), "layers_to_transform": layer_ids,
            "inference_mode": True, "use_rslora": False}
