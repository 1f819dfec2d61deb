"""Retrieval-augmented answering: the passages of the user's documents that answer a question."""

from engines.rag.config import RagConfig
from engines.rag.engine import RagEngine

__all__ = ["RagConfig", "RagEngine"]
