"""ACE (Agentic Context Engineering): the Generate-Reflect-Curate playbook engine."""

from engines.ace.config import AceConfig
from engines.ace.engine import AceEngine

__all__ = ["AceConfig", "AceEngine"]
