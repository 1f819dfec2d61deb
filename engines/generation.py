"""The generation interface: what engines and the chat service call, what every backend implements.

It lives with the engines (the layer below the app) so that engines can generate without knowing
which backend runs: ``app/runtimes`` implements it for llama.cpp, Ollama and torch. Callers (chat
service, engines, bench) talk to a ``Runtime`` and never to a backend library, so switching the
model or the backend is a settings change. A backend implements one generator,
``_events``, that yields ``TextDelta`` pieces and finally one ``Usage``; the base class turns that
into a ``TextStream`` (an iterator of text pieces whose ``result`` holds the counts and timings
once it is exhausted), ``generate`` and schema-validated ``generate_json``.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Used when a model file carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

M = TypeVar("M", bound=BaseModel)


class RuntimeUnavailable(Exception):
    """The backend cannot serve: model file missing, server down, model not pulled, timeout.

    The message is written for the person using Engram and says what to do about it.
    """


class RuntimeCrashed(RuntimeUnavailable):
    """The model's process died or hung mid-request; the next request starts a new one."""


class PromptTooLong(ValueError):
    """The prompt does not fit the model's context window (caller must trim it)."""

    def __init__(self, prompt_tokens: int, context_window: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens but the model's context window is "
            f"{context_window}; shorten the context or raise the context size setting"
        )
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class StructuredOutputError(ValueError):
    """The model's output did not validate against the requested pydantic model."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(256, ge=1, description="Most new tokens to generate.")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="0 = greedy.")
    json_schema: dict[str, Any] | None = Field(
        None, description="Constrain the output to JSON matching this schema."
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end generation.")
    seed: int | None = Field(None, description="Sampling seed (None: the runtime's own).")
    logit_bias: dict[int, float] | None = Field(
        None, description="Added to these token ids' logits at every step (runtimes with "
        "supports_logit_bias only)."
    )


class TextDelta(BaseModel):
    """One streamed piece of generated text."""

    text: str


class Usage(BaseModel):
    """What a backend reports at the end of one generation."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"] = "stop"


class GenerationResult(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float = Field(description="Wall time from the first request to the last piece.")
    backend: str
    model: str
    finish_reason: Literal["stop", "length"] = "stop"
    first_piece_seconds: float | None = Field(None, description="Time to the first text piece.")

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class ModelInfo(BaseModel):
    """A model Engram can run, as listed by the registry."""

    name: str
    backend: Literal["llamacpp", "ollama", "torch"]
    path_or_tag: str
    size_bytes: int | None = None
    active: bool = False


class TextStream(Iterator[str]):
    """Text pieces of one generation; ``result`` is set once the pieces are exhausted.

    Close it (or use it as a context manager) when stopping early: that ends the generation and
    frees the model for the next caller.
    """

    def __init__(self, events: Iterator[TextDelta | Usage], backend: str, model: str) -> None:
        self._events = events
        self._backend = backend
        self._model = model
        self._pieces: list[str] = []
        self._started: float | None = None
        self._first_piece: float | None = None
        self._result: GenerationResult | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self._started is None:
            self._started = time.perf_counter()
        while True:
            event = next(self._events)
            if isinstance(event, Usage):
                self._finish(event)
            elif event.text:
                if self._first_piece is None:
                    self._first_piece = time.perf_counter() - self._started
                self._pieces.append(event.text)
                return event.text

    def _finish(self, usage: Usage) -> None:
        assert self._started is not None
        self._result = GenerationResult(
            text="".join(self._pieces),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=time.perf_counter() - self._started,
            backend=self._backend,
            model=self._model,
            finish_reason=usage.finish_reason,
            first_piece_seconds=self._first_piece,
        )

    @property
    def result(self) -> GenerationResult:
        if self._result is None:
            raise RuntimeError("the stream has not finished yet: iterate it to the end first")
        return self._result

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_json_output(text: str, model_cls: type[M]) -> M:
    """Validate ``text`` as ``model_cls``; falls back to the outermost ``{...}`` in the text."""
    try:
        return model_cls.model_validate_json(text.strip())
    except ValidationError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise
        return model_cls.model_validate_json(text[start : end + 1])


class Runtime(ABC):
    """A loaded model that generates text. Implementations must be safe to share across threads."""

    name: ClassVar[str]
    # How many generations generate_json tries: 1 where decoding is schema-constrained.
    json_attempts: ClassVar[int] = 1
    model_name: str

    @abstractmethod
    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        """Yield the generated text as ``TextDelta`` pieces, then exactly one ``Usage``."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model (no special tokens added)."""

    @property
    @abstractmethod
    def context_window(self) -> int:
        """Tokens of prompt plus completion the model can attend to."""

    supports_logit_bias: ClassVar[bool] = False

    def token_ids(self, text: str) -> list[int]:
        """The model's token ids for ``text`` (runtimes with ``supports_logit_bias`` only)."""
        raise NotImplementedError(f"the {self.name} runtime does not expose its tokenizer")

    def stream(self, request: GenerationRequest) -> TextStream:
        return TextStream(self._events(request), backend=self.name, model=self.model_name)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        with self.stream(request) as pieces:
            for _ in pieces:
                pass
            return pieces.result

    def generate_json(self, request: GenerationRequest, model_cls: type[M]) -> M:
        """Generate JSON matching ``model_cls``'s schema and return it validated."""
        schema = model_cls.model_json_schema()
        constrained = request.model_copy(update={"json_schema": schema})
        result: GenerationResult | None = None
        for _ in range(self.json_attempts):
            result = self.generate(constrained)
            try:
                return parse_json_output(result.text, model_cls)
            except ValidationError:
                continue
        assert result is not None
        hint = " (cut off at max_tokens: raise it)" if result.finish_reason == "length" else ""
        raise StructuredOutputError(
            f"{self.name} model {self.model_name} did not produce a valid "
            f"{model_cls.__name__} after {self.json_attempts} attempt(s){hint}: "
            f"{json.dumps(result.text[:200])}",
            result.text,
        )

    def check(self) -> None:
        """Raise ``RuntimeUnavailable`` when the model cannot serve (no-op where loading did)."""

    def close(self) -> None:
        """Free the model's memory; the runtime is unusable afterwards."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
