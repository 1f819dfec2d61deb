"""What a person can do with playbooks: look, edit, delete, restore a version, export, import.

The CLI (``engram playbook ...``) and the UI's Playbook tab are thin layers over this service.
Every change is a delta committed as a new version (source ``user``, ``restore`` or ``import``),
so nothing a person does here loses history: any earlier version can be restored. A person's
edits skip the guard (they are the judge) but not the rules: a bullet still has to be real text.

Importing validates the file completely (``store/playbook_files.py``), then each bullet against
the same rules that guard learned bullets; bullets that fail are skipped and listed. A playbook
of the same name is never overwritten without ``replace`` (then its history is kept and the file's
bullets become a new version, renumbered after its existing ids).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from engines.ace.merge import DeltaRejected, merge
from engines.ace.playbook import Bullet, Delta, Operation, Playbook, Section, valid_name
from engines.ace.rules import intrinsic_problem
from store.playbook_files import PlaybookFile, write_playbook_file
from store.playbooks import DeltaRow, PlaybookStore, PlaybookSummary, VersionRow


class PlaybookError(ValueError):
    """A request about playbooks that cannot be done; the message says why and what to do."""


class ImportReport(BaseModel):
    name: str
    version: int
    imported: int
    skipped: list[str] = Field(default_factory=list, description="Rejected bullets and why.")
    replaced: bool = False


def _clean_text(text: str) -> str:
    return " ".join(text.split())


class PlaybookService:
    def __init__(self, store: PlaybookStore) -> None:
        self.store = store

    # --- looking -------------------------------------------------------------------------------
    def list(self) -> list[PlaybookSummary]:
        return self.store.list()

    def _existing(self, name: str) -> Playbook:
        if not self.store.exists(name):
            known = ", ".join(p.name for p in self.store.list()) or "none yet"
            raise PlaybookError(f"no playbook named {name!r} (playbooks: {known})")
        return self.store.load(name)

    def show(self, name: str, version: int | None = None) -> Playbook:
        """The live version, or ``version``."""
        playbook = self._existing(name)
        if version is None:
            return playbook
        found = self.store.version(name, version)
        if found is None:
            raise PlaybookError(f"playbook {name!r} has no version {version} (latest: {playbook.version})")
        return found

    def versions(self, name: str) -> list[VersionRow]:
        self._existing(name)
        return self.store.versions(name)

    def history(self, name: str, limit: int = 50) -> list[DeltaRow]:
        self._existing(name)
        return self.store.deltas(name, limit)

    # --- changing --------------------------------------------------------------------------------
    def _apply(self, playbook: Playbook, operation: Operation, note: str) -> Playbook:
        delta = Delta(operations=[operation], source="user", note=note)
        try:
            merged = merge(playbook, delta, None, max_bullets=10**9)
        except DeltaRejected as exc:
            raise PlaybookError("; ".join(exc.reasons)) from exc
        self.store.commit(merged.playbook, delta.record(changes=merged.changes))
        return merged.playbook

    def add_bullet(self, name: str, content: str, section: Section = "general") -> Playbook:
        """Add a bullet (the playbook is created when it does not exist yet)."""
        if not valid_name(name):
            raise PlaybookError(f"invalid playbook name {name!r}")
        playbook = self.store.load(name)
        return self._apply(playbook, Operation(op="add", content=_clean_text(content), section=section),
                           "added by hand")

    def edit_bullet(self, name: str, bullet_id: int, content: str | None = None,
                    section: Section | None = None) -> Playbook:
        playbook = self._existing(name)
        bullet = self._bullet(playbook, bullet_id)
        operation = Operation(op="update", bullet_ids=[bullet_id], section=section or bullet.section,
                              content=_clean_text(content) if content is not None else bullet.content)
        return self._apply(playbook, operation, "edited by hand")

    def delete_bullet(self, name: str, bullet_id: int) -> Playbook:
        playbook = self._existing(name)
        self._bullet(playbook, bullet_id)
        return self._apply(playbook, Operation(op="remove", bullet_ids=[bullet_id]), "deleted by hand")

    @staticmethod
    def _bullet(playbook: Playbook, bullet_id: int) -> Bullet:
        bullet = playbook.get(bullet_id)
        if bullet is None:
            raise PlaybookError(f"playbook {playbook.name!r} has no bullet {bullet_id}")
        return bullet

    def restore(self, name: str, version: int) -> Playbook:
        """Make ``version``'s bullets the live ones, as a new version (history is kept)."""
        current = self._existing(name)
        old = self.show(name, version)
        restored = Playbook(name=name, version=current.version + 1,
                            next_id=max(current.next_id, old.next_id), bullets=old.bullets)
        delta = Delta(source="restore", note=f"restore version {version}")
        self.store.commit(restored, delta.record(changes=[f"restored version {version} "
                                                           f"({len(old.bullets)} bullets)"]))
        return restored

    # --- files -----------------------------------------------------------------------------------
    def export(self, name: str, path: Path) -> Path:
        return write_playbook_file(self._existing(name), path)

    def import_parsed(self, file: PlaybookFile, origin: str, name: str | None = None,
                      replace: bool = False) -> ImportReport:
        name = name or file.name
        if not valid_name(name):
            raise PlaybookError(f"invalid playbook name {name!r}: use letters, digits, '_', '.' and "
                                "'-' (at most 64 characters, no path separators)")
        exists = self.store.exists(name)
        if exists and not replace:
            raise PlaybookError(f"a playbook named {name!r} exists: replace it (its history is kept) "
                                "or import under another name")
        kept, skipped = self._acceptable(file)
        current = self.store.load(name)
        if exists:  # renumber after the existing ids: ids are never reused within a playbook
            kept = [b.model_copy(update={"id": current.next_id + n}) for n, b in enumerate(kept)]
        next_id = max([current.next_id, *(b.id + 1 for b in kept)])
        imported = Playbook(name=name, version=current.version + 1, next_id=next_id, bullets=kept)
        delta = Delta(source="import", note=f"import {origin}")
        self.store.commit(imported, delta.record(
            changes=[f"imported {len(kept)} bullets from {origin}"], figures={"skipped": skipped}))
        return ImportReport(name=name, version=imported.version, imported=len(kept), skipped=skipped,
                            replaced=exists)

    @staticmethod
    def _acceptable(file: PlaybookFile) -> tuple[list[Bullet], list[str]]:
        """The file's bullets that pass the rules, and why each other one was skipped."""
        kept: list[Bullet] = []
        skipped: list[str] = []
        seen: set[str] = set()
        for n, item in enumerate(file.bullets):
            text = _clean_text(item.content)
            problem = intrinsic_problem(text)
            if problem is None and text.casefold() in seen:
                problem = "the same text as an earlier bullet"
            if problem:
                skipped.append(f"bullets[{n}] (id {item.id}): {problem}")
                continue
            seen.add(text.casefold())
            kept.append(Bullet(**{**item.model_dump(), "content": text}))
        return kept, skipped
