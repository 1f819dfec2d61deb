"""The neocortex: the torch copy of the language model that weight-writing engines change.

It is a ``TorchRuntime`` (model, tokenizer, lock, streaming generation), shared by the engines
that train it and the chat service that answers with it once something was learned.

Sources, as the ``neocortex_model`` setting names them:

- ``embedded`` or a ``.gguf`` path: dequantized into transformers (fp32 on CPU, bf16 on CUDA).
  transformers' GGUF reader needs about a minute for the 135M model, so the first load also
  writes the dequantized weights, bit for bit, into a safetensors folder under the data folder's
  ``cache/``; later loads read that in about a second. The folder is built beside its final
  name and renamed into place, so a crash never leaves a half-written one to load.
- a local Hugging Face folder (``config.json`` + ``*.safetensors``): loaded as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from app.runtimes.llamacpp import EMBEDDED
from app.runtimes.torch_runtime import TorchRuntime, resolve_source
from store.atomic import fsync_dir

log = logging.getLogger(__name__)


def cache_folder(gguf: Path, cache_root: Path) -> Path:
    """Where the dequantized copy of ``gguf`` lives (a new file, a new folder)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root / "torch" / f"{gguf.stem}-{key}"


def convert(gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` once and save it as a Hugging Face folder (safetensors, fp32)."""
    runtime = TorchRuntime(gguf, device="cpu")
    model = runtime.model
    model.hf_quantizer = None  # the weights are plain tensors now; saving needs no quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        runtime.tokenizer.save_pretrained(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        runtime.close()


def load_neocortex(model: str, device: str, cache_root: Path, threads: int | None = None) -> TorchRuntime:
    """The torch runtime for ``model`` (converted through the cache when it is a GGUF)."""
    folder, gguf_file = resolve_source(model)
    if gguf_file is None:
        return TorchRuntime(folder, device=device, threads=threads)
    gguf = folder / gguf_file
    cached = cache_folder(gguf, cache_root)
    if not (cached / "config.json").is_file():
        log.info("converting %s for torch (once; about a minute)", gguf.name)
        cached.parent.mkdir(parents=True, exist_ok=True)
        convert(gguf, cached)
    runtime = TorchRuntime(cached, device=device, threads=threads)
    runtime.model_name = EMBEDDED if model == EMBEDDED else gguf.stem
    return runtime
