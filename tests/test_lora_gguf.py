"""A LoRA adapter written as llama.cpp's GGUF: named and typed as llama.cpp reads it, it moves
llama.cpp's logits as the same adapter moves the torch model's (through models.lora_hooks), and
the llama.cpp runtime applies it to one request only, never to the next."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from engines.d2l.reading import peft_config, peft_weights
from engines.generation import ChatMessage, GenerationRequest, LoraUse
from models.lora_hooks import LoRAHooks
from store.lora_gguf import LoraGGUFError, gguf_tensor_name, write_lora_gguf

LAYERS = list(range(24, 30))
RANK, SCALE = 4, 2.0
PROMPT = "The capital of France is"


def random_adapter(seed: int, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A random down_proj adapter for LAYERS (random weights: unit tests only)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(len(LAYERS), RANK, 1536, generator=g) * 0.02
    b = torch.randn(len(LAYERS), 576, RANK, generator=g) * strength
    return a, b


def written(folder: Path, a: torch.Tensor, b: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_lora_gguf(folder, peft_weights({"down_proj": (a, b)}, LAYERS),
                           peft_config("embedded", RANK, SCALE, ["down_proj"], LAYERS))


def test_peft_names_map_to_llama_cpp_tensors_and_others_are_refused(tmp_path: Path) -> None:
    stem = "base_model.model.model.layers.3.mlp"
    assert gguf_tensor_name(f"{stem}.down_proj.lora_A.weight") == "blk.3.ffn_down.weight.lora_a"
    assert gguf_tensor_name(f"{stem}.gate_proj.lora_B.weight") == "blk.3.ffn_gate.weight.lora_b"
    with pytest.raises(LoraGGUFError, match="q_proj"):
        gguf_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight")

    path = written(tmp_path, *random_adapter(0, 0.2))
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(SCALE * RANK)
    shapes = {t.name: t.shape.tolist() for t in reader.tensors}
    assert shapes["blk.24.ffn_down.weight.lora_a"] == [1536, RANK]  # GGUF lists dimensions reversed
    assert shapes["blk.29.ffn_down.weight.lora_b"] == [RANK, 576]
    assert len(shapes) == 2 * len(LAYERS)


@pytest.mark.slow
def test_llama_cpp_applies_the_adapter_as_torch_does(neocortex, tmp_path: Path) -> None:
    from llama_cpp import Llama

    from app.runtimes.llamacpp import embedded_gguf_path

    a, b = random_adapter(1, 0.1)
    path = written(tmp_path, a, b)
    ids = neocortex.tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)
    hooks = LoRAHooks([neocortex.model.model.layers[i].mlp.down_proj for i in LAYERS], SCALE)
    with neocortex.lock, torch.no_grad():
        hooks.install()
        try:
            base = neocortex.model(**ids).logits[0, -1]
            with hooks.active(a.unsqueeze(1), b.unsqueeze(1)):
                adapted = neocortex.model(**ids).logits[0, -1]
        finally:
            hooks.remove()

    def last_logits(**extra) -> torch.Tensor:
        llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=128, n_threads=1, logits_all=True,
                    verbose=False, **extra)
        try:
            tokens = ids["input_ids"][0].tolist()
            llm.eval(tokens)
            return torch.from_numpy(np.array(llm.scores[len(tokens) - 1], dtype=np.float32))
        finally:
            llm.close()

    torch_delta = adapted - base
    llama_delta = last_logits(lora_path=str(path)) - last_logits()
    # Same direction and size (llama.cpp runs the 4-bit weights torch dequantized, and its own
    # matrix products): a wrong name, transpose or scale (alpha / rank read otherwise: 4x) fails.
    cosine = float(torch.nn.functional.cosine_similarity(torch_delta, llama_delta, dim=0))
    ratio = float(llama_delta.norm() / torch_delta.norm())
    assert cosine > 0.8 and 0.5 < ratio < 2.0, (cosine, ratio)


@pytest.mark.slow
def test_the_runtime_applies_adapters_to_one_request_only(llama, tmp_path: Path) -> None:
    ask = [ChatMessage(role="user", content="Name three colours.")]

    def answer(adapters: list[LoraUse]) -> str:
        request = GenerationRequest(messages=ask, temperature=0.0, max_tokens=12, adapters=adapters)
        return llama.generate(request).text

    plain = answer([])
    strong = LoraUse(path=str(written(tmp_path / "a", *random_adapter(2, 3.0))), scale=1.0,
                     base_model=llama.model_name)
    changed = answer([strong])
    assert changed != plain
    assert answer([strong]) == changed  # loaded once, applied again
    assert answer([]) == plain  # the next request runs the model as loaded (prompt cache dropped)
    written(tmp_path / "a", *random_adapter(3, 3.0))  # the document learned again: same file name
    assert answer([strong]) != changed  # the new file is loaded, not the one cached under its name
    half = answer([strong.model_copy(update={"scale": 0.0})])
    assert half == plain  # scale 0: no delta
    with pytest.raises(ValueError, match="written for"):
        answer([strong.model_copy(update={"base_model": "another-model"})])
    assert answer([]) == plain
