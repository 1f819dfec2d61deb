"""A loopback server that speaks Ollama's HTTP API to the official client, with a real model.

No Ollama server can be installed on the test machines, so the Ollama runtime is tested through
the official ``ollama`` client against this server on 127.0.0.1. It answers with the embedded
SmolLM2 through ``LlamaCppRuntime`` and follows Ollama's wire format (docs/api.md):

- ``POST /api/chat`` and ``POST /api/generate``: NDJSON pieces (``message.content`` or
  ``response``, ``done: false``) then a final object with ``done: true``, ``done_reason``,
  ``total_duration``, ``load_duration``, ``prompt_eval_count``, ``prompt_eval_duration``,
  ``eval_count``, ``eval_duration`` (nanoseconds); one JSON object when ``stream`` is false.
  ``format`` may be ``"json"`` or a JSON schema, enforced by llama.cpp's grammar like Ollama does.
- ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``.
- An unknown model answers 404 ``{"error": "model 'x' not found"}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engines.generation import ChatMessage, GenerationRequest, GenerationResult
from app.runtimes.llamacpp import LlamaCppRuntime

log = logging.getLogger(__name__)

DEFAULT_TAG = "smollm2:135m"
DEFAULT_NUM_PREDICT = 128
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def to_request(messages: list[dict[str, Any]], body: dict[str, Any]) -> GenerationRequest:
    """Ollama's ``options`` and ``format`` -> a ``GenerationRequest``."""
    options = body.get("options") or {}
    fmt = body.get("format")
    num_predict = int(options.get("num_predict", DEFAULT_NUM_PREDICT))
    return GenerationRequest(
        messages=[ChatMessage(role=m["role"], content=m.get("content") or "") for m in messages],
        max_tokens=num_predict if num_predict > 0 else DEFAULT_NUM_PREDICT,
        temperature=float(options.get("temperature", 0.8)),
        stop=list(options.get("stop") or []),
        seed=options.get("seed"),
        json_schema=ANY_JSON_OBJECT if fmt == "json" else (fmt or None),
    )


def final_fields(result: GenerationResult, started: float) -> dict[str, Any]:
    total = int((time.perf_counter() - started) * 1e9)
    first = int((result.first_piece_seconds or 0.0) * 1e9)
    return {
        "done": True,
        "done_reason": result.finish_reason,
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": result.prompt_tokens,
        "prompt_eval_duration": first,
        "eval_count": result.completion_tokens,
        "eval_duration": max(0, total - first),
    }


class OllamaLoopback:
    """Serve ``runtime`` under ``tag`` on a free 127.0.0.1 port until ``stop()``."""

    def __init__(self, runtime: LlamaCppRuntime, tag: str = DEFAULT_TAG) -> None:
        self.runtime = runtime
        self.tag = tag
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, body) as received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ollama-loopback",
                                        daemon=True)

    def _handler_class(self) -> type[_Handler]:
        return type("BoundHandler", (_Handler,), {"app": self})

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OllamaLoopback:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- the API -------------------------------------------------------------------------

    def known(self, model: str) -> None:
        if model not in (self.tag, self.tag.removesuffix(":latest")):
            raise HTTPError(404, f"model '{model}' not found")

    def tags(self) -> dict[str, Any]:
        path = self.runtime.path
        return {"models": [{
            "name": self.tag, "model": self.tag, "modified_at": now(),
            "size": path.stat().st_size,
            "digest": hashlib.sha256(str(path).encode()).hexdigest(),
            "details": self.details(),
        }]}

    def details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "135M", "quantization_level": "Q4_1"}

    def show(self, body: dict[str, Any]) -> dict[str, Any]:
        self.known(body.get("model") or body.get("name") or "")
        meta = self.runtime.llm.metadata
        return {
            "modelfile": f"FROM {self.runtime.path}", "parameters": "", "license": "Apache-2.0",
            "template": meta.get("tokenizer.chat_template", ""), "details": self.details(),
            "model_info": {"general.architecture": "llama",
                           "llama.context_length": self.runtime.context_window},
            "capabilities": ["completion"], "modified_at": now(),
        }

    def pieces(self, request: GenerationRequest):
        """Yield text pieces, then the ``GenerationResult``."""
        stream = self.runtime.stream(request)
        with stream:
            yield from stream
            yield stream.result


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OllamaLoopback/1.0"
    app: OllamaLoopback

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("loopback: " + format, *args)

    # --- plumbing ------------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise HTTPError(400, f"invalid JSON body: {exc}") from exc
        self.app.requests.append((self.path, body))
        return body

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_ndjson(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, payload: dict[str, Any] | None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _route(self, method: str) -> None:
        try:
            routes = {
                ("GET", "/api/tags"): lambda: self._send_json(200, self.app.tags()),
                ("GET", "/api/version"): lambda: self._send_json(200, {"version": "0.0.0"}),
                ("POST", "/api/show"): lambda: self._send_json(200, self.app.show(self._body())),
                ("POST", "/api/chat"): lambda: self._generate(self._body(), chat=True),
                ("POST", "/api/generate"): lambda: self._generate(self._body(), chat=False),
            }
            handler = routes.get((method, self.path.split("?")[0]))
            if handler is None:
                raise HTTPError(404, "404 page not found")
            handler()
        except HTTPError as exc:
            self._send_json(exc.status, {"error": str(exc)})
        except (KeyError, TypeError, ValueError) as exc:  # a malformed request, as Ollama: 400
            self._send_json(400, {"error": str(exc)})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._route("POST")

    # --- generation ----------------------------------------------------------------------

    def _generate(self, body: dict[str, Any], chat: bool) -> None:
        model = body.get("model") or ""
        self.app.known(model)
        if chat:
            messages = body.get("messages") or []
        else:
            messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
            messages.append({"role": "user", "content": body.get("prompt") or ""})
        started = time.perf_counter()
        if not any(m.get("content") for m in messages):  # Ollama: an empty request loads the model
            self._send_json(200, {"model": model, "created_at": now(), "done": True,
                                  "done_reason": "load", **self._piece(chat, "")})
        elif body.get("stream", True):
            self._stream(model, chat, to_request(messages, body), started)
        else:
            self._whole(model, chat, to_request(messages, body), started)

    @staticmethod
    def _piece(chat: bool, text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}

    def _stream(self, model: str, chat: bool, request: GenerationRequest, started: float) -> None:
        self._start_ndjson()
        items = self.app.pieces(request)
        try:
            for item in items:
                head = {"model": model, "created_at": now()}
                if isinstance(item, str):
                    self._chunk({**head, **self._piece(chat, item), "done": False})
                else:
                    self._chunk({**head, **self._piece(chat, ""), **final_fields(item, started)})
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception as exc:  # mid-stream errors travel as an error line, as in Ollama
            log.exception("loopback generation failed")
            self._chunk({"error": str(exc)})
        finally:
            items.close()  # frees the model at once when the client went away
        self._chunk(None)

    def _whole(self, model: str, chat: bool, request: GenerationRequest, started: float) -> None:
        items = list(self.app.pieces(request))
        result = items[-1]
        assert isinstance(result, GenerationResult)
        self._send_json(200, {"model": model, "created_at": now(), **self._piece(chat, result.text),
                              **final_fields(result, started)})

