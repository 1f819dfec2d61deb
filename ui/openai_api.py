"""Engram for other tools: an OpenAI-compatible ``/v1`` API over the same core as the app.

Editors, note apps and agents speak the OpenAI API; served here, Engram's documents, playbook and
learned weights answer inside them. Every answer goes through ``engram.chat.ask``, the path the
Chat tab uses, so it is grounded, cited, stored and rateable exactly as in the app.

- ``GET /v1/models``: the chat model (named as the app names it) and the embedding model.
- ``POST /v1/chat/completions``: plain or streamed (server-sent events ending ``data: [DONE]``).
  The last user message is the question; the turns before it are the conversation so far, found
  in the store or stored anew (``ChatService.conversation_for``), so history reaches the prompt
  exactly as in the app. System messages are left out: Engram's own instructions ground answers.
  The sources follow the answer in the text, numbered as in chat, and as data in ``engram``.
- ``POST /v1/embeddings``: the embedder Engram indexes documents with.
- ``POST /v1/engram/feedback``: thumbs and corrections on an answer, as in the app.
- ``POST /v1/engram/search``: ``Engram.search``'s fused ranking, for ``engram search`` (which
  asks a running Engram here instead of loading the embedding model itself).
- ``POST /v1/engram/ask``: the chat's own events (sources, text, the stored answer) as JSON
  lines, for ``engram ask``.

It is a FastAPI app of its own, mounted at ``/v1``: its errors are OpenAI's shape, whatever fails.
Web pages the person visits must not use it (``LocalOnly``): a POST that is not JSON, a request
naming this computer by another name, and one from a web page that is not on this computer are
refused before any route runs.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import (EMBEDDED, EMBEDDED_TITLE, REFUSED, ChatMessage, Citation, Delta, Done, Engram, MessageRow,
                      PromptTooLong, RuntimeUnavailable, Sources)
from store.conversations import ClientAnswer
from ui.access import bearer_matches, is_loopback
from ui.openai_shapes import (ApiError, AskRequest, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice,
                              ChunkDelta, Embedding, EmbeddingList, EmbeddingRequest, EngramTurn,
                              FeedbackRequest, InMessage, ModelCard, ModelList, OutMessage, SearchRequest,
                              SearchResults, Usage)

log = logging.getLogger(__name__)

PREFIX = "/v1"
MAX_BODY_BYTES = 2 * 1024 * 1024
"""Largest request body: far more than any context window holds, far less than hurts."""
MAX_EMBED_INPUTS = 2048
"""Texts per embeddings request (OpenAI's own limit)."""
EMBEDDED_CHAT = EMBEDDED_TITLE
EMBEDDED_EMBEDDER = "all-MiniLM-L6-v2"
SOURCES_MARK = "\n\nSources:"
NO_SOURCES = (f"{SOURCES_MARK} none. No passage from your documents matched: this answer does not "
              "come from your files.")

Shape = TypeVar("Shape", bound=BaseModel)


# --- names -------------------------------------------------------------------------------------
def model_id(model: str, embedded: str, is_file: bool = True) -> str:
    """A model's id as the app names it (clients put ids in config files): the built-in one by
    its name, a file or folder (``is_file``) by its last part, on any system's paths, an Ollama
    tag as it is."""
    if model == EMBEDDED:
        return embedded
    return Path(model).name if is_file else model


def chat_model_id(engram: Engram) -> str:
    chat = engram.chat_model()
    return model_id(chat.model, EMBEDDED_CHAT, is_file=chat.backend != "ollama")


def embedding_model_id(engram: Engram) -> str:
    return model_id(engram.settings.embedding_model, EMBEDDED_EMBEDDER)


def model_cards(engram: Engram) -> list[ModelCard]:
    chat = engram.chat_model()
    return [ModelCard(id=chat_model_id(engram), engram={"kind": "chat", "backend": chat.backend}),
            ModelCard(id=embedding_model_id(engram), engram={"kind": "embedding", "backend": "torch"})]


def require_model(engram: Engram, wanted: str, kind: str) -> str:
    """``wanted`` when it is Engram's model of this kind; otherwise 404, naming the right one."""
    cards = {c.id: c for c in model_cards(engram)}
    card = cards.get(wanted)
    if card is not None and card.engram["kind"] == kind:
        return wanted
    right = next(c.id for c in cards.values() if c.engram["kind"] == kind)
    raise ApiError(404, f"The model '{wanted}' does not exist here; Engram's {kind} model is "
                   f"'{right}' (GET /v1/models).", "not_found_error", "model", "model_not_found")


# --- reading requests --------------------------------------------------------------------------
async def read_body(request: Request) -> bytes:
    """The body, refused with 413 past ``MAX_BODY_BYTES`` before it is all read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> ApiError:
    return ApiError(413, f"The request is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.",
                    code="request_too_large")


async def read_request(request: Request, shape: type[Shape]) -> Shape:
    """The JSON body as ``shape``: malformed JSON and invalid fields are 400, naming the field."""
    body = await read_body(request)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "The body is not valid JSON: it is nested too deeply.",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_json")
    try:
        return shape.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc.errors()) from None


def invalid(errors: Any) -> ApiError:
    first = errors[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError(400, f"{param or 'body'}: {first.get('msg', 'invalid')}{more}", param=param,
                    code="invalid_value")


# --- chat --------------------------------------------------------------------------------------
def strip_sources(answer: str) -> str:
    """An answer as stored: the text without the sources this API appended to it."""
    cut = answer.rfind(SOURCES_MARK)
    return (answer[:cut] if cut >= 0 else answer).strip()


def question_and_turns(messages: list[InMessage]) -> tuple[str, list[ChatMessage]]:
    """The last message is the question; the user and assistant turns before it are the
    conversation so far (system, developer and tool messages are left out)."""
    last = messages[-1]
    question = last.text()
    if last.role != "user" or not question:
        raise ApiError(400, "The last message must be the user's question, with text.",
                       param="messages", code="invalid_value")
    turns = []
    for m in messages[:-1]:
        text = m.text()
        if m.role == "user" and text:
            turns.append(ChatMessage(role="user", content=text))
        elif m.role == "assistant" and text:
            turns.append(ChatMessage(role="assistant", content=strip_sources(text)))
    return question, turns


def sources_text(citations: list[Citation]) -> str:
    """The sources as the Chat tab lists them, numbered as the answer cites them."""
    if not citations:
        return NO_SOURCES
    lines = [f"[{c.n}] {c.label}, {c.position}: “{c.quote}”" for c in citations]
    return f"{SOURCES_MARK}\n" + "\n".join(lines)


def finish_reason(message: MessageRow) -> str:
    return "length" if message.meta.get("finish_reason") == "length" else "stop"


def ending(message: MessageRow) -> str:
    """What follows the answer's words: its sources, and why it stopped when the model failed."""
    failed = message.meta.get("error")
    return sources_text(message.citations) + (f"\n\nThe answer stopped: {failed}" if failed else "")


def turn(sources: Sources, message: MessageRow) -> EngramTurn:
    return EngramTurn(conversation_id=sources.conversation_id, question_id=sources.question_id,
                      message_id=message.id, sources=message.citations, notes=sources.notes,
                      error=message.meta.get("error"))


def usage(message: MessageRow) -> Usage:
    prompt = int(message.meta.get("prompt_tokens") or 0)
    completion = int(message.meta.get("completion_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def start_chat(engram: Engram, req: ChatRequest) -> tuple[Sources, Iterator[Any]]:
    """Ask, up to the sources: the model loads and the passages are found before any byte of the
    response is sent, so a model that will not load is a clean 503, even when streaming. A
    refused question stores nothing: the turns before it are stored with it, once it is asked."""
    question, turns = question_and_turns(req.messages)
    conversation_id = req.engram.conversation_id if req.engram else None
    earlier: list[ChatMessage] = []
    if conversation_id is not None:
        if engram.conversations.get(conversation_id) is None:
            raise ApiError(404, f"No conversation with id {conversation_id}.", "not_found_error",
                           "engram.conversation_id", "conversation_not_found")
    else:
        conversation_id = engram.chat.conversation_for(turns)
        earlier = turns if conversation_id is None else []
    events = engram.chat.ask(question, conversation_id, earlier=earlier, max_tokens=req.answer_tokens,
                             temperature=req.temperature)
    try:
        first = next(events)
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), param="messages", code="context_length_exceeded") from None
    except RuntimeUnavailable as exc:
        raise ApiError(503, f"The chat model cannot answer: {exc}", "service_unavailable_error",
                       code="model_unavailable") from None
    assert isinstance(first, Sources)
    return first, events


def finish_chat(sources: Sources, events: Iterator[Any]) -> Done:
    done = None
    for event in events:
        if isinstance(event, Done):
            done = event
    if done is None:
        raise RuntimeError("the chat service ended without an answer")
    return done


def completion(model: str, sources: Sources, done: Done) -> ChatCompletion:
    message = done.message
    return ChatCompletion(id=f"chatcmpl-engram-{sources.question_id}", created=int(time.time()),
                          model=model, usage=usage(message), engram=turn(sources, message),
                          choices=[Choice(message=OutMessage(content=message.content + ending(message)),
                                          finish_reason=finish_reason(message))])


def sse(data: BaseModel | dict[str, Any]) -> str:
    body = data.model_dump(exclude_none=True) if isinstance(data, BaseModel) else data
    for choice in body.get("choices", []):
        choice.setdefault("finish_reason", None)
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def stream_chat(model: str, sources: Sources, events: Iterator[Any], include_usage: bool,
                hold: bool = False) -> Iterator[str]:
    """OpenAI's chunks: the role, the answer as it comes, its sources, the finish with ``engram``,
    the usage when asked for, then ``[DONE]``. A failure mid-answer is an error event (what
    OpenAI's clients raise), never a cut connection. ``hold``: the critic may revise the answer
    (``critic_regenerate``), and a streamed draft cannot be taken back, so the answer comes as
    one chunk once it is final."""
    first = ChatChunk(id=f"chatcmpl-engram-{sources.question_id}", created=int(time.time()),
                      model=model, choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])

    def chunk(text: str | None = None, finish: str | None = None, **extra: Any) -> str:
        choice = ChunkChoice(delta=ChunkDelta(content=text), finish_reason=finish)
        return sse(first.model_copy(update={"choices": [choice], **extra}))

    yield sse(first)
    try:
        done = None
        for event in events:
            if isinstance(event, Delta) and event.text and not hold:
                yield chunk(event.text)
            elif isinstance(event, Done):
                done = event
        if done is None:
            raise RuntimeError("the chat service ended without an answer")
        message = done.message
        if hold:
            yield chunk(message.content)
        yield chunk(ending(message))
        yield chunk(finish=finish_reason(message), engram=turn(sources, message))
        if include_usage:
            yield sse(first.model_copy(update={"choices": [], "usage": usage(message)}))
    except Exception:
        log.exception("a streamed /v1 answer failed")
        yield sse(ApiError(500, "The answer failed; the details are in Engram's log.", "server_error").body())
    finally:
        events_close = getattr(events, "close", None)
        if events_close is not None:
            events_close()  # a client that went away: the answer is stored as far as it got
    yield "data: [DONE]\n\n"


# --- engram ask --------------------------------------------------------------------------------
def start_ask(engram: Engram, req: AskRequest) -> tuple[Any, Iterator[Any]]:
    """The chat's first event (the sources) and the rest, or the refusal in the words a local
    ``engram ask`` would print."""
    if req.more and req.conversation_id is None:
        raise ApiError(400, "more needs the conversation_id.", param="conversation_id")
    chat = engram.chat
    events = chat.continue_answer(req.conversation_id) if req.more else chat.ask(req.question, req.conversation_id)
    try:
        return next(events), events
    except KeyError as exc:
        raise ApiError(404, str(exc.args[0]) if exc.args else str(exc), "not_found_error",
                       code=REFUSED) from None
    except RuntimeUnavailable as exc:
        raise ApiError(503, str(exc), "service_unavailable_error", code=REFUSED) from None
    except (PromptTooLong, ValueError) as exc:
        raise ApiError(400, str(exc), code=REFUSED) from None


def stream_ask(first: Any, events: Iterator[Any]) -> Iterator[str]:
    """One JSON line per chat event (``kind``: sources, delta, done); a failure part way is an
    ``error`` line. A client that goes away ends the answer, stored as far as it got."""
    try:
        yield first.model_dump_json() + "\n"
        for event in events:
            yield event.model_dump_json() + "\n"
    except Exception:
        log.exception("an engram ask through /v1 failed")
        yield json.dumps({"kind": "error", "message": "the answer failed; the details are in the "
                          "running Engram's log"}) + "\n"
    finally:
        events_close = getattr(events, "close", None)
        if events_close is not None:
            events_close()


# --- embeddings --------------------------------------------------------------------------------
def embed(engram: Engram, req: EmbeddingRequest, model: str) -> EmbeddingList:
    texts = req.texts
    if not texts or len(texts) > MAX_EMBED_INPUTS:
        raise ApiError(400, f"input must hold 1 to {MAX_EMBED_INPUTS} texts.", param="input")
    if any(not t.strip() for t in texts):
        raise ApiError(400, "input holds an empty text.", param="input")
    embedder = engram.embedder
    if req.dimensions is not None and req.dimensions != embedder.dim:
        raise ApiError(400, f"{model} gives {embedder.dim} dimensions, not {req.dimensions}.",
                       param="dimensions")
    vectors = np.asarray(embedder.embed(texts), dtype="<f4")
    tokens = sum(embedder.count_tokens(texts))
    data = [Embedding(index=i, embedding=base64.b64encode(v.tobytes()).decode("ascii")
                      if req.encoding_format == "base64" else v.tolist()) for i, v in enumerate(vectors)]
    return EmbeddingList(data=data, model=model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


# --- the app -----------------------------------------------------------------------------------
def error_json(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class CleanErrors:
    """Whatever escapes a handler is logged and answered in OpenAI's shape, never a traceback
    (Starlette's own last-resort handler would answer in plain text and re-raise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("the /v1 API failed on %s", scope.get("path"))
            if not started and scope["type"] == "http":
                await error_json(ApiError(500, "Engram failed to answer; the details are in its log.",
                                          "server_error"))(scope, receive, send)


JSON = "application/json"


def loopback_origin(origin: str) -> bool:
    """A web page served by this computer (``http://127.0.0.1:7860``, ``http://localhost:3000``)."""
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")
    except ValueError:
        return False


def loopback_host(host: str) -> bool:
    """A Host header naming this computer: localhost, 127.0.0.1 or [::1], with or without a port."""
    try:
        return is_loopback(urlsplit(f"//{host}").hostname or "")
    except ValueError:
        return False


class LocalOnly:
    """What keeps the web pages a person visits from using the API (CSRF, DNS rebinding, the bug
    behind Ollama's CVE-2024-28224), checked for every request before any route:

    - a browser sends JSON across sites only after asking (CORS preflight, which gets no
      permission here), while a form or a ``no-cors`` fetch can send text/plain: so a POST must say
      ``Content-Type: application/json`` (415 otherwise);
    - served on loopback, the Host must name this computer (localhost, 127.0.0.1, [::1]): a page
      whose own name was made to point at 127.0.0.1 (DNS rebinding) sends its name (403);
    - a browser names the page that sends a request in ``Origin``: only pages served by this
      computer, or those ``api_allowed_origins`` lists, get in (403). Clients that are not
      browsers send no Origin."""

    def __init__(self, app: ASGIApp, check_host: bool, allowed_origins: frozenset[str]) -> None:
        self.app = app
        self.check_host = check_host
        self.allowed_origins = allowed_origins

    def refusal(self, method: str, headers: Headers) -> ApiError | None:
        if self.check_host and not loopback_host(headers.get("host", "")):
            return ApiError(403, "This Engram answers only requests addressed to localhost, "
                            "127.0.0.1 or [::1].", "permission_error", code="host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.allowed_origins and not loopback_origin(origin):
            return ApiError(403, f"Requests from web pages at {origin[:200]} are refused; a page "
                            "that may use Engram goes in api_allowed_origins.", "permission_error",
                            code="origin_not_allowed")
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        if method == "POST" and media != JSON:
            return ApiError(415, f"Send the body as JSON, with Content-Type: {JSON}.",
                            code="unsupported_media_type")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.refusal(scope["method"], Headers(scope=scope))
            if refused is not None:
                log.info("/v1 refused %s %s: %s", scope["method"], scope.get("path"), refused.code)
                await error_json(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def authorizer(key: str | None, required: bool):
    """The check every /v1 route runs: the bearer key once one is set; when the server is open
    beyond this computer (or guarded by the UI password) and no key is set, nobody gets in."""
    def authorize(request: Request) -> None:
        header = request.headers.get("authorization")
        if key:
            if not bearer_matches(header, key):
                raise ApiError(401, "Send Engram's API key: Authorization: Bearer <api_key>.",
                               "authentication_error", code="invalid_api_key")
        elif required:
            raise ApiError(401, "This Engram can be reached beyond this computer (or its app has "
                           "a password), so its /v1 API needs a key: set api_key (ENGRAM_API_KEY) "
                           "and send it as the bearer key.", "authentication_error",
                           code="api_key_not_set")
    return authorize


def create_api(engram: Engram, host: str, guarded: bool = False) -> FastAPI:
    """The /v1 app (mount it at ``PREFIX``), served on ``host``. Beyond this computer, or beside
    an app with a password (``guarded``), it answers nothing until ``api_key`` is set; on
    loopback it answers only requests that name this computer."""
    settings = engram.settings
    secret = settings.api_key
    key = secret.get_secret_value() if secret is not None and secret.get_secret_value() else None
    local = is_loopback(host)
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(authorizer(key, required=not local or guarded))])
    api.add_middleware(LocalOnly, check_host=local,
                       allowed_origins=frozenset(o.rstrip("/") for o in settings.api_allowed_origins))
    api.add_middleware(CleanErrors)  # the outermost: a failure in LocalOnly is a clean 500 too
    api.add_exception_handler(ApiError, lambda _r, exc: error_json(exc))
    api.add_exception_handler(RequestValidationError, lambda _r, exc: error_json(invalid(exc.errors())))
    api.add_exception_handler(HTTPException, lambda _r, exc: error_json(ApiError(
        exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else
        "invalid_request_error")))

    @api.get("/models")
    def models() -> ModelList:
        return ModelList(data=model_cards(engram))

    @api.get("/models/{model_id:path}")
    def model(model_id: str) -> ModelCard:
        card = next((c for c in model_cards(engram) if c.id == model_id), None)
        if card is None:
            raise ApiError(404, f"The model '{model_id}' does not exist here.", "not_found_error",
                           "model", "model_not_found")
        return card

    @api.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        req = await read_request(request, ChatRequest)
        model_id = require_model(engram, req.model, "chat")
        sources, events = await run_in_threadpool(start_chat, engram, req)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            settings = engram.settings
            hold = settings.critic != "off" and settings.critic_regenerate != "off"
            return StreamingResponse(stream_chat(model_id, sources, events, include_usage, hold),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        done = await run_in_threadpool(finish_chat, sources, events)
        return JSONResponse(completion(model_id, sources, done).model_dump())

    @api.post("/embeddings")
    async def embeddings(request: Request) -> EmbeddingList:
        req = await read_request(request, EmbeddingRequest)
        model_id = require_model(engram, req.model, "embedding")
        return await run_in_threadpool(embed, engram, req, model_id)

    @api.post("/engram/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        """Thumbs and corrections on an answer (``engram.message_id``), learned from as in the app."""
        req = await read_request(request, FeedbackRequest)
        if req.rating is None and not (req.correction or "").strip():
            raise ApiError(400, "Give a rating (up, down), a correction, or both.", param="rating")
        try:
            message = await run_in_threadpool(engram.chat.feedback, req.message_id, req.rating,
                                              req.correction)
        except KeyError:
            raise ApiError(404, f"No answer with id {req.message_id}.", "not_found_error",
                           "message_id", "message_not_found") from None
        except ClientAnswer as exc:
            raise ApiError(400, str(exc), param="message_id", code="not_engrams_answer") from None
        return {"message_id": message.id, "conversation_id": message.conversation_id,
                "feedback": message.feedback, "correction": message.correction}

    @api.post("/engram/ask", response_model=None)
    async def ask(request: Request) -> StreamingResponse:
        """``engram ask`` answered here: the chat's events as JSON lines."""
        req = await read_request(request, AskRequest)
        if req.settings is not None and req.settings != engram.answer_settings():
            raise ApiError(409, "This Engram runs with other settings than the request's; ask "
                           "locally.", param="settings", code="settings_differ")
        first, events = await run_in_threadpool(start_ask, engram, req)
        return StreamingResponse(stream_ask(first, events), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.post("/engram/search")
    async def search(request: Request) -> JSONResponse:
        """The passages ``engram search`` prints, ranked by ``Engram.search``."""
        req = await read_request(request, SearchRequest)
        if req.settings is not None and req.settings != engram.search_settings():
            raise ApiError(409, "This Engram runs with other search settings than the request's; "
                           "search locally.", param="settings", code="settings_differ")
        hits = await run_in_threadpool(engram.search, req.query, req.k)
        return JSONResponse(SearchResults(query=req.query, results=hits).model_dump(mode="json"))

    return api
