"""The deterministic merge: a playbook and a delta in, the next version (or a rejection) out.

No model runs here, so the same playbook and delta always give the same result, and a delta is
applied whole or not at all. A delta is rejected, with every reason, when it is empty, names a
bullet that does not exist (or the same bullet twice), has an operation of the wrong shape, holds
text the rules in ``rules.py`` refuse, or contradicts a bullet it leaves in place (near-identical
advice with the negation flipped). Within a valid delta, an added or rewritten bullet that is a
near-duplicate (embedding similarity) of another is skipped rather than kept twice, and a delta
whose every operation was skipped is rejected as changing nothing. Counters move by tags; merging
bullets sums their counters; past the size cap the least helpful, oldest bullets leave first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from engines.ace.playbook import BULLET_MAX_CHARS, Bullet, Delta, Operation, Playbook
from engines.ace.rules import Evidence, bullet_problem

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]
CONTRADICTION_SIMILARITY = 0.7
_NEGATION = re.compile(r"\b(not|never|no|don't|do not|avoid|without|nothing)\b", re.IGNORECASE)


class DeltaRejected(ValueError):
    """The delta cannot be applied; ``reasons`` says why (every problem found, not just the first)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class MergeOutcome(BaseModel):
    playbook: Playbook
    changes: list[str]
    skipped: list[str]


def operation_problems(playbook: Playbook, delta: Delta, evidence: Evidence | None) -> list[str]:
    """Everything wrong with the delta's operations before any is applied."""
    problems: list[str] = []
    touched: set[int] = set()
    for n, op in enumerate(delta.operations, 1):
        where = f"operation {n} ({op.op})"
        ids = op.bullet_ids
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: names a bullet twice")
        wanted = {"add": (0, 0), "update": (1, 1), "merge": (2, 10_000), "remove": (1, 10_000)}[op.op]
        if not wanted[0] <= len(set(ids)) <= wanted[1]:
            problems.append(f"{where}: takes {'no' if wanted[1] == 0 else wanted[0]}"
                            f"{'' if wanted[0] == wanted[1] else ' or more'} bullet id(s), got {len(ids)}")
        missing = [i for i in ids if i not in playbook.ids]
        if missing:
            problems.append(f"{where}: no bullet {', '.join(map(str, missing))}")
        twice = touched & set(ids)
        if twice:
            problems.append(f"{where}: bullet {', '.join(map(str, sorted(twice)))} changed twice")
        touched |= set(ids)
        if op.op == "remove":
            continue
        if not op.content.strip():
            problems.append(f"{where}: has no text")
        elif len(op.content) > BULLET_MAX_CHARS:
            problems.append(f"{where}: longer than {BULLET_MAX_CHARS} characters")
        else:
            problem = bullet_problem(op.content, evidence)
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


def _negated(text: str) -> bool:
    return bool(_NEGATION.search(text))


class _Merger:
    """Applies one valid delta to a copy of the bullets, in order."""

    def __init__(self, playbook: Playbook, embed: Embed | None, dedup_similarity: float) -> None:
        self.bullets: dict[int, Bullet] = {b.id: b for b in playbook.bullets}
        self.next_id = playbook.next_id
        self.embed = embed
        self.dedup_similarity = dedup_similarity
        self.changes: list[str] = []
        self.skipped: list[str] = []

    def _nearest(self, text: str, exclude: set[int]) -> tuple[Bullet | None, float]:
        others = [b for i, b in self.bullets.items() if i not in exclude]
        if not others or self.embed is None:
            return None, -1.0
        vectors = self.embed([text, *(b.content for b in others)])
        sims = vectors[1:] @ vectors[0]
        best = int(sims.argmax())
        return others[best], float(sims[best])

    def _place(self, op: Operation, exclude: set[int]) -> bool:
        """Whether ``op``'s text may go in: False (skipped) for a duplicate; raises on a
        contradiction. Without an embedding function (a person's own edit) everything goes in."""
        if self.embed is None:
            return True
        nearest, similarity = self._nearest(op.content, exclude)
        if nearest is None:
            return True
        if similarity >= CONTRADICTION_SIMILARITY and _negated(op.content) != _negated(nearest.content):
            raise DeltaRejected([f"{op.describe()}: contradicts bullet {nearest.id} "
                                 f'"{nearest.content}" (similarity {similarity:.2f})'])
        if similarity >= self.dedup_similarity:
            self.skipped.append(f"{op.describe()}: duplicate of bullet {nearest.id} "
                                f"(similarity {similarity:.2f})")
            return False
        return True

    def apply(self, op: Operation) -> None:
        ids = list(dict.fromkeys(op.bullet_ids))
        if op.op == "remove":
            for i in ids:
                del self.bullets[i]
            self.changes.append(f"removed bullet {', '.join(map(str, ids))}")
        elif op.op == "add":
            if self._place(op, set()):
                self.bullets[self.next_id] = Bullet(id=self.next_id, section=op.section,
                                                    content=op.content.strip())
                self.changes.append(f"added bullet {self.next_id}")
                self.next_id += 1
        elif op.op == "update":
            if self._place(op, set(ids)):
                old = self.bullets[ids[0]]
                self.bullets[old.id] = old.model_copy(update={"content": op.content.strip(),
                                                              "section": op.section})
                self.changes.append(f"updated bullet {old.id}")
        elif self._place(op, set(ids)):  # merge
            parts = [self.bullets.pop(i) for i in ids]
            self.bullets[self.next_id] = Bullet(
                id=self.next_id, section=op.section, content=op.content.strip(),
                helpful=sum(b.helpful for b in parts), harmful=sum(b.harmful for b in parts))
            self.changes.append(f"merged bullets {', '.join(map(str, ids))} into {self.next_id}")
            self.next_id += 1

    def tag(self, delta: Delta) -> None:
        for tag in delta.tags:
            bullet = self.bullets.get(tag.bullet_id)
            if bullet is None:
                self.skipped.append(f"tag {tag.tag} on bullet {tag.bullet_id}: no such bullet")
            elif tag.tag != "neutral":
                field = tag.tag
                self.bullets[bullet.id] = bullet.model_copy(update={field: getattr(bullet, field) + 1})
                self.changes.append(f"bullet {bullet.id} tagged {tag.tag}")

    def cap(self, max_bullets: int) -> None:
        if len(self.bullets) <= max_bullets:
            return
        ranked = sorted(self.bullets.values(), key=lambda b: (b.score, b.id))
        evicted = [b.id for b in ranked[: len(self.bullets) - max_bullets]]
        for i in evicted:
            del self.bullets[i]
        self.changes.append(f"evicted bullet {', '.join(map(str, evicted))} (playbook size cap "
                            f"{max_bullets})")


def merge(playbook: Playbook, delta: Delta, embed: Embed | None, *, dedup_similarity: float = 0.9,
          max_bullets: int = 200, evidence: Evidence | None = None) -> MergeOutcome:
    """The playbook after ``delta`` (version + 1), or ``DeltaRejected``. ``evidence`` (the episode
    a model learned the delta from) makes the rules also refuse text copied from it; ``embed``
    None (a person's edit) skips the duplicate and contradiction checks."""
    if not delta.operations and not delta.tags:
        raise DeltaRejected(["empty delta: no operations"])
    problems = operation_problems(playbook, delta, evidence)
    if problems:
        raise DeltaRejected(problems)
    merger = _Merger(playbook, embed, dedup_similarity)
    merger.tag(delta)
    for op in delta.operations:
        merger.apply(op)
    if not merger.changes:
        raise DeltaRejected(["no change: " + "; ".join(merger.skipped)])
    merger.cap(max_bullets)
    result = Playbook(name=playbook.name, version=playbook.version + 1, next_id=merger.next_id,
                      bullets=sorted(merger.bullets.values(), key=lambda b: b.id))
    return MergeOutcome(playbook=result, changes=merger.changes, skipped=merger.skipped)


def prune_operations(playbook: Playbook, margin: int) -> list[Operation]:
    """Remove the bullets tagged harmful at least ``margin`` times more often than helpful."""
    harmful = [b.id for b in playbook.bullets if b.harmful - b.helpful >= margin]
    return [Operation(op="remove", bullet_ids=harmful)] if harmful else []


def duplicate_merges(playbook: Playbook, embed: Embed, similarity: float) -> list[Operation]:
    """Merge each group of near-duplicate bullets into its best-proven member's text (sleep-time
    housekeeping: duplicates slip in when bullets are edited or imported)."""
    bullets = playbook.bullets
    if len(bullets) < 2:
        return []
    vectors = embed([b.content for b in bullets])
    sims = vectors @ vectors.T
    taken: set[int] = set()
    operations = []
    for i, bullet in enumerate(bullets):
        if bullet.id in taken:
            continue
        group = [b for j, b in enumerate(bullets) if j > i and b.id not in taken and sims[i, j] >= similarity]
        if not group:
            continue
        group = [bullet, *group]
        best = max(group, key=lambda b: (b.score, -b.id))
        taken |= {b.id for b in group}
        operations.append(Operation(op="merge", bullet_ids=[b.id for b in group], section=best.section,
                                    content=best.content))
    return operations
