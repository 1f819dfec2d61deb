"""Questions embedded without torch, so a one-off ``engram search`` answers in under a second.

Loading torch and sentence-transformers costs a CLI call about 4 s before it embeds one question.
The library's vectors come from a sentence-transformers model; its ONNX copy (exported once into
the cache, ``app/ingest/onnx_export.py``) computes the same vectors under ONNX Runtime, and the
model's own ``tokenizer.json`` tokenizes with the Rust ``tokenizers`` library. What is left is the
model's pipeline as its ``modules.json`` states it: the transformer, then mean (or CLS) pooling,
then unit length. Only that standard pipeline is taken; any other (a dense layer, another pooling)
is refused and the caller embeds with sentence-transformers as before. The fp32 copy gives
sentence-transformers' vectors to float precision (the test compares them); a library embedded in
int8 is queried with its own int8 file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


class UnsupportedPipeline(ValueError):
    """The model's pipeline is not transformer -> mean/CLS pooling [-> normalize]."""


def _pipeline(model_path: Path) -> tuple[str, bool]:
    """(pooling mode, normalized) from the model's ``modules.json``, or UnsupportedPipeline."""
    modules = json.loads((model_path / "modules.json").read_text())
    kinds = [m["type"] for m in modules]
    if kinds not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]):
        raise UnsupportedPipeline(f"modules {kinds}")
    pooling = json.loads((model_path / modules[1]["path"] / "config.json").read_text())
    modes = [k for k, on in pooling.items() if k.startswith("pooling_mode_") and on]
    if modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"]):
        raise UnsupportedPipeline(f"pooling {modes}")
    return ("mean" if modes == ["pooling_mode_mean_tokens"] else "cls"), len(kinds) == 3


class QueryEmbedder:
    """Unit-length float32 vectors of short texts, as the library's embedder makes them."""

    def __init__(self, model_path: Path, onnx_file: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.pooling, self.normalize = _pipeline(model_path)
        config_file = model_path / "sentence_bert_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        self.lowercase = bool(config.get("do_lower_case", False))
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(config.get("max_seq_length", 256)))
        self.tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads or max(1, min(os.cpu_count() or 1, 4))
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def embed(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch([t.lower() if self.lowercase else t for t in texts])
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64), "attention_mask": mask,
                 "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)}
        hidden = self.session.run(None, {name: feeds[name] for name in self.inputs})[0]
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            vectors = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)


def load_query_embedder(model_path: Path, cache_dir: Path, int8: bool) -> QueryEmbedder | None:
    """The torch-free embedder of ``model_path``'s vectors, or None (said in the log at debug
    level) where its ONNX copy is not in the cache yet, ONNX Runtime is missing or the pipeline
    is not the standard one."""
    from app.ingest.onnx_export import cached_onnx

    try:
        folder, name = cached_onnx(model_path, cache_dir, int8)
        if not (folder / name).exists():
            log.debug("no ONNX copy of %s in %s yet: questions are embedded with torch", model_path, folder)
            return None
        return QueryEmbedder(model_path, folder / name)
    except Exception as exc:  # noqa: BLE001 (a broken cache or runtime must never fail a search)
        log.debug("questions are embedded with torch: %s: %s", type(exc).__name__, exc)
        return None
