"""Doc-to-LoRA's parts without the real model: the hypernetwork's shapes and its no-op start,
ranks composing within a budget, per-row LoRA hooks, and adapters saved in a format peft reads
and applies exactly as the hooks do."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from engines.d2l.reading import from_peft_weights, peft_config, peft_weights
from models.hypernetwork import HyperShape, Hypernetwork, compose
from models.lora_hooks import LoRAHooks, batch_adapters
from store.adapters import AdapterStore

SHAPE = HyperShape(layers=3, hidden=24, modules=(("down_proj", 40, 24),), rank=4, latent_dim=32, heads=4, blocks=1)


def test_the_hypernetwork_writes_one_adapter_per_layer_and_starts_as_a_no_op() -> None:
    torch.manual_seed(0)
    hyper = Hypernetwork(SHAPE)
    keys = torch.cat([hyper.keys(torch.randn(3, 7, 24)), hyper.keys(torch.randn(3, 5, 24))], dim=1)  # two chunks
    a, b = hyper(keys)["down_proj"]
    assert a.shape == (3, 4, 40) and b.shape == (3, 24, 4)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3, 4), atol=1e-5)  # unit rows: size lives in B
    assert torch.count_nonzero(b) == 0  # B starts at zero, as LoRA's does
    with pytest.raises(ValueError):
        hyper.keys(torch.randn(2, 7, 24))  # activations of the wrong number of layers
    # B's head gets a gradient at the start, so training can move it off zero
    (hyper(keys)["down_proj"][1].sum() + 0 * a.sum()).backward()
    assert hyper.head_b["down_proj"].weight.grad.abs().sum() > 0
    # different documents give different adapters once B is not zero
    nn.init.normal_(hyper.head_b["down_proj"].weight)
    b1 = hyper(hyper.keys(torch.randn(3, 6, 24)))["down_proj"][1]
    b2 = hyper(hyper.keys(torch.randn(3, 6, 24)))["down_proj"][1]
    assert not torch.allclose(b1, b2)


def test_documents_compose_by_concatenating_ranks_up_to_the_budget() -> None:
    one = (torch.ones(3, 4, 40), torch.ones(3, 24, 4))
    two = (2 * torch.ones(3, 4, 40), 2 * torch.ones(3, 24, 4))
    a, b = compose([one, two], budget=8)
    assert a.shape == (3, 8, 40) and b.shape == (3, 24, 8)
    a, b = compose([one, two], budget=6)  # the second does not fit: left out, not cut
    assert a.shape == (3, 4, 40) and float(a.max()) == 1.0
    assert compose([], budget=8) is None


def test_hooks_add_each_rows_own_lora_and_nothing_without_one() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(40, 24)
    hooks = LoRAHooks([layer], scale=0.5)
    hooks.install()
    x = torch.randn(2, 5, 40)
    base = layer(x)
    a, b = torch.randn(1, 3, 40), torch.randn(1, 24, 3)
    batch = batch_adapters([(a, b), None])  # row 0 has an adapter, row 1 none
    assert batch is not None and batch[0].shape == (1, 2, 3, 40)
    with hooks.active(*batch):
        out = layer(x)
    assert torch.allclose(out[0], base[0] + 0.5 * (x[0] @ a[0].t()) @ b[0].t(), atol=1e-5)
    assert torch.equal(out[1], base[1])  # no adapter: bit for bit the original
    assert torch.equal(layer(x), base)  # outside the context, nothing
    with hooks.active(*batch):  # rows repeated after routing (a prompt's options): each keeps its own
        repeated = layer(x.repeat_interleave(3, 0))
    assert torch.allclose(repeated[:3], out[0].expand(3, -1, -1), atol=1e-6)
    assert torch.equal(repeated[3:], base[1].expand(3, -1, -1))
    a.requires_grad_(True)
    hooks.set(a[:, None], b[:, None])  # one adapter on every row
    layer(x).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0  # meta-training reaches A through the hook
    hooks.remove()
    assert torch.equal(layer(x), base)
    assert batch_adapters([None, None]) is None


def _tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=40, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_adapters_are_saved_in_peft_format_and_peft_applies_them_as_the_hooks_do(tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel
    from peft.utils import load_peft_weights

    model = _tiny_llama()
    layer_ids = [1, 2]
    torch.manual_seed(1)
    adapter = {"down_proj": (torch.randn(2, 4, 40), torch.randn(2, 24, 4))}
    store = AdapterStore(tmp_path, "d2l")
    config = peft_config("tiny", 4, 0.5, ["down_proj"], layer_ids)
    folder = store.save(7, config, peft_weights(adapter, layer_ids), torch.randn(3, 8), meta={"path": "a.txt"})
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                        "route_keys.safetensors"]
    assert store.documents() == [7]
    saved = store.load(7)
    assert saved is not None and saved.meta == {"path": "a.txt"} and saved.keys.shape == (3, 8)
    back = from_peft_weights(saved.weights, layer_ids, ["down_proj"])
    assert torch.equal(back["down_proj"][0], adapter["down_proj"][0])
    assert torch.equal(back["down_proj"][1], adapter["down_proj"][1])

    # peft reads both files and applies the adapter: the same logits as the hooks give
    assert LoraConfig.from_pretrained(str(folder)).r == 4
    assert set(load_peft_weights(str(folder))) == set(peft_weights(adapter, layer_ids))
    ids = torch.tensor([[1, 5, 9, 2, 33]])
    hooks = LoRAHooks([model.model.layers[i].mlp.down_proj for i in layer_ids], scale=0.5)
    hooks.install()
    with torch.no_grad(), hooks.active(adapter["down_proj"][0][:, None], adapter["down_proj"][1][:, None]):
        ours = model(input_ids=ids).logits
    hooks.remove()
    with torch.no_grad():
        base = model(input_ids=ids).logits
        theirs = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).eval()(input_ids=ids).logits
    assert not torch.allclose(base, theirs, atol=1e-4)  # the adapter does something
    assert torch.allclose(ours, theirs, atol=1e-5)

    assert store.delete(7) and store.documents() == [] and store.load(7) is None
    assert not store.delete(7)


def test_d2l_adapts_the_models_own_linears_inside_ttts_and_clss_wrappers() -> None:
    """With ttt (DualMLP around an MLP) or cls (ExpertLinear around down_proj) installed first, d2l
    found no linear down_proj and refused; its hooks now sit on the model's own linears, which
    those wrappers call, so the adapter still changes the answer."""
    from types import SimpleNamespace

    from engines.d2l.reading import target_modules
    from models.dual_mlp import DualMLP
    from models.lora_experts import ExpertLinear

    model = _tiny_llama()
    own = [layer.mlp.down_proj for layer in model.model.layers]
    model.model.layers[1].mlp.down_proj = ExpertLinear(own[1], rank=2)  # as cls installs
    model.model.layers[2].mlp = DualMLP(model.model.layers[2].mlp)  # as ttt installs
    found = target_modules(SimpleNamespace(model=model), [0, 1, 2], "down_proj")  # type: ignore[arg-type]
    assert all(a is b for a, b in zip(found, own))
    ids = torch.tensor([[1, 5, 9, 2, 33]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    for layer in (1, 2):  # each wrapper calls the hooked linear
        hooks = LoRAHooks([found[layer]], scale=1.0)
        hooks.install()
        torch.manual_seed(layer)
        with torch.no_grad(), hooks.active(torch.randn(1, 1, 4, 40), torch.randn(1, 1, 24, 4)):
            adapted = model(input_ids=ids).logits
        hooks.remove()
        assert not torch.allclose(adapted, base, atol=1e-4), layer
