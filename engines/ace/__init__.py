"""ACE (Agentic Context Engineering): the Generate-Reflect-Curate playbook engine."""

from engines.ace.config import AceConfig
from engines.registry import EngineSpec, register_engine

register_engine(EngineSpec(name="ace", config=AceConfig, engine="engines.ace.engine:AceEngine",
                           description="The playbook: turns your ratings and corrections into short "
                                       "rules that later answers follow.", commands="app.cli.ace:ace"))

__all__ = ["AceConfig"]
