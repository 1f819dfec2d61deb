"""The shapes of the OpenAI-compatible /v1 API: what a client may send, what it gets back.

Requests are read leniently, as OpenAI clients expect: fields Engram does not use (``top_p``,
``user``, ``tools``...) are ignored, not refused. Responses carry OpenAI's fields plus one
top-level ``engram`` object with what only Engram knows: the sources and where the turn is stored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core import Citation, Passage

ErrorType = Literal["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                    "server_error", "service_unavailable_error"]


class ApiError(Exception):
    """A refusal with an HTTP status, in OpenAI's error shape (``message``, ``type``, ``param``,
    ``code``): clients show the message and branch on the status."""

    def __init__(self, status: int, message: str, type: ErrorType = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# --- requests ----------------------------------------------------------------------------------
class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(Lenient):
    type: str
    text: str | None = None


class InMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; a part that is not text (an image, audio) is refused, since the
        chat model reads text only."""
        if self.content is None or isinstance(self.content, str):
            return (self.content or "").strip()
        other = [p.type for p in self.content if p.type != "text"]
        if other:
            raise ApiError(400, f"Engram reads text only; this message has a {other[0]} part",
                           param="messages", code="unsupported_content")
        return "\n".join(p.text or "" for p in self.content).strip()


class StreamOptions(Lenient):
    include_usage: bool = False


class EngramOptions(Lenient):
    conversation_id: int | None = Field(None, description="Continue this stored conversation; its "
                                        "history comes from the store, not from the request.")


class ChatRequest(Lenient):
    model: str
    messages: list[InMessage] = Field(min_length=1)
    stream: bool | None = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    n: int | None = Field(1, ge=1, le=1, description="Engram gives one answer per question.")
    stream_options: StreamOptions | None = None
    engram: EngramOptions | None = None

    @property
    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(Lenient):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class FeedbackRequest(Lenient):
    message_id: int
    rating: Literal["up", "down"] | None = None
    correction: str | None = Field(None, max_length=20_000)


class SearchRequest(Lenient):
    """``POST /v1/engram/search``: what ``engram search`` asks a running Engram."""

    query: str = Field(max_length=20_000)
    k: int | None = Field(None, ge=1, le=100, description="Results (default: search_k).")
    settings: dict[str, Any] | None = Field(
        None, description="The asker's search settings (rag.*, embedding): when they differ from "
        "this Engram's, it answers 409 rather than rank otherwise than the asker would.")


class AskRequest(Lenient):
    """``POST /v1/engram/ask``: what ``engram ask`` asks a running Engram."""

    question: str = Field("", max_length=100_000)
    conversation_id: int | None = None
    more: bool = Field(False, description="The rest of the conversation's last, cut-off answer.")
    settings: dict[str, Any] | None = Field(
        None, description="The asker's settings (all but where it serves): when they differ from "
        "this Engram's, it answers 409 rather than answer otherwise than the asker would.")


# --- responses ---------------------------------------------------------------------------------
class SearchResults(BaseModel):
    """The query and its passages in ranking order (``engram search --json`` prints the same)."""

    query: str
    results: list[Passage]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "engram"
    engram: dict[str, str] = Field(default_factory=dict, description="kind (chat, embedding), backend.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class EngramTurn(BaseModel):
    """Where the answer is stored (rate it by ``message_id``) and what it was grounded on."""

    conversation_id: int
    question_id: int
    message_id: int | None = None
    sources: list[Citation] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the answer stopped early (the model failed).")


class OutMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: OutMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    engram: EngramTurn


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    engram: EngramTurn | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
