"""Retrieval-augmented answering: the passages of the user's documents that answer a question."""

from engines.rag.config import RagConfig
from engines.registry import EngineSpec, register_engine

register_engine(EngineSpec(name="rag", config=RagConfig, engine="engines.rag.engine:RagEngine",
                           description="Looks up the passages of your documents that answer a "
                                       "question, and cites them."))

__all__ = ["RagConfig"]
