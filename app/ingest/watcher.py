"""Folder watching with watchdog, debounced.

Editors save in storms (write temp, rename, touch, chmod). Every event only records the path and
the time; a flusher hands a path on once it has been quiet for ``debounce_s``, so a storm becomes
one job. Paths are handed on as they are: the ingest job itself decides whether the path is now a
file (ingest), a folder (scan it) or gone (forget it, and everything below it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from app.ingest.file_rules import is_document, is_ignored_name

log = logging.getLogger(__name__)


class _Recorder(FileSystemEventHandler):
    def __init__(self, root: Path, note: Callable[[Path], None]) -> None:
        self.root = root
        self.note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            return  # a folder "modified" means its entries changed, and they have their own events
        paths = [event.src_path]
        if getattr(event, "dest_path", ""):
            paths.append(event.dest_path)
        for raw in paths:
            path = Path(os.fsdecode(raw))
            if self._relevant(path, event.is_directory):
                self.note(path)

    def _relevant(self, path: Path, is_directory: bool) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        if any(is_ignored_name(p) for p in rel.parts):
            return False
        # Folders matter too: a folder moved in must be scanned, one deleted must be forgotten.
        return is_directory or is_document(path)


class FolderWatcher:
    """Watches folders recursively and calls ``on_paths`` with debounced, de-duplicated paths."""

    def __init__(self, on_paths: Callable[[list[Path]], None], debounce_s: float = 1.0) -> None:
        self.on_paths = on_paths
        self.debounce_s = debounce_s
        self._observer = Observer()
        self._watches: dict[str, object] = {}
        self._pending: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="engram-watch-flush", daemon=True)

    def start(self) -> None:
        self._observer.start()
        self._flusher.start()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        self._flusher.join(timeout=5)
        self.flush(force=True)

    def watch(self, folder: Path) -> None:
        key = str(folder)
        if key in self._watches:
            return
        try:
            self._watches[key] = self._observer.schedule(_Recorder(folder, self._note), key, recursive=True)
        except OSError as exc:
            log.warning("cannot watch %s: %s", folder, exc)

    def unwatch(self, folder: Path) -> None:
        watch = self._watches.pop(str(folder), None)
        if watch is not None:
            self._observer.unschedule(watch)

    @property
    def watched(self) -> list[str]:
        return sorted(self._watches)

    def _note(self, path: Path) -> None:
        with self._lock:
            self._pending[path] = time.monotonic()

    def flush(self, force: bool = False) -> list[Path]:
        """Hand on the paths that have been quiet long enough (all of them when ``force``)."""
        now = time.monotonic()
        with self._lock:
            ready = [p for p, t in self._pending.items() if force or now - t >= self.debounce_s]
            for p in ready:
                del self._pending[p]
        if ready:
            try:
                self.on_paths(sorted(ready))
            except Exception:
                log.exception("could not queue changed paths")
        return ready

    def _flush_loop(self) -> None:
        interval = max(0.05, min(0.5, self.debounce_s / 4))
        while not self._stop.wait(interval):
            self.flush()
