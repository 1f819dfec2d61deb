"""A sentence-transformers model as ONNX (fp32 and int8), exported once, offline, into a cache.

sentence-transformers runs the model (``SentenceTransformer(folder, backend="onnx")``, through
optimum's ORTModel and ONNX Runtime) and quantizes it (``export_dynamic_quantized_onnx_model``,
int8 dynamic quantization by optimum's ORTQuantizer); nothing here runs inference. The one step
done here is the export itself: optimum's own exporter does not trace models under the
transformers release Engram pins, so the transformer is traced with ``torch.onnx.export`` (its
TorchScript exporter) behind a three-input wrapper, exactly the graph optimum's exporter writes
for feature extraction (input_ids, attention_mask, token_type_ids -> last_hidden_state).

The export happens once per model and format, into ``CACHE/<model>-<key>/``: built in a temporary
folder beside it and renamed into place, so a killed export never looks complete. The hub is never
asked (``HF_HUB_OFFLINE``); a failure raises, and the embedder falls back to torch with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the exported graph changes: old caches are then not reused
ONNX_FILE = "onnx/model.onnx"
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def quantization_config() -> str:
    """sentence-transformers' int8 preset for this CPU: avx512_vnni, avx2 or arm64."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "avx2"
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def quantized_file(config: str) -> str:
    """The file sentence-transformers writes for a preset (arm64/avx512* are signed, avx2 unsigned)."""
    dtype = "quint8" if config == "avx2" else "qint8"
    return f"onnx/model_{dtype}_{config}.onnx"


def _model_key(model_path: Path) -> str:
    """Changes when the model's files change (names, sizes, config) or the export does."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}".encode())
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_path)}:{path.stat().st_size}".encode())
    for name in ("config.json", "modules.json"):
        if (model_path / name).exists():
            digest.update((model_path / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_onnx(model_path: Path, cache_dir: Path, int8: bool) -> tuple[Path, str]:
    """Where the ONNX copy of ``model_path`` lives in the cache and the file to load (which may
    not exist yet: ``onnx_folder`` exports it). Reads a few small files; imports nothing heavy."""
    folder = Path(cache_dir) / f"{model_path.name}-{_model_key(model_path)}"
    return folder, quantized_file(quantization_config()) if int8 else ONNX_FILE


def onnx_folder(model_path: Path, cache_dir: Path, int8: bool) -> tuple[Path, str]:
    """The cached ONNX copy of ``model_path`` (exported now when missing) and the file to load."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    folder, wanted = cached_onnx(model_path, cache_dir, int8)
    if not (folder / wanted).exists():
        _export(model_path, folder, quantization_config() if int8 else None)
    return folder, wanted


def _export(model_path: Path, folder: Path, int8_config: str | None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        if (folder / ONNX_FILE).exists():  # fp32 already there: only the int8 file is new
            shutil.copytree(folder, work, dirs_exist_ok=True)
        else:
            _export_fp32(model_path, work)
        if int8_config:
            _quantize(work, int8_config)
        (work / "engram-export.json").write_text(json.dumps(
            {"source": str(model_path), "format": EXPORT_FORMAT, "int8": int8_config}))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to ONNX%s in %s", model_path.name,
             f" (+ int8, {int8_config})" if int8_config else "", folder)


def _export_fp32(model_path: Path, work: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    shutil.copytree(model_path, work, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "README.md"))
    (work / "onnx").mkdir(exist_ok=True)
    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    transformer = model[0].auto_model.eval()

    class Features(torch.nn.Module):  # the three named inputs optimum's ORTModel feeds
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = model.tokenizer(["an example sentence to trace", "a second one, longer than the first"],
                             padding=True, return_tensors="pt")
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in (*INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(Features(transformer), tuple(sample[name] for name in INPUTS),
                          str(work / ONNX_FILE), input_names=list(INPUTS),
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)


def _quantize(work: Path, config: str) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    model = SentenceTransformer(str(work), backend="onnx", device="cpu", local_files_only=True,
                                model_kwargs={"file_name": ONNX_FILE})
    export_dynamic_quantized_onnx_model(model, config, str(work))
    if not (work / quantized_file(config)).exists():
        raise RuntimeError(f"quantization wrote no {quantized_file(config)}")
