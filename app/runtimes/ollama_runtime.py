"""Ollama runtime: any model an Ollama server (local or remote) has pulled, via the official client.

Ollama is how people run bigger models than the embedded one. Every request has a connect and a
read timeout, so a dead or wedged server turns into a ``RuntimeUnavailable`` that says what to do
(``ollama serve``, ``ollama pull NAME``, check the host) instead of a hang. Structured output uses
Ollama's ``format=<JSON schema>``, which the server enforces with a grammar.

Ollama has no tokenizer endpoint, so ``count_tokens`` is a conservative estimate (one token per
three UTF-8 bytes; real English runs nearer four), meant for context budgeting only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any, NoReturn

import httpx
import ollama

from engines.generation import (
    GenerationRequest,
    ModelInfo,
    Runtime,
    RuntimeUnavailable,
    TextDelta,
    Usage,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "http://127.0.0.1:11434"
BYTES_PER_TOKEN_ESTIMATE = 3


def make_client(host: str, connect_timeout_s: float, read_timeout_s: float) -> ollama.Client:
    timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
    return ollama.Client(host=host, timeout=timeout)


def unavailable(exc: Exception, host: str, model: str | None = None) -> RuntimeUnavailable:
    """Translate a client or transport error into a message a user can act on."""
    if isinstance(exc, ollama.ResponseError):
        if model and (exc.status_code == 404 or "not found" in str(exc.error).lower()):
            return RuntimeUnavailable(
                f"Ollama at {host} has no model '{model}'. Download it with `ollama pull {model}` "
                "or pick a model it has."
            )
        return RuntimeUnavailable(f"Ollama at {host} refused the request: {exc.error}")
    if isinstance(exc, httpx.TimeoutException):
        return RuntimeUnavailable(
            f"Ollama at {host} did not answer in time ({type(exc).__name__}). It may be busy "
            "loading a large model: try again, or raise the Ollama timeout setting."
        )
    return RuntimeUnavailable(
        f"Cannot reach Ollama at {host}. Start it with `ollama serve`, or check the Ollama host "
        "setting."
    )


# What the client raises: ResponseError for HTTP errors, ConnectionError when it cannot connect
# (non-streaming calls), httpx errors otherwise (streaming calls, timeouts, broken connections).
CLIENT_ERRORS = (ollama.ResponseError, ConnectionError, httpx.HTTPError)


def _list(client: ollama.Client, host: str) -> list[ModelInfo]:
    try:
        listing = client.list()
    except CLIENT_ERRORS as exc:
        raise unavailable(exc, host) from exc
    return [
        ModelInfo(name=m.model or "", backend="ollama", path_or_tag=m.model or "",
                  size_bytes=int(m.size) if m.size is not None else None)
        for m in listing.models
    ]


def list_models(
    host: str = DEFAULT_HOST, connect_timeout_s: float = 2.0, read_timeout_s: float = 5.0
) -> list[ModelInfo]:
    """The models the server at ``host`` has pulled (``GET /api/tags``)."""
    client = make_client(host, connect_timeout_s, read_timeout_s)
    try:
        return _list(client, host)
    finally:
        client.close()


def _context_length(model_info: Any) -> int | None:
    for key, value in (model_info or {}).items():
        if key.endswith(".context_length") and isinstance(value, int):
            return value
    return None


class OllamaRuntime(Runtime):
    """Chat with one model on one Ollama server; the server serialises and schedules requests."""

    name = "ollama"

    def __init__(
        self,
        model: str,
        *,
        host: str = DEFAULT_HOST,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 120.0,
        num_ctx: int = 4096,
        keep_alive: str | None = None,
    ) -> None:
        """``read_timeout_s`` bounds every wait for the next piece (a cold model load included)."""
        self.model_name = model
        self.host = host
        self.num_ctx = num_ctx
        self.keep_alive = keep_alive
        self._client = make_client(host, connect_timeout_s, read_timeout_s)
        self._model_context: int | None = None
        self._shown = False

    def _fail(self, exc: Exception) -> NoReturn:
        raise unavailable(exc, self.host, self.model_name) from exc

    def check(self) -> None:
        """Raise ``RuntimeUnavailable`` unless the server is up and has the model."""
        try:
            shown = self._client.show(self.model_name)
        except CLIENT_ERRORS as exc:
            self._fail(exc)
        self._model_context = _context_length(shown.modelinfo)
        self._shown = True

    def list_models(self) -> list[ModelInfo]:
        return _list(self._client, self.host)

    @property
    def context_window(self) -> int:
        """``num_ctx`` (what Engram asks the server for), capped by the model's trained context.

        The model's context comes from ``/api/show`` once; while the server is unreachable this
        is just ``num_ctx``.
        """
        if not self._shown:
            try:
                self.check()
            except RuntimeUnavailable:
                return self.num_ctx
        return min(self.num_ctx, self._model_context or self.num_ctx)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE)

    def _options(self, request: GenerationRequest) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": request.temperature,
            "num_predict": request.max_tokens,
            "num_ctx": self.num_ctx,
        }
        if request.stop:
            options["stop"] = request.stop
        if request.seed is not None:
            options["seed"] = request.seed
        return options

    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        final: ollama.ChatResponse | None = None
        try:
            parts = self._client.chat(
                model=self.model_name, messages=[m.model_dump() for m in request.messages],
                stream=True, format=request.json_schema, options=self._options(request),
                keep_alive=self.keep_alive,
            )
            for part in parts:
                if part.message.content:
                    yield TextDelta(text=part.message.content)
                if part.done:
                    final = part
        except CLIENT_ERRORS as exc:
            self._fail(exc)
        if final is None:
            raise RuntimeUnavailable(f"Ollama at {self.host} ended the answer before finishing it.")
        yield Usage(
            prompt_tokens=final.prompt_eval_count or 0,
            completion_tokens=final.eval_count or 0,
            finish_reason="length" if final.done_reason == "length" else "stop",
        )

    def close(self) -> None:
        self._client.close()
