"""VectorIndex: exact/IVF search, replace and remove, atomic save/load, repair from the truth."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from store.vector_index import SyncReport, VectorIndex, choose_nlist

DIM = 384


def clustered(n: int, seed: int = 0, centres: int = 50, spread: float = 2.4) -> np.ndarray:
    """Unit vectors around `centres` unit cluster centres plus Gaussian noise of norm ~`spread`.

    The clusters overlap enough that IVF recall depends on nprobe (not trivially 1.0)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.normal(scale=spread / np.sqrt(DIM), size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Truth:
    """A stand-in for SQLite: id -> vector, with a fetch callback like DocumentStore.vectors."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.rows = {int(i): v for i, v in zip(ids, vectors)}
        self.fetched = 0

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.rows), dtype=np.int64)

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        found = [self.rows[int(i)] for i in ids if int(i) in self.rows]  # missing ids are skipped
        self.fetched += len(found)
        return np.stack(found) if found else np.zeros((0, 0), dtype=np.float32)


@pytest.fixture(scope="module")
def drawn() -> np.ndarray:
    return clustered(5200)


@pytest.fixture(scope="module")
def data(drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = drawn[:5000]
    ids = np.arange(100, 100 + len(vectors), dtype=np.int64)  # FAISS ids are chunk row ids
    return ids, vectors


@pytest.fixture(scope="module")
def queries(drawn: np.ndarray) -> np.ndarray:
    """200 held-out points from the same clusters as `data`."""
    return drawn[5000:]


def exact_top(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


def test_flat_top1_is_itself(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    index.add(ids[:1000], vectors[:1000])
    scores, found = index.search(vectors[:50], 5)
    assert index.kind == "flat" and len(index) == 1000
    assert (found[:, 0] == ids[:50]).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert (found == exact_top(vectors[:1000], ids[:1000], vectors[:50], 5)).all()


def test_search_edges(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    scores, found = index.search(vectors[:2], 3)
    assert found.shape == (2, 3) and (found == -1).all()
    index.add(ids[:2], vectors[:2])
    _, found = index.search(vectors[0], 4)  # a single 1-D query works too
    assert found.shape == (1, 4) and set(found[0, :2]) == set(ids[:2]) and (found[0, 2:] == -1).all()
    with pytest.raises(ValueError):
        index.add(ids[:3], vectors[:2])
    with pytest.raises(ValueError):
        index.search(np.zeros((1, DIM + 1), dtype=np.float32), 1)


def test_remove_never_returned(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    index.add(ids[:500], vectors[:500])
    gone = ids[:100]
    assert index.remove(np.concatenate([gone, [999_999]])) == 100  # unknown ids are ignored
    assert index.remove(gone) == 0
    assert index.remove(np.array([], dtype=np.int64)) == 0
    _, found = index.search(vectors[:100], 10)
    assert not np.isin(found, gone).any()
    assert len(index) == 400 and set(index.ids()) == set(ids[100:500])


def test_readd_replaces(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    index.add(ids[:10], vectors[:10])
    index.add(ids[:1], vectors[20:21])  # same id, new vector
    assert len(index) == 10
    _, found = index.search(vectors[20:21], 1)
    assert found[0, 0] == ids[0]
    _, found = index.search(vectors[0:1], 1)
    assert found[0, 0] != ids[0]
    index.add(np.array([7, 7]), vectors[30:32])  # a repeated id in one batch: the last wins
    _, found = index.search(vectors[31:32], 1)
    assert found[0, 0] == 7 and len(index) == 11


def test_save_load_round_trip(tmp_path: Path, data) -> None:
    ids, vectors = data
    path = tmp_path / "index" / "chunks.faiss"
    index = VectorIndex(path, DIM)
    index.add(ids[:300], vectors[:300])
    assert index.dirty
    index.save()
    assert not index.dirty and path.exists() and index.sidecar_path.exists()
    meta = json.loads(index.sidecar_path.read_text())
    assert meta["dim"] == DIM and meta["kind"] == "flat" and meta["count"] == 300
    assert not list(path.parent.glob("*.tmp"))  # no temp files left behind

    again = VectorIndex(path, DIM)
    assert again.load() and not again.dirty
    assert (again.ids() == index.ids()).all()
    a, b = index.search(vectors[:20], 5), again.search(vectors[:20], 5)
    assert (a[1] == b[1]).all() and np.allclose(a[0], b[0])


def test_empty_index_round_trip(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    index.add(np.array([], dtype=np.int64), np.zeros((0, DIM), dtype=np.float32))
    index.save()
    again = VectorIndex(tmp_path / "i.faiss", DIM)
    assert again.load() and len(again) == 0 and len(again.ids()) == 0


def test_load_missing_starts_empty(tmp_path: Path) -> None:
    index = VectorIndex(tmp_path / "nothing.faiss", DIM)
    assert index.load() is False and len(index) == 0 and not index.dirty


@pytest.mark.parametrize("damage", ["truncate", "garbage", "garbage_signed", "no_sidecar", "bad_json",
                                    "wrong_dim"])
def test_corrupt_file_starts_empty_and_sync_rebuilds(tmp_path: Path, data, damage: str) -> None:
    ids, vectors = data
    path = tmp_path / "chunks.faiss"
    index = VectorIndex(path, DIM)
    index.add(ids[:400], vectors[:400])
    index.save()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))
    elif damage == "garbage_signed":  # the checksums match, so faiss itself must reject it
        junk = np.random.default_rng(2).bytes(path.stat().st_size)
        path.write_bytes(junk)
        meta = json.loads(index.sidecar_path.read_text())
        meta.update(file_bytes=len(junk), file_sha256=hashlib.sha256(junk).hexdigest())
        index.sidecar_path.write_text(json.dumps(meta))
    elif damage == "no_sidecar":
        index.sidecar_path.unlink()
    elif damage == "bad_json":
        index.sidecar_path.write_text("{not json")
    loaded = VectorIndex(path, DIM // 2 if damage == "wrong_dim" else DIM)
    assert loaded.load() is False  # warns, never raises
    assert len(loaded) == 0 and loaded.dirty  # dirty: the next save overwrites the bad file
    if damage == "wrong_dim":
        return
    truth = Truth(ids[:400], vectors[:400])
    report = loaded.sync(truth.ids(), truth.fetch)
    assert report == SyncReport(added=400, removed=0, rebuilt=True)
    assert (loaded.ids() == truth.ids()).all()
    loaded.save()
    assert VectorIndex(path, DIM).load()


def test_sidecar_mismatch_detected(tmp_path: Path, data) -> None:
    """A crash between the two renames leaves a new index with an old sidecar: not trusted."""
    ids, vectors = data
    path = tmp_path / "chunks.faiss"
    index = VectorIndex(path, DIM)
    index.add(ids[:100], vectors[:100])
    index.save()
    old_sidecar = index.sidecar_path.read_text()
    index.add(ids[100:200], vectors[100:200])
    index.save()
    index.sidecar_path.write_text(old_sidecar)
    assert VectorIndex(path, DIM).load() is False

    index.save()  # same file, but the ids checksum disagrees
    meta = json.loads(index.sidecar_path.read_text())
    meta["ids_sha256"] = "0" * 64
    index.sidecar_path.write_text(json.dumps(meta))
    assert VectorIndex(path, DIM).load() is False


def test_sync_adds_missing_and_removes_stale(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    index.add(ids[:300], vectors[:300])  # the saved index; then the store moved on
    truth = Truth(ids[100:500], vectors[100:500])
    report = index.sync(truth.ids(), truth.fetch)
    assert report == SyncReport(added=200, removed=100, rebuilt=False)
    assert (index.ids() == truth.ids()).all() and truth.fetched == 200
    _, found = index.search(vectors[:100], 10)
    assert not np.isin(found, ids[:100]).any()  # stale vectors are never cited
    _, found = index.search(vectors[300:500], 1)
    assert (found[:, 0] == ids[300:500]).all()  # missing chunks became searchable
    assert index.sync(truth.ids(), truth.fetch) == SyncReport(added=0, removed=0, rebuilt=False)


def test_sync_skips_ids_that_vanished(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM)
    truth = Truth(ids[:50], vectors[:50])
    listed = truth.ids()
    for gone in listed[::10]:
        del truth.rows[int(gone)]  # deleted between listing the ids and fetching the vectors
    report = index.sync(listed, truth.fetch)
    assert report.added == 45 and (index.ids() == truth.ids()).all()


def test_sync_is_fast_when_nothing_differs(tmp_path: Path) -> None:
    n = 100_000
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64) * 3
    index = VectorIndex(tmp_path / "i.faiss", 8, ann_threshold=10 * n)
    index.add(ids, vectors)

    def no_fetch(_: np.ndarray) -> np.ndarray:
        raise AssertionError("nothing should be fetched")

    t0 = time.perf_counter()
    report = index.sync(ids, no_fetch)
    assert time.perf_counter() - t0 < 0.5
    assert report == SyncReport(added=0, removed=0, rebuilt=False)


def test_ivf_switch_recall_remove_and_back_to_flat(tmp_path: Path, data, queries) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM, ann_threshold=2000)  # default nprobe 24
    for start in range(0, 5000, 500):  # grows like ingestion does, batch by batch
        index.add(ids[start:start + 500], vectors[start:start + 500])
        assert index.kind == ("flat" if start + 500 < 2000 else "ivf")
    assert len(index) == 5000 and (index.ids() == ids).all()

    _, found = index.search(queries, 10)
    truth = exact_top(vectors, ids, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.95, recall

    _, self_hit = index.search(vectors[:100], 1)
    assert (self_hit[:, 0] == ids[:100]).all()

    assert index.remove(ids[:2000]) == 2000 and index.kind == "ivf"  # 3000 >= threshold/2
    _, found = index.search(vectors[:2000], 10)
    assert not np.isin(found, ids[:2000]).any()

    index.save()
    again = VectorIndex(tmp_path / "i.faiss", DIM, ann_threshold=2000)
    assert again.load() and again.kind == "ivf" and (again.ids() == ids[2000:]).all()

    assert index.remove(ids[2000:4100]) == 2100 and index.kind == "flat"  # 900 < 1000
    assert (index.ids() == ids[4100:]).all()
    _, found = index.search(vectors[4100:4200], 1)
    assert (found[:, 0] == ids[4100:4200]).all()


def test_ivf_retrains_after_growing(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM, ann_threshold=1000)
    index.add(ids[:1000], vectors[:1000])
    first_nlist = index._index.nlist
    index.add(ids[1000:3999], vectors[1000:3999])
    assert index._index.nlist == first_nlist  # 3999 < 4 * 1000: not yet
    index.add(ids[3999:4000], vectors[3999:4000])
    assert index.kind == "ivf" and index._index.nlist > first_nlist and len(index) == 4000


def test_sync_restructures_for_a_new_threshold(tmp_path: Path, data) -> None:
    ids, vectors = data
    path = tmp_path / "i.faiss"
    index = VectorIndex(path, DIM)
    index.add(ids[:3000], vectors[:3000])
    index.save()
    smaller = VectorIndex(path, DIM, ann_threshold=2000)  # the setting changed since the save
    assert smaller.load() and smaller.kind == "flat"
    truth = Truth(ids[:3000], vectors[:3000])
    report = smaller.sync(truth.ids(), truth.fetch)
    assert report == SyncReport(added=0, removed=0, rebuilt=True) and smaller.kind == "ivf"


def test_choose_nlist() -> None:
    assert choose_nlist(2000) == 51  # limited by 39 training points per list
    assert choose_nlist(100_000) == 1265  # about 4 * sqrt(n)
    assert choose_nlist(10**12) == 65536
    assert choose_nlist(10) == 1


def test_concurrent_add_and_search(tmp_path: Path, data) -> None:
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM, ann_threshold=1500)
    index.add(ids[:100], vectors[:100])
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for start in range(100, 3000, 100):
                index.add(ids[start:start + 100], vectors[start:start + 100])
                if start % 500 == 0:
                    index.remove(ids[start - 50:start])
                    index.save()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                scores, found = index.search(vectors[:8], 10)
                assert found.shape == (8, 10)
                len(index), index.ids(), index.kind
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert index.kind == "ivf" and len(index) == len(index.ids())
    again = VectorIndex(tmp_path / "i.faiss", DIM, ann_threshold=1500)
    assert again.load()


def test_build_runs_outside_the_lock_and_replays_changes(tmp_path: Path, data) -> None:
    """Searches go on during an IVF build; adds, replaces and removes made meanwhile survive it."""
    ids, vectors = data
    index = VectorIndex(tmp_path / "i.faiss", DIM, ann_threshold=2000)
    index.add(ids[:1999], vectors[:1999])
    real_build = index._build_ivf
    seen: dict[str, object] = {}

    def build_while_busy(*args):
        searched = threading.Thread(target=lambda: seen.update(hit=index.search(vectors[:1], 1)[1][0, 0]))
        searched.start()
        searched.join(timeout=10)
        seen["searched"] = not searched.is_alive()  # would block if the build held the lock
        index.add(ids[2000:2100], vectors[2000:2100])  # new
        index.add(ids[5:6], vectors[4000:4001])  # replaced
        assert index.remove(ids[10:20]) == 10  # removed
        seen["kind_during"] = index.kind
        return real_build(*args)

    index._build_ivf = build_while_busy
    index.add(ids[1999:2000], vectors[1999:2000])  # reaches the threshold: builds the IVF
    assert seen == {"hit": ids[0], "searched": True, "kind_during": "flat"}
    assert index.kind == "ivf" and len(index) == 2090
    expected = np.setdiff1d(ids[:2100], ids[10:20])
    assert (index.ids() == expected).all()
    _, found = index.search(vectors[4000:4001], 1)
    assert found[0, 0] == ids[5]
    _, found = index.search(vectors[:2100], 10)
    assert not np.isin(found, ids[10:20]).any()


def test_build_made_stale_by_load_is_discarded(tmp_path: Path, data) -> None:
    ids, vectors = data
    path = tmp_path / "i.faiss"
    index = VectorIndex(path, DIM, ann_threshold=2000)
    index.add(ids[:100], vectors[:100])
    index.save()
    index.add(ids[100:1999], vectors[100:1999])
    real_build = index._build_ivf

    def load_meanwhile(*args):
        assert index.load()
        return real_build(*args)

    index._build_ivf = load_meanwhile
    index.add(ids[1999:2000], vectors[1999:2000])
    assert index.kind == "flat" and (index.ids() == ids[:100]).all()
