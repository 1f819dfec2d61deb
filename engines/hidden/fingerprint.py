"""What the neocortex computes hidden states with, named by a short fingerprint of its weights.

A stored state is comparable with a question's state only when the same weights computed both,
and the shared neocortex's weights change in place, by engines that do not know of this tier:

- ttt puts DualMLPs into the last quarter's layers when it loads, writes trained rows into them
  (learning a document, sleep), sets their ``alpha``, and loads or resets a saved state
  (checkpoints, rollbacks);
- cls wraps MLP projections with a consolidated LoRA adapter that every forward adds (trained in
  sleep) and with experts (added and trained as documents come), which run only when a router
  gives them rows;
- d2l's LoRA hooks change nothing outside its routing context and hold no weights on the model.

This tier runs only plain forwards (it never enters a routing context), so the fingerprint is
taken over what a plain forward computes with: every parameter and buffer by name and content,
and the float attributes of its modules (a DualMLP's ``alpha`` scales its learned delta), leaving
out the modules marked ``routed_only`` (``models.routed_only``: cls's experts) and all they hold.
So no engine has to report a change, a new cls expert leaves every state valid, and the same
weights give the same fingerprint in every process: states filled by ``engram hidden fill`` are
recognised by the app. Integer and boolean attributes are left out: transformers' rotary caches
grow with the input without changing a state.

Hashing every weight of the 135M model takes about a second, so each tensor's digest is kept with
the tensor object and its version counter, which torch bumps at every in-place write (optimizer
steps, ``copy_``, index writes under ``no_grad`` alike): a later fingerprint hashes again only the
tensors written since, or new. (A write through ``tensor.data`` would escape the counter; no
engine writes weights that way.)
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from models.routed_only import is_routed_only


def digest(tensor: Tensor) -> bytes:
    """A 16-byte hash of a tensor's dtype, shape and bytes."""
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    h = hashlib.blake2b(f"{flat.dtype}{tuple(tensor.shape)}".encode(), digest_size=16)
    if flat.numel():
        h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.digest()


class WeightFingerprint:
    """``fingerprint(model)``: a hex string that changes exactly when the weights a plain forward
    runs (or the numbers its modules scale them by) do. Call it holding the model's lock, in the
    same hold as the forward the states come from, so no update falls between the two."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Tensor, int, bytes]] = {}  # name -> (tensor, version, digest)

    def __call__(self, model: nn.Module) -> str:
        h = hashlib.blake2b(digest_size=16)
        seen: dict[str, tuple[Tensor, int, bytes]] = {}
        modules = list(model.named_modules())
        skipped = tuple(f"{name}." for name, module in modules if is_routed_only(module))

        def runs(name: str) -> bool:
            return not f"{name}.".startswith(skipped)

        tensors = [*((n, p) for n, p in model.named_parameters() if runs(n)),
                   *(("buffer:" + n, b) for n, b in model.named_buffers() if runs(n))]
        for name, tensor in tensors:
            known = self._seen.get(name)
            if known is None or known[0] is not tensor or known[1] != tensor._version:
                known = (tensor, tensor._version, digest(tensor))
            seen[name] = known
            h.update(name.encode())
            h.update(known[2])
        for name, module in modules:
            if not runs(name):
                continue
            for key, value in sorted(vars(module).items()):
                if isinstance(value, float):
                    h.update(f"{name}.{key}={value!r}".encode())
        self._seen = seen  # tensors no longer in the model are let go
        return h.hexdigest()
