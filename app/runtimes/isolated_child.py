"""The child process of an isolated runtime: loads one model and serves generations over pipes.

Started by ``app.runtimes.isolated`` with ``python -m app.runtimes.isolated_child``. The first line
on stdin is the runtime to build (backend, model, options); after that each stdin line is one
request and each stdout line one reply, all JSON (never pickle). A native crash here kills only
this process: the parent reports it and starts a new one.

File descriptor 1 carries the protocol alone: it is duplicated for the replies, then pointed at
stderr, so a native library printing to stdout cannot corrupt a reply.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any, TextIO

from engines.generation import GenerationRequest, PromptTooLong, Runtime, RuntimeUnavailable


class Replies:
    """Writes one JSON reply per line; threads share it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def error_reply(exc: BaseException) -> dict[str, Any]:
    """An exception as the parent rebuilds it (``isolated.error_from``)."""
    reply: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, PromptTooLong):
        reply.update(type="PromptTooLong", prompt_tokens=exc.prompt_tokens,
                     context_window=exc.context_window)
    elif isinstance(exc, RuntimeUnavailable):
        reply["type"] = "RuntimeUnavailable"
    elif isinstance(exc, ValueError):
        reply["type"] = "ValueError"
    return reply


def info(runtime: Runtime) -> dict[str, Any]:
    """What the parent needs to know without asking again."""
    return {
        "model_name": runtime.model_name,
        "context_window": runtime.context_window,
        "supports_logit_bias": runtime.supports_logit_bias,
        "supports_lora": runtime.supports_lora,
        "json_attempts": runtime.json_attempts,
        "path": str(getattr(runtime, "path", "") or ""),
        "n_threads": getattr(runtime, "n_threads", None),
        "n_gpu_layers": getattr(runtime, "n_gpu_layers", None),
        "load_seconds": getattr(runtime, "load_seconds", None),
        "pid": os.getpid(),
    }


class Server:
    def __init__(self, runtime: Runtime, replies: Replies) -> None:
        self.runtime = runtime
        self.replies = replies
        self._cancelled: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def generate(self, rid: int, request: GenerationRequest, cancelled: threading.Event) -> None:
        try:
            if cancelled.is_set():
                return
            with self.runtime.stream(request) as stream:
                for piece in stream:
                    if cancelled.is_set():
                        return
                    self.replies.send({"id": rid, "delta": piece})
                result = stream.result
            self.replies.send({"id": rid, "usage": {
                "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason}})
        except Exception as exc:  # sent to the parent, which raises it there
            self.replies.send({"id": rid, "error": error_reply(exc)})
        finally:
            with self._lock:
                self._cancelled.pop(rid, None)

    def handle(self, message: dict[str, Any]) -> None:
        rid, op = int(message.get("id", 0)), message.get("op")
        if op == "generate":
            cancelled = threading.Event()
            with self._lock:
                self._cancelled[rid] = cancelled
            request = GenerationRequest.model_validate(message["request"])
            threading.Thread(target=self.generate, args=(rid, request, cancelled), daemon=True,
                             name=f"generate-{rid}").start()
        elif op == "cancel":
            with self._lock:
                event = self._cancelled.get(rid)
            if event is not None:
                event.set()
        elif op == "tokenize":
            try:
                self.replies.send({"id": rid, "tokens": self.runtime.token_ids(message["text"])})
            except Exception as exc:
                self.replies.send({"id": rid, "error": error_reply(exc)})
        else:
            self.replies.send({"id": rid, "error": {"type": "ValueError",
                                                    "message": f"unknown request {op!r}"}})


def main() -> int:
    from app.runtimes.registry import make_runtime

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    replies = Replies(out)
    spec = json.loads(sys.stdin.readline() or "{}")
    try:
        runtime = make_runtime(spec["backend"], spec["model"], isolated=False, **spec["options"])
    except Exception as exc:  # the parent raises it as the load error
        replies.send({"op": "failed", "error": error_reply(exc)})
        return 1
    replies.send({"op": "ready", "info": info(runtime)})
    server = Server(runtime, replies)
    try:
        for line in sys.stdin:  # EOF: the parent closed us or died
            message = json.loads(line)
            if message.get("op") == "close":
                break
            server.handle(message)
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
