"""Generation runtimes: one interface (``engines.generation.Runtime``) over llama.cpp, Ollama and torch.

Importing this package is cheap: backend libraries load only when a runtime is built.
"""

from engines.generation import (
    ChatMessage,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    PromptTooLong,
    Runtime,
    RuntimeCrashed,
    RuntimeUnavailable,
    StructuredOutputError,
    TextDelta,
    TextStream,
)
from app.runtimes.registry import BACKENDS, available_models, make_runtime

__all__ = [
    "BACKENDS",
    "ChatMessage",
    "GenerationRequest",
    "GenerationResult",
    "ModelInfo",
    "PromptTooLong",
    "Runtime",
    "RuntimeCrashed",
    "RuntimeUnavailable",
    "StructuredOutputError",
    "TextDelta",
    "TextStream",
    "available_models",
    "make_runtime",
]
