"""Learn jobs: queued with the document, run after it is searchable, skipped when it changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from engines import registry
from engines.base import Contribution, DocumentInput, Engine, LearnReport, Query
from tests.helpers import open_engram

LEARNED: list[tuple[str, int]] = []


class RecordingEngine(Engine):
    """Records what it was asked to learn: the plumbing under test is the app's, not an engine's."""

    name = "recorder"
    learns_documents = True

    def __init__(self, context, config) -> None:
        self.context = context

    def learn(self, document: DocumentInput, progress=lambda f, m: None) -> LearnReport:
        progress(0.5, "half way")
        LEARNED.append((Path(document.path).name, len(document.chunks)))
        return LearnReport(engine=self.name, path=document.path, seconds=0.01, changed=True)

    def contribute(self, query: Query) -> Contribution:
        return Contribution(engine=self.name)


@pytest.fixture
def engram(monkeypatch, embedder):
    spec = registry.EngineSpec(name="recorder", config=BaseModel, engine=f"{__name__}:RecordingEngine",
                               description="records what it is asked to learn")
    monkeypatch.setitem(registry._REGISTRY, "recorder", spec)
    LEARNED.clear()
    e = open_engram(embedder, engines="rag,recorder")
    yield e
    e.close()


def test_each_new_document_is_learned_once_after_indexing(engram, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha is the first letter.")
    (folder / "b.txt").write_text("Beta is the second letter.")
    engram.ingest([folder])
    engram.run_pending()
    assert LEARNED == [] and engram.queue.pending_count("learn") == 2  # searchable first
    engram.run_pending(learn=True)
    assert sorted(LEARNED) == [("a.txt", 1), ("b.txt", 1)]
    episodes = engram.db.scalar("SELECT COUNT(*) FROM episodes WHERE kind = 'learn'")
    assert episodes == 2 and engram.queue.pending_count() == 0
    engram.ingest([folder])  # unchanged: nothing to learn again
    engram.run_pending(learn=True)
    assert len(LEARNED) == 2


def test_a_document_changed_or_gone_before_its_job_ran(engram, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    note, gone = folder / "note.txt", folder / "gone.txt"
    note.write_text("Version one.")
    gone.write_text("Soon deleted.")
    engram.ingest([folder])
    engram.run_pending()
    note.write_text("Version two is longer.\n\nIt has a second paragraph.")
    gone.unlink()
    engram.ingest([folder])
    engram.run_pending(learn=True)
    assert LEARNED == [("note.txt", 1)]  # the newer version only, once
    messages = [r[0] for r in engram.db.query("SELECT message FROM jobs WHERE kind = 'learn'")]
    assert sorted(m or "" for m in messages)[-1].startswith("skipped")
