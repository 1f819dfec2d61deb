"""What the Models tab shows: every model Engram could answer with, the answering one marked,
and whether the Ollama server answered (its error is worth showing, not just an empty list).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from app.runtimes.registry import available_models
from engines.generation import ModelInfo, RuntimeUnavailable


class ChatModel(BaseModel):
    """The model that answers chat now."""

    backend: str
    model: str
    loaded: bool = Field(description="False until the first question loads it.")


class ModelCatalogue(BaseModel):
    models: list[ModelInfo] = Field(description="Local models first, then Ollama's; ``active`` marked.")
    ollama_host: str
    ollama_models: int = 0
    ollama_error: str | None = Field(None, description="Why Ollama could not be listed (None: it was).")


def _ollama(host: str, timeout_s: float) -> tuple[list[ModelInfo], str | None]:
    """Ollama's models, or none and the reason (listing must never fail the page)."""
    from app.runtimes.ollama_runtime import list_models  # the ollama client loads only here

    try:
        return list_models(host, connect_timeout_s=timeout_s, read_timeout_s=timeout_s), None
    except RuntimeUnavailable as exc:
        return [], str(exc)


def model_catalogue(models_dir: Path, ollama_host: str, active: ChatModel,
                    ollama_timeout_s: float) -> ModelCatalogue:
    """Every model found now; one matching ``active`` by name or path/tag is marked active."""
    local = available_models(models_dir, None)
    remote, error = _ollama(ollama_host, ollama_timeout_s)
    marked = [m.model_copy(update={"active": m.backend == active.backend
                                   and active.model in (m.name, m.path_or_tag)})
              for m in [*local, *remote]]
    return ModelCatalogue(models=marked, ollama_host=ollama_host, ollama_models=len(remote),
                          ollama_error=error)
