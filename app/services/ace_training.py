"""Offline playbook training from a question/answer file (``engram ace train QA.jsonl``).

The file has one JSON object per line with a ``question`` and an ``answer`` (other keys are
ignored, so the questions files ``app/bench/fiction.py`` and ``app/bench/ace_tasks.py`` write work as they
are). The whole file is checked before any training starts and every bad line is reported.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from typing import TYPE_CHECKING

from engines.ace.engine import AceEngine
from engines.ace.training import QAPair
from engines.registry import build_engine

if TYPE_CHECKING:
    from app.core import Engram

MAX_QA_BYTES = 50 * 1024 * 1024
MAX_REPORTED = 20


class QAFileError(ValueError):
    def __init__(self, path: Path, errors: list[str]) -> None:
        shown = errors[:MAX_REPORTED] + ([f"... and {len(errors) - MAX_REPORTED} more"]
                                         if len(errors) > MAX_REPORTED else [])
        super().__init__(f"{path}: " + "; ".join(shown))
        self.errors = errors


def load_qa(path: Path) -> list[QAPair]:
    """Every question/answer pair of a JSON Lines file (``QAFileError`` lists every bad line)."""
    path = Path(path)
    if not path.is_file():
        raise QAFileError(path, ["no such file"])
    if path.stat().st_size > MAX_QA_BYTES:
        raise QAFileError(path, [f"larger than {MAX_QA_BYTES // 2**20} MB"])
    pairs: list[QAPair] = []
    errors: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise QAFileError(path, [f"not UTF-8 text ({exc.reason})"]) from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            pairs.append(QAPair(question=data.get("question", ""), answer=data.get("answer", "")))
        except ValidationError as exc:
            errors += [f"line {n}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        except (ValueError, RecursionError) as exc:
            errors.append(f"line {n}: {exc}")
    if errors:
        raise QAFileError(path, errors)
    if not pairs:
        raise QAFileError(path, ["no question/answer pairs"])
    return pairs


def playbook_engine(engram: Engram) -> tuple[AceEngine, bool]:
    """The playbook engine and whether chat uses it (when ``ace`` is not among the enabled
    engines, one is built for the task: it trains the playbook, but answers ignore it)."""
    try:
        engine = engram.engine("ace")
        enabled = True
    except KeyError:
        engine = build_engine("ace", engram.engine_context, engram.settings.ace)
        enabled = False
    assert isinstance(engine, AceEngine)
    return engine, enabled
