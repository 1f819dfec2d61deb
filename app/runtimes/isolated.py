"""A runtime whose model runs in a supervised child process, so a crash there never takes Engram down.

Native inference can die in ways Python cannot catch: a segfault in a CPU kernel, an out-of-memory
kill, a hang. Desktop LLM apps run the model in a separate process for this reason, and so does
Engram for llama.cpp: ``IsolatedRuntime`` starts ``app.runtimes.isolated_child``, streams the
tokens back over a pipe (JSON lines), and when the child dies or goes silent for
``stall_timeout_s`` the answer ends with ``RuntimeCrashed``, a message that says what happened and
what to do. The next request starts a new child; nothing stored is touched.

The torch runtime stays in the app's process: it answers with the weights the learning engines
train in place (``engines/ttt``), which a child process could only see through a copy after every
learning step.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.generation import (
    GenerationRequest,
    PromptTooLong,
    Runtime,
    RuntimeCrashed,
    RuntimeUnavailable,
    TextDelta,
    Usage,
)

log = logging.getLogger(__name__)

CHILD_MODULE = "app.runtimes.isolated_child"
STDERR_LINES = 20
CLOSE_WAIT_S = 5.0
_DIED = "died"


def describe_exit(returncode: int | None) -> str:
    """A child's end in words: the signal and its usual cause."""
    if returncode is None:
        return "stopped"
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"was stopped by signal {-returncode}"
    cause = {
        signal.SIGSEGV: "a crash inside the model library",
        signal.SIGBUS: "a crash inside the model library",
        signal.SIGILL: "an instruction this CPU does not have: the model library was built for "
                       "another CPU",
        signal.SIGABRT: "the model library aborted",
        signal.SIGKILL: "killed from outside, most often because the machine ran out of memory",
    }.get(sig)
    return f"crashed with {sig.name}" + (f" ({cause})" if cause else "")


def error_from(reply: dict[str, Any]) -> Exception:
    """The exception the child reported, rebuilt in this process."""
    kind, message = reply.get("type"), str(reply.get("message", ""))
    if kind == "PromptTooLong":
        return PromptTooLong(int(reply["prompt_tokens"]), int(reply["context_window"]))
    if kind == "ValueError":
        return ValueError(message)
    if kind == "RuntimeUnavailable":
        return RuntimeUnavailable(message)
    return RuntimeUnavailable(f"the model failed: {kind}: {message}")


class _Child:
    """One running child process: its pipes, its reader threads, the requests waiting on it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1, env=env)
        self.pending: dict[int, queue.Queue[dict[str, Any]]] = {}
        self.started: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self.last_reply = time.monotonic()
        self.stopped_because: str | None = None
        self.died: dict[str, Any] | None = None
        self._write = threading.Lock()
        self._pending_lock = threading.Lock()
        self.send(spec)
        threading.Thread(target=self._read, daemon=True, name="runtime-replies").start()
        threading.Thread(target=self._read_stderr, daemon=True, name="runtime-stderr").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: dict[str, Any]) -> bool:
        """Write one request; False when the child is gone (its reader reports how)."""
        try:
            with self._write:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps(message) + "\n")
                self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def expect(self, rid: int) -> queue.Queue[dict[str, Any]]:
        replies: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._pending_lock:
            if self.died is not None:  # it died before this request was registered
                replies.put(self.died)
            self.pending[rid] = replies
        return replies

    def forget(self, rid: int) -> None:
        with self._pending_lock:
            self.pending.pop(rid, None)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last_reply = time.monotonic()
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("runtime child wrote a line that is not JSON: %r", line[:200])
                continue
            if "id" in message:
                with self._pending_lock:
                    waiting = self.pending.get(int(message["id"]))
                if waiting is not None:
                    waiting.put(message)
            else:
                self.started.put(message)
        returncode = self.proc.wait()
        died = {"op": _DIED, "returncode": returncode}
        self.started.put(died)
        with self._pending_lock:
            self.died = died
            for waiting in self.pending.values():
                waiting.put(died)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip()
            if line:
                self.stderr.append(line)
                log.debug("runtime child: %s", line)

    def kill(self, because: str) -> None:
        self.stopped_because = because
        try:
            self.proc.kill()
        except OSError:
            pass

    def close(self) -> None:
        self.send({"op": "close"})
        try:
            self.proc.wait(timeout=CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill("closed")
            self.proc.wait()
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass


class IsolatedRuntime(Runtime):
    """The runtime of ``backend``/``model`` running in a child process that is restarted on demand.

    ``stall_timeout_s``: a request that gets nothing back from the child for this long is taken
    for a hang; the child is killed and the answer ends with the reason. ``load_timeout_s``: the
    longest a model may take to load.
    """

    def __init__(self, backend: str, model: str, *, stall_timeout_s: float = 300.0,
                 load_timeout_s: float = 600.0, **options: Any) -> None:
        self.name = backend  # type: ignore[misc]  # answers say which backend wrote them
        self.backend = backend
        self.requested_model = model
        self.stall_timeout_s = stall_timeout_s
        self.load_timeout_s = load_timeout_s
        self._spec = {"backend": backend, "model": model, "options": options}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._closed = False
        self.restarts = 0
        self.info: dict[str, Any] = {}
        self._child_now()  # load at once: a model that does not load fails here, as in-process

    # --- the child ------------------------------------------------------------------------------
    def _child_now(self) -> _Child:
        """The running child, starting a new one when there is none or it died."""
        with self._lock:
            if self._closed:
                raise RuntimeUnavailable(f"the {self.backend} runtime for {self.requested_model} "
                                         "was closed")
            if self._child is None or not self._child.alive():
                if self._child is not None:
                    self.restarts += 1
                    log.warning("restarting the %s runtime (the last one %s)", self.backend,
                                describe_exit(self._child.proc.returncode))
                self._child = self._start()
            return self._child

    def _start(self) -> _Child:
        started = time.perf_counter()
        child = _Child(self._spec)
        try:
            reply = child.started.get(timeout=self.load_timeout_s)
        except queue.Empty:
            child.kill("load timeout")
            raise RuntimeUnavailable(
                f"the {self.backend} model {self.requested_model} did not load within "
                f"{self.load_timeout_s:.0f} s; it was stopped") from None
        if reply.get("op") == "failed":
            child.close()
            raise error_from(reply["error"])
        if reply.get("op") != "ready":
            raise RuntimeCrashed(self._died_message(child, reply.get("returncode"), "loading"))
        self.info = reply["info"]
        self.model_name = self.info["model_name"]
        self.supports_logit_bias = bool(self.info["supports_logit_bias"])  # type: ignore[misc]
        self.supports_lora = bool(self.info.get("supports_lora", False))  # type: ignore[misc]
        self.json_attempts = int(self.info["json_attempts"])  # type: ignore[misc]
        self.start_seconds = time.perf_counter() - started
        log.info("%s runtime started in process %d in %.2f s", self.backend, child.pid,
                 self.start_seconds)
        return child

    def _died_message(self, child: _Child, returncode: int | None, doing: str) -> str:
        how = child.stopped_because or describe_exit(returncode)
        tail = next((line for line in reversed(child.stderr) if line.strip()), "")
        detail = f" Its last words: {tail[:300]}" if tail and returncode not in (None, 0) else ""
        advice = ("Engram starts the model again for the next request; if this keeps happening, "
                  "run `engram doctor`.")
        if returncode == -signal.SIGKILL and child.stopped_because is None:
            advice += " Close other programs or choose a smaller model (`engram models`)."
        elif returncode in (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS):
            advice += " `bash dev.sh setup` rebuilds llama.cpp for this CPU."
        return (f"The {self.backend} model process {how} while {doing}.{detail} {advice}")

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.alive() else None

    # --- requests -------------------------------------------------------------------------------
    def _wait(self, child: _Child, replies: queue.Queue[dict[str, Any]], doing: str) -> dict[str, Any]:
        """The next reply to this request; raises when the child dies or stays silent too long."""
        while True:
            try:
                reply = replies.get(timeout=min(1.0, self.stall_timeout_s))
            except queue.Empty:
                if time.monotonic() - child.last_reply > self.stall_timeout_s:
                    child.kill(f"sent nothing for {self.stall_timeout_s:.0f} s and was stopped")
                continue
            if reply.get("op") == _DIED:
                raise RuntimeCrashed(self._died_message(child, reply.get("returncode"), doing))
            if "error" in reply:
                raise error_from(reply["error"])
            return reply

    def _request(self, op: str, **fields: Any) -> tuple[_Child, int, queue.Queue[dict[str, Any]]]:
        child = self._child_now()
        rid = next(self._ids)
        replies = child.expect(rid)
        if not child.send({"id": rid, "op": op, **fields}):
            replies.put({"op": _DIED, "returncode": child.proc.wait()})
        child.last_reply = max(child.last_reply, time.monotonic())
        return child, rid, replies

    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        child, rid, replies = self._request("generate", request=request.model_dump(mode="json"))
        finished = False
        try:
            while True:
                reply = self._wait(child, replies, "answering")
                if "delta" in reply:
                    yield TextDelta(text=reply["delta"])
                elif "usage" in reply:
                    finished = True
                    yield Usage(**reply["usage"])
                    return
        finally:
            child.forget(rid)
            if not finished:  # the caller stopped reading: free the model for the next request
                child.send({"id": rid, "op": "cancel"})

    def token_ids(self, text: str) -> list[int]:
        child, rid, replies = self._request("tokenize", text=text)
        try:
            return [int(t) for t in self._wait(child, replies, "counting tokens")["tokens"]]
        finally:
            child.forget(rid)

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    @property
    def context_window(self) -> int:
        return int(self.info["context_window"])

    @property
    def path(self) -> Path:
        return Path(self.info["path"])

    @property
    def n_threads(self) -> int | None:
        return self.info.get("n_threads")

    @property
    def n_gpu_layers(self) -> int | None:
        return self.info.get("n_gpu_layers")

    def check(self) -> None:
        self._child_now()

    def close(self) -> None:
        with self._lock:
            child, self._child, self._closed = self._child, None, True
        if child is not None:
            child.close()
