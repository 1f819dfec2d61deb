"""The FAISS vector index: a rebuildable cache of the chunk embeddings stored in SQLite.

Why it looks like this:
- SQLite is the truth (one row per chunk, its embedding a float32 blob); the FAISS ids ARE the
  chunk row ids (AUTOINCREMENT, never reused). The index file is only a cache, so a missing,
  corrupt or inconsistent file is never an error: `load()` starts empty and `sync()` makes the
  index equal to SQLite again. A crash between the SQLite commit and the index save therefore
  never leaves a chunk unsearchable nor a deleted chunk citable.
- Exact search (IndexIDMap2 over IndexFlatIP) while small; at `ann_threshold` vectors it turns
  itself into an IndexIVFFlat (inner product) trained on its own content, retrains when it has grown
  4x since training, and goes back to exact below threshold/2. It rebuilds from its OWN content:
  the flat storage and the IVF inverted lists both hold the raw float32 vectors, so no caller has to
  hand the vectors back and no direct map is needed.
- Building an IVF is slow (k-means: ~1 s at 20k vectors, ~15 s at 80k on two cores), so it runs
  OUTSIDE the lock on a snapshot, in the thread whose add() triggered it; searches keep using the
  old index meanwhile, and changes made during the build are logged and replayed before the swap.
- `save()` is atomic (temp file + fsync + os.replace) and writes a JSON sidecar (never pickle) with
  the dimension, kind, count, a checksum of the ids and one of the file, so `load()` catches a
  truncated file, bit rot or an index/sidecar pair from two different saves before trusting it.
- One RLock guards every method: the ingest worker adds while the UI thread searches.
- The sidecar names the embedding model and precision the vectors come from (``identity``): a
  saved index of another identity is never loaded (it is rebuilt from SQLite), so vectors of two
  models never meet in one index.

Vectors are expected L2-normalised (inner product = cosine); the index does not normalise them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from pydantic import BaseModel

from store.atomic import remove_stale_temps, write_atomic
from store.index_sidecar import FLAT, FORMAT_VERSION, IVF, read_sidecar, sidecar_path

log = logging.getLogger(__name__)

MIN_POINTS_PER_LIST = 39  # below this faiss k-means warns that training is unreliable
MAX_POINTS_PER_LIST = 256  # training sample cap per list
NLIST_MIN, NLIST_MAX = 16, 65536
RETRAIN_GROWTH = 4  # retrain the IVF once it holds this many times the vectors it was trained on
SYNC_BATCH = 4096
TRAIN_SEED = 1234


class SyncReport(BaseModel):
    """What `VectorIndex.sync` changed to make the index match the truth."""

    added: int
    removed: int
    rebuilt: bool


def choose_nlist(n: int) -> int:
    """About 4*sqrt(n) lists within [16, 65536], but never fewer than 39 training points per list."""
    nlist = int(np.clip(round(4 * np.sqrt(max(n, 1))), NLIST_MIN, NLIST_MAX))
    return max(1, min(nlist, n // MIN_POINTS_PER_LIST))


def _sha256(data: bytes | np.ndarray) -> str:
    """Hex SHA-256 of the raw bytes (of a numpy array: its contiguous buffer)."""
    return hashlib.sha256(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).hexdigest()


def _as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    return ids if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()) else np.unique(ids)


def _member(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `ids` occur in the sorted array `sorted_ids` (binary search)."""
    if len(sorted_ids) == 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return sorted_ids[pos] == ids


class VectorIndex:
    """Cosine search over chunk embeddings keyed by chunk row id; exact when small, IVF when large."""

    def __init__(self, path: Path, dim: int, ann_threshold: int = 20_000, nprobe: int = 24,
                 identity: str | None = None) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.identity = identity  # the embedding model and precision of every vector here
        self.ann_threshold = int(ann_threshold)
        self.nprobe = int(nprobe)
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._generation = 0  # bumped whenever the index object is replaced wholesale
        self._building = False  # an IVF build runs outside the lock
        self._build_log: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._reset()

    # --- state -------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._generation += 1
        self._build_log = None
        self._index: faiss.Index = self._new_flat()
        self._kind = FLAT
        self._trained_at = 0
        self._ids = np.empty(0, dtype=np.int64)  # sorted mirror of the ids in the index
        self._version = 0
        self._saved_version = 0

    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _touch(self) -> None:
        self._version += 1

    @property
    def kind(self) -> str:
        """"flat" (exact) or "ivf" (approximate)."""
        with self._lock:
            return self._kind

    @property
    def dirty(self) -> bool:
        """True when the index changed since it was last saved or loaded."""
        with self._lock:
            return self._version != self._saved_version

    def __len__(self) -> int:
        with self._lock:
            return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids in the index, sorted."""
        with self._lock:
            return self._ids.copy()

    def __contains__(self, chunk_id: int) -> bool:
        with self._lock:
            return bool(self._present(np.array([chunk_id], dtype=np.int64)).any())

    # --- reading the index's own content -----------------------------------------------------
    def _contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, read straight from the flat storage or IVF lists."""
        if self._kind == FLAT:
            flat = faiss.downcast_index(self._index.index)
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
            vectors = faiss.vector_to_array(flat.codes).view(np.float32).reshape(-1, self.dim)
            return ids, vectors
        return self._ivf_contents(self._index)

    def _ivf_contents(self, ivf: faiss.IndexIVFFlat,
                      with_vectors: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Ids (and vectors: IVFFlat codes are the raw float32 vectors) from the inverted lists."""
        invlists = ivf.invlists
        ids_parts = [np.empty(0, dtype=np.int64)]
        vec_parts = [np.empty((0, self.dim), dtype=np.float32)]
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if size == 0:
                continue
            ids_parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
            if with_vectors:
                codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * invlists.code_size)
                vec_parts.append(codes.view(np.float32).reshape(size, self.dim).copy())
        return np.concatenate(ids_parts).astype(np.int64, copy=False), np.concatenate(vec_parts)

    def _present(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of `ids` are in the index (binary search in the sorted mirror)."""
        return _member(self._ids, ids)

    # --- changing it -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under their chunk ids; an id already present is replaced.

        When this add makes the index due for an IVF (re)build, the call also does that build
        (seconds, outside the lock: searches and other calls go on meanwhile)."""
        ids, vectors = self._validate(ids, vectors)
        with self._lock:
            self._add_raw(ids, vectors)
        self._restructure()

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids (unknown ids are ignored); returns how many were removed."""
        with self._lock:
            removed = self._remove_raw(np.unique(_as_ids(ids)))
        if removed:
            self._restructure()
        return removed

    def _validate(self, ids: Any, vectors: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = _as_ids(ids)
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if len(ids) == 0:
            return ids, vectors.reshape(0, self.dim)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if len(np.unique(ids)) != len(ids):  # the last occurrence of a repeated id wins
            _, last = np.unique(ids[::-1], return_index=True)
            keep = np.sort(len(ids) - 1 - last)
            ids, vectors = ids[keep], vectors[keep]
        return ids, vectors

    def _add_raw(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add without restructuring (callers restructure once at the end)."""
        if len(ids) == 0:
            return
        self._remove_raw(ids)
        self._index.add_with_ids(vectors, ids)
        self._ids = np.sort(np.concatenate([self._ids, ids]))  # disjoint: present ids were removed
        if self._build_log is not None:
            self._build_log.append((ids.copy(), vectors.copy()))
        self._touch()

    def _remove_raw(self, ids: np.ndarray) -> int:
        """Remove unique `ids`; only ids actually present reach faiss."""
        present = ids[self._present(ids)]
        if len(present) == 0:
            return 0
        removed = int(self._index.remove_ids(np.ascontiguousarray(present)))
        if removed != len(present):
            log.warning("vector index removed %d of %d expected ids", removed, len(present))
        self._ids = np.delete(self._ids, np.searchsorted(self._ids, present))
        if self._build_log is not None:
            self._build_log.append((present, None))
        self._touch()
        return removed

    # --- flat <-> ivf ------------------------------------------------------------------------
    def _wanted_structure(self) -> str | None:
        """FLAT or IVF when the index should be rebuilt as that kind, None when it is fine."""
        n = int(self._index.ntotal)
        if self._kind == FLAT:
            return IVF if n >= self.ann_threshold and n >= MIN_POINTS_PER_LIST else None
        if n < self.ann_threshold / 2 or n < MIN_POINTS_PER_LIST:
            return FLAT
        if n >= RETRAIN_GROWTH * max(self._trained_at, 1):
            return IVF
        return None

    def _restructure(self) -> bool:
        """Switch to exact, or (re)build the IVF, when the size calls for it; True if it did.

        Call it WITHOUT holding the lock: the IVF build (training + adding a snapshot) runs
        unlocked, then the changes made meanwhile are replayed and the new index swapped in."""
        with self._lock:
            target = self._wanted_structure()
            if target is None or self._building:
                return False
            if target == FLAT:
                self._to_flat()
                return True
            ids, vectors = self._contents()
            generation, self._building, self._build_log = self._generation, True, []
        try:
            ivf = self._build_ivf(ids, vectors)
            del vectors
            with self._lock:
                return self._swap_in(ivf, generation)
        except Exception:  # the old index still holds everything: keep serving from it
            log.exception("building the IVF index failed; staying %s", self._kind)
            return False
        finally:
            with self._lock:
                self._building, self._build_log = False, None

    def _to_flat(self) -> None:
        ids, vectors = self._contents()
        index = self._new_flat()
        index.add_with_ids(vectors, ids)
        self._install(index, FLAT, 0)

    def _swap_in(self, ivf: faiss.IndexIVFFlat, generation: int) -> bool:
        """Replay the changes logged during the build onto `ivf` and make it the index."""
        if self._generation != generation or self._build_log is None:
            return False  # loaded, reset or switched to exact meanwhile: the build is stale
        if len(self._ids) < self.ann_threshold / 2:
            return False
        for ids, vectors in self._build_log:
            ivf.remove_ids(ids)
            if vectors is not None:
                ivf.add_with_ids(vectors, ids)
        if ivf.ntotal != len(self._ids):
            log.warning("IVF build replay left %d vectors, expected %d; discarded",
                        ivf.ntotal, len(self._ids))
            return False
        self._install(ivf, IVF, int(ivf.ntotal))
        return True

    def _install(self, index: faiss.Index, kind: str, trained_at: int) -> None:
        self._index, self._kind, self._trained_at = index, kind, trained_at
        self._generation += 1
        self._touch()
        log.info("vector index rebuilt as %s with %d vectors", kind, index.ntotal)

    def _build_ivf(self, ids: np.ndarray, vectors: np.ndarray) -> faiss.IndexIVFFlat:
        """A new IVF trained on (a sample of) `vectors`, holding them all; touches no state."""
        n = len(ids)
        nlist = choose_nlist(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True  # unit-norm centroids suit cosine data
        sample_size = min(n, MAX_POINTS_PER_LIST * nlist)
        rng = np.random.default_rng(TRAIN_SEED)
        sample = vectors if sample_size == n else vectors[np.sort(rng.choice(n, sample_size, replace=False))]
        ivf.train(np.ascontiguousarray(sample))
        ivf.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids))
        ivf.nprobe = min(self.nprobe, nlist)
        return ivf

    # --- searching ---------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row, best first; missing slots have id -1."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.shape[1] != self.dim:
            raise ValueError(f"expected queries with {self.dim} columns, got {q.shape}")
        k = max(int(k), 0)
        with self._lock:
            if k == 0 or len(q) == 0 or self._index.ntotal == 0:
                return (np.full((len(q), k), -np.inf, dtype=np.float32),
                        np.full((len(q), k), -1, dtype=np.int64))
            scores, ids = self._index.search(q, k)
        return scores, ids.astype(np.int64, copy=False)

    # --- reconciling with the truth ----------------------------------------------------------
    def sync(self, truth_ids: np.ndarray,
             fetch_vectors: Callable[[np.ndarray], np.ndarray]) -> SyncReport:
        """Make the index hold exactly `truth_ids`: drop the rest, fetch and add what is missing.

        `fetch_vectors(ids)` returns the stored vectors in the order of `ids`; when it returns fewer
        rows (ids deleted meanwhile) the batch is fetched id by id and the vanished ids skipped.
        Holds the lock while reconciling; run it while no other writer changes the store (at start).
        """
        truth = _sorted_unique(_as_ids(truth_ids))
        with self._lock:
            was_empty = self._index.ntotal == 0
            stale = self._ids[~_member(truth, self._ids)]
            missing = truth[~self._present(truth)]
            removed = self._remove_raw(stale)
            added = 0
            for start in range(0, len(missing), SYNC_BATCH):
                ids, vectors = self._fetch(missing[start:start + SYNC_BATCH], fetch_vectors)
                self._add_raw(ids, vectors)
                added += len(ids)
        restructured = self._restructure()
        return SyncReport(added=added, removed=removed,
                          rebuilt=restructured or (was_empty and added > 0))

    def _fetch(self, ids: np.ndarray,
               fetch_vectors: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        vectors = self._fetched(fetch_vectors(ids))
        if len(vectors) == len(ids):
            return ids, vectors
        kept_ids, kept = [], []
        for one in ids:
            row = self._fetched(fetch_vectors(np.array([one], dtype=np.int64)))
            if len(row) == 1:
                kept_ids.append(one)
                kept.append(row[0])
        log.warning("%d of %d ids vanished from the store during sync", len(ids) - len(kept_ids), len(ids))
        if not kept:
            return np.empty(0, dtype=np.int64), np.empty((0, self.dim), dtype=np.float32)
        return np.asarray(kept_ids, dtype=np.int64), np.stack(kept)

    def _fetched(self, vectors: np.ndarray) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.size == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"fetched vectors have shape {arr.shape}, expected (n, {self.dim})")
        return np.ascontiguousarray(arr)

    # --- disk --------------------------------------------------------------------------------
    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.path)

    def save(self) -> None:
        """Atomically write the index file and its JSON sidecar (index first, sidecar last)."""
        with self._save_lock:
            with self._lock:  # serialise in memory under the lock; disk I/O happens outside it
                data = faiss.serialize_index(self._index)
                meta = self._meta(data)
                version = self._version
            write_atomic(self.path, data, sync_dir=False)
            write_atomic(self.sidecar_path, json.dumps(meta, indent=1).encode())
            with self._lock:
                self._saved_version = version
            log.debug("vector index saved: %d %s vectors", meta["count"], meta["kind"])

    def _meta(self, data: np.ndarray) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION, "dim": self.dim, "kind": self._kind,
            "count": int(self._index.ntotal), "trained_at": self._trained_at,
            "ids_sha256": _sha256(self._ids), "file_bytes": int(data.size), "file_sha256": _sha256(data),
            "model": self.identity,
        }

    def load(self) -> bool:
        """Replace the in-memory index with the saved one; False (and empty) when missing or bad.

        Never raises for a bad file: it logs a warning, starts empty and marks itself dirty so the
        next save overwrites the bad file; `sync()` then refills it from the store.
        """
        with self._lock:
            self._reset()
            for target in (self.path, self.sidecar_path):
                remove_stale_temps(target)  # left by a save that was killed
            if not self.path.exists():
                log.info("no vector index at %s yet; starting empty", self.path)
                return False
            try:
                meta = self._read_meta()
                index = self._read_index(meta)
                ids = self._checked_ids(index, meta)
            except Exception as exc:  # a corrupt cache must never stop the app
                log.warning("vector index %s unusable (%s); starting empty, it will be rebuilt",
                            self.path, exc)
                self._reset()
                self._version = 1  # dirty: the next save replaces the bad file
                return False
            self._index, self._kind, self._ids = index, meta["kind"], ids
            self._trained_at = int(meta.get("trained_at", 0))
            self._generation += 1
            return True

    def _read_meta(self) -> dict[str, Any]:
        meta = read_sidecar(self.path)
        if int(meta["dim"]) != self.dim:
            raise ValueError(f"dimension {meta['dim']} != {self.dim}")
        saved = meta.get("model")  # absent in files saved before identities were recorded
        if self.identity is not None and saved is not None and saved != self.identity:
            raise ValueError(f"vectors of {saved!r}, not {self.identity!r}")
        return meta

    def _read_index(self, meta: dict[str, Any]) -> faiss.Index:
        """Read the file, verify size and checksum BEFORE faiss parses it, then check its shape."""
        data = self.path.read_bytes()
        if len(data) != int(meta["file_bytes"]) or _sha256(data) != meta["file_sha256"]:
            raise ValueError("file does not match its sidecar (truncated, damaged or from another save)")
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        wanted = faiss.IndexIDMap2 if meta["kind"] == FLAT else faiss.IndexIVFFlat
        if not isinstance(index, wanted):
            raise ValueError(f"index type {type(index).__name__} does not match kind {meta['kind']!r}")
        if index.d != self.dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("wrong dimension or metric")
        if index.ntotal != int(meta["count"]):
            raise ValueError(f"holds {index.ntotal} vectors, sidecar says {meta['count']}")
        if meta["kind"] == IVF:
            index.nprobe = min(self.nprobe, index.nlist)
        return index

    def _checked_ids(self, index: faiss.Index, meta: dict[str, Any]) -> np.ndarray:
        if meta["kind"] == FLAT:
            ids = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
        else:
            ids, _ = self._ivf_contents(index, with_vectors=False)
        ids = np.sort(ids)
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            raise ValueError("duplicate ids in the index")
        if _sha256(ids) != meta["ids_sha256"]:
            raise ValueError("ids do not match the sidecar checksum")
        return ids
