"""Files handed to Engram through the app (an upload) are copied into the drop folder.

Only the file's own name is kept (never a path from the sender), hidden and unsupported files are
refused with a reason, an existing file is never overwritten (a new name is picked), and each
copy appears atomically (written under a hidden temporary name, then renamed), so the watcher
never reads a half-written file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import BaseModel

from app.ingest.file_rules import is_document, is_ignored_name
from app.ingest.parsers import SUPPORTED_SUFFIXES


class DroppedFile(BaseModel):
    name: str
    path: str | None = None  # where it was copied; None when refused
    refused: str | None = None


def safe_name(name: str) -> str | None:
    """The last component of ``name`` when it is a plain, visible file name; None otherwise."""
    base = Path(name.replace("\\", "/")).name.strip()
    if not base or base in (".", "..") or "\x00" in base or is_ignored_name(base):
        return None
    return base


def free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem (2).ext`` and so on when that name is taken."""
    target = folder / name
    stem, suffix, n = target.stem, target.suffix, 2
    while target.exists():
        target = folder / f"{stem} ({n}){suffix}"
        n += 1
    return target


def copy_into(folder: Path, files: list[tuple[Path, str]]) -> list[DroppedFile]:
    """Copy each (source file, original name) into ``folder``; refused ones say why."""
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for source, original in files:
        name = safe_name(original)
        if name is None:
            results.append(DroppedFile(name=original, refused="not a plain, visible file name"))
        elif not is_document(Path(name)):
            kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
            results.append(DroppedFile(name=name, refused=f"Engram reads only {kinds} files"))
        else:
            target = free_path(folder, name)
            tmp = folder / f".{target.name}.engram-part"
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            results.append(DroppedFile(name=name, path=str(target)))
    return results
