"""TTT-E2E with sparse memory finetuning: documents learned into the neocortex's MLP weights."""

from engines.ttt.config import TTTConfig

__all__ = ["TTTConfig"]
