"""Which models Engram can run, and the one place that builds a runtime from a backend name.

The settings page lists ``available_models`` (embedded model, files in the models folder, models
an Ollama server has pulled) and the chat service calls ``make_runtime`` with the chosen entry.
Backend libraries are imported only when their runtime is built, so listing stays cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engines.generation import ModelInfo, Runtime, RuntimeUnavailable
from app.runtimes.llamacpp import EMBEDDED, embedded_gguf_path

log = logging.getLogger(__name__)

BACKENDS = ("llamacpp", "ollama", "torch")


def _size(path: Path) -> int | None:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None


def embedded_model() -> list[ModelInfo]:
    try:
        path = embedded_gguf_path()
    except RuntimeUnavailable:
        return []
    if not path.is_file():
        return []
    return [ModelInfo(name=EMBEDDED, backend="llamacpp", path_or_tag=str(path),
                      size_bytes=_size(path))]


def _folder_name(folder: Path, models_dir: Path) -> str:
    relative = folder.relative_to(models_dir)
    return folder.name if relative == Path(".") else str(relative)


def folder_models(models_dir: Path) -> list[ModelInfo]:
    """GGUF files (llama.cpp) and Hugging Face folders (torch) found under ``models_dir``."""
    if not models_dir.is_dir():
        return []
    found = [
        ModelInfo(name=str(p.relative_to(models_dir).with_suffix("")), backend="llamacpp",
                  path_or_tag=str(p), size_bytes=_size(p))
        for p in sorted(models_dir.rglob("*.gguf")) if p.is_file()
    ]
    found += [
        ModelInfo(name=_folder_name(c.parent, models_dir), backend="torch",
                  path_or_tag=str(c.parent), size_bytes=_size(c.parent))
        for c in sorted(models_dir.rglob("config.json"))
        if any(c.parent.glob("*.safetensors"))  # pickled weights (*.bin) are never loaded
    ]
    return found


def ollama_models(host: str, timeout_s: float) -> list[ModelInfo]:
    """What the Ollama server has pulled; none (logged at debug level) when it is unreachable."""
    from app.runtimes.ollama_runtime import list_models

    try:
        return list_models(host, connect_timeout_s=timeout_s, read_timeout_s=timeout_s)
    except RuntimeUnavailable as exc:
        log.debug("no Ollama models: %s", exc)
        return []


def _is_active(info: ModelInfo, backend: str | None, model: str | None) -> bool:
    if backend is None or model is None or info.backend != backend:
        return False
    if model in (info.name, info.path_or_tag):
        return True
    if info.backend == "ollama":
        return False
    return Path(model).expanduser().resolve() == Path(info.path_or_tag).resolve()


def available_models(
    models_dir: Path | None = None,
    ollama_host: str | None = None,
    *,
    active_backend: str | None = None,
    active_model: str | None = None,
    ollama_timeout_s: float = 1.0,
) -> list[ModelInfo]:
    """Every model Engram could run now; ``active`` marks (active_backend, active_model)."""
    found = embedded_model()
    if models_dir is not None:
        found += folder_models(models_dir)
    if ollama_host:
        found += ollama_models(ollama_host, ollama_timeout_s)
    return [
        info.model_copy(update={"active": _is_active(info, active_backend, active_model)})
        for info in found
    ]


def make_runtime(backend: str, model: str = EMBEDDED, *, isolated: bool = True,
                 stall_timeout_s: float = 300.0, **opts: Any) -> Runtime:
    """Build the runtime for ``backend``; ``opts`` go to its constructor (see each runtime).

    llama.cpp runs in a supervised child process unless ``isolated`` is False (see
    ``app.runtimes.isolated``); Ollama is a server already, and torch answers with weights the
    engines train in this process.
    """
    if backend == "llamacpp" and isolated:
        from app.runtimes.isolated import IsolatedRuntime

        return IsolatedRuntime(backend, model, stall_timeout_s=stall_timeout_s, **opts)
    if backend == "llamacpp":
        from app.runtimes.llamacpp import LlamaCppRuntime

        return LlamaCppRuntime(model, **opts)
    if backend == "ollama":
        from app.runtimes.ollama_runtime import OllamaRuntime

        return OllamaRuntime(model, **opts)
    if backend == "torch":
        from app.runtimes.torch_runtime import TorchRuntime

        return TorchRuntime(model, **opts)
    raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
