"""The generation interface: what engines and the chat service call, what every backend implements.

It lives with the engines (the layer below the app) so that engines can generate without knowing
which backend runs: ``app/runtimes`` implements it for llama.cpp, Ollama and torch. Callers (chat
service, engines, bench) talk to a ``Runtime`` and never to a backend library, so switching the
model or the backend is a settings change. A backend implements one generator,
``_events``, that yields ``TextDelta`` pieces and finally one ``Usage``; the base class turns that
into a ``TextStream`` (an iterator of text pieces whose ``result`` holds the counts and timings
once it is exhausted), ``generate`` and schema-validated ``generate_json``.

Decoding (top-k, top-p, min-p, a repetition penalty over a window of recent tokens) is part of the
request with one set of defaults, and llama.cpp and torch implement it the same way, so switching
the backend does not change how an answer is chosen. Plain-text answers are also watched by a loop
guard (``engines.loop_guard``): when an answer starts repeating itself the generation is stopped,
the repeat is trimmed and ``finish_reason`` is ``"repetition"``.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.loop_guard import LoopGuard

# Used when a model file carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

M = TypeVar("M", bound=BaseModel)

FinishReason = Literal["stop", "length", "repetition"]

# Decoding defaults shared by every runtime. The sampling filters are llama.cpp's own defaults;
# the repetition penalty and its window were chosen by measurement (app/bench/decoding.py).
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_PENALTY = 1.1
DEFAULT_REPEAT_LAST_N = 64


def penalized(token_text: str) -> bool:
    """Whether the repetition penalty applies to a token: only to tokens with a letter in them.

    Digits are tokens of their own in SmolLM2's vocabulary ("1988" is 1 9 8 8), so penalizing them
    rewrites numbers (llama.cpp's own penalty turned "48,559" into "48,560" at 1.1); spaces and
    punctuation recur in any sentence. Loops are made of words, and the loop guard ends the rest.
    """
    return any(ch.isalpha() for ch in token_text)


class StopGeneration(Exception):
    """Thrown into a backend's ``_events`` when the caller wants the generation to end now.

    A backend that catches it stops its model and still yields its final ``Usage`` (llama.cpp and
    torch do), so the counts stay exact; for one that does not, ``TextStream`` estimates them.
    """


class RuntimeUnavailable(Exception):
    """The backend cannot serve: model file missing, server down, model not pulled, timeout.

    The message is written for the person using Engram and says what to do about it.
    """


class RuntimeCrashed(RuntimeUnavailable):
    """The model's process died or hung mid-request; the next request starts a new one."""


class PromptTooLong(ValueError):
    """The prompt does not fit the model's context window (caller must trim it)."""

    def __init__(self, prompt_tokens: int, context_window: int, message: str | None = None) -> None:
        super().__init__(message or (
            f"the prompt has {prompt_tokens} tokens but the model's context window is "
            f"{context_window}; shorten the context or raise the context size setting"
        ))
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


class LoraUse(BaseModel):
    """A LoRA adapter file (llama.cpp's GGUF form) applied to one generation, at a scale."""

    path: str = Field(description="The adapter's GGUF file (written by Engram under its data folder).")
    scale: float = Field(1.0, ge=0.0, le=4.0, description="How much of the adapter's delta is added.")
    base_model: str = Field(description="The model the adapter was written for (its runtime's model_name).")


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
    adapters: list[LoraUse] = Field(
        default_factory=list, description="LoRA adapters applied for this request only (runtimes "
        "with supports_lora only; none: the model as loaded)."
    )
    # Sampling filters, applied in llama.cpp's order: top-k, top-p, min-p, then temperature.
    # They only matter when sampling (temperature > 0); greedy takes the best token.
    top_k: int = Field(DEFAULT_TOP_K, ge=0, description="Keep the k likeliest tokens (0: all).")
    top_p: float = Field(DEFAULT_TOP_P, gt=0.0, le=1.0,
                         description="Keep the likeliest tokens covering this probability mass.")
    min_p: float = Field(DEFAULT_MIN_P, ge=0.0, lt=1.0,
                         description="Drop tokens less likely than min_p times the likeliest one.")
    repeat_penalty: float = Field(
        DEFAULT_REPEAT_PENALTY, ge=1.0, le=2.0,
        description="Divide the (positive) logits of tokens generated in the last repeat_last_n "
        "tokens by this (negative ones are multiplied); 1.0 = off. Greedy decoding too. Tokens "
        "without a letter (digits, punctuation, spaces) are never penalized (see penalized).")
    repeat_last_n: int = Field(
        DEFAULT_REPEAT_LAST_N, ge=0,
        description="How many of the most recent generated tokens the penalty looks at (0: off). "
        "The prompt is not counted, as in llama-cpp-python: an answer may repeat the question's "
        "and the sources' words freely.")
    loop_guard: bool = Field(
        True, description="Stop a plain-text answer that repeats itself and trim the repeat "
        "(never applied to json_schema requests).")

    @property
    def guarded(self) -> bool:
        """Whether the loop guard watches this request's output."""
        return self.loop_guard and self.json_schema is None


class TextDelta(BaseModel):
    """One streamed piece of generated text."""

    text: str


class Usage(BaseModel):
    """What a backend reports at the end of one generation."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason = "stop"


class GenerationResult(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float = Field(description="Wall time from the first request to the last piece.")
    backend: str
    model: str
    finish_reason: FinishReason = Field(
        "stop", description="stop: the model ended; length: max_tokens reached; repetition: the "
        "loop guard ended an answer that repeated itself (the repeat is trimmed).")
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
    frees the model for the next caller. With a ``guard``, pieces are shown only once the guard
    releases them, and a loop it finds ends the generation (``finish_reason`` "repetition").
    """

    def __init__(self, events: Iterator[TextDelta | Usage], backend: str, model: str,
                 guard: LoopGuard | None = None,
                 estimate_usage: Callable[[str], Usage] | None = None) -> None:
        self._events = events
        self._backend = backend
        self._model = model
        self._guard = guard
        self._estimate_usage = estimate_usage
        self._generated: list[str] = []  # what the model wrote, including what the guard held back
        self._pieces: list[str] = []
        self._started: float | None = None
        self._first_piece: float | None = None
        self._result: GenerationResult | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self._started is None:
            self._started = time.perf_counter()
        while self._result is None:
            event = next(self._events)
            if isinstance(event, Usage):
                for _ in self._events:  # let the backend run to its end (its cleanup included)
                    pass
                tail = self._guard.finish() if self._guard is not None else ""
                if tail:
                    self._show(tail)
                self._finish(event)
                if tail:
                    return tail
            elif event.text:
                self._generated.append(event.text)
                if self._guard is None:
                    return self._show(event.text)
                text = self._guard.feed(event.text)
                if text:
                    self._show(text)
                if self._guard.stopped:
                    self._finish(self._stop_backend(), "repetition")
                if text:
                    return text
        raise StopIteration

    def _show(self, text: str) -> str:
        if self._first_piece is None:
            assert self._started is not None
            self._first_piece = time.perf_counter() - self._started
        self._pieces.append(text)
        return text

    def _stop_backend(self) -> Usage:
        """End the backend's generation; its own counts when it reports them, else an estimate."""
        throw = getattr(self._events, "throw", None)
        usage: Usage | None = None
        if throw is not None:
            try:
                event = throw(StopGeneration())
                usage = event if isinstance(event, Usage) else None
            except (StopGeneration, StopIteration):
                pass
        self.close()
        if usage is not None:
            return usage
        if self._estimate_usage is not None:
            return self._estimate_usage("".join(self._generated))
        return Usage(prompt_tokens=0, completion_tokens=len(self._generated))

    def _finish(self, usage: Usage, finish_reason: FinishReason | None = None) -> None:
        assert self._started is not None
        self._result = GenerationResult(
            text="".join(self._pieces),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=time.perf_counter() - self._started,
            backend=self._backend,
            model=self._model,
            finish_reason=finish_reason or usage.finish_reason,
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
    supports_lora: ClassVar[bool] = False  # applies a request's LoRA adapters (GGUF files)

    def token_ids(self, text: str) -> list[int]:
        """The model's token ids for ``text`` (runtimes with ``supports_logit_bias`` only)."""
        raise NotImplementedError(f"the {self.name} runtime does not expose its tokenizer")

    def stream(self, request: GenerationRequest) -> TextStream:
        guard = LoopGuard() if request.guarded else None
        return TextStream(self._events(request), backend=self.name, model=self.model_name,
                          guard=guard, estimate_usage=lambda text: self._estimate_usage(request, text))

    def _estimate_usage(self, request: GenerationRequest, generated: str) -> Usage:
        """Counts for a backend stopped before it reported them (no chat template: a bit low)."""
        prompt = "\n".join(m.content for m in request.messages)
        return Usage(prompt_tokens=self.count_tokens(prompt),
                     completion_tokens=self.count_tokens(generated))

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
