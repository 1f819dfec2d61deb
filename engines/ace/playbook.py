"""The delta operations that change a playbook (its bullets and versions live in ``store``).

A playbook is a named list of short strategies ("bullets"), each with a stable id and counters of
how often reflection found it helpful or harmful. It only ever changes by deltas (add, update,
merge, remove, tag), merged deterministically in code (``merge.py``); every change makes a new
version, so any version can be looked at and restored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from store.playbooks import (
    BULLET_MAX_CHARS,
    NAME_PATTERN,
    SECTIONS,
    Bullet,
    DeltaRecord,
    Playbook,
    Section,
    valid_name,
)

__all__ = ["BULLET_MAX_CHARS", "NAME_PATTERN", "SECTIONS", "Bullet", "BulletTag", "Delta",
           "Operation", "Playbook", "Section", "valid_name"]

TagKind = Literal["helpful", "harmful", "neutral"]
OpKind = Literal["add", "update", "merge", "remove"]
DeltaSource = Literal["online", "offline", "sleep", "user", "import", "restore"]


class Operation(BaseModel):
    """One change: ``add`` (content), ``update`` (one id + content), ``merge`` (two or more ids
    + the content that replaces them), ``remove`` (ids)."""

    op: OpKind
    bullet_ids: list[int] = Field(default_factory=list)
    section: Section = "general"
    content: str = ""

    def describe(self) -> str:
        ids = ",".join(str(i) for i in self.bullet_ids)
        text = f' "{self.content}"' if self.content else ""
        return f"{self.op}{' ' + ids if ids else ''}{text}"


class BulletTag(BaseModel):
    bullet_id: int
    tag: TagKind


class Delta(BaseModel):
    """What one learning step (or a person) wants changed, and where it came from."""

    operations: list[Operation] = Field(default_factory=list)
    tags: list[BulletTag] = Field(default_factory=list)
    source: DeltaSource
    episode_id: int | None = None
    note: str = ""

    def record(self, **fields) -> DeltaRecord:
        """How the store logs this delta (``fields``: changes, figures, reason)."""
        return DeltaRecord(source=self.source, episode_id=self.episode_id,
                           operations=[o.model_dump() for o in self.operations],
                           tags=[t.model_dump() for t in self.tags], **fields)
