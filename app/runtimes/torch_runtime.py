"""torch runtime: the same GGUF (or a local Hugging Face folder) as a transformers model.

The weight-writing engines (TTT, LoRA experts, CLS consolidation) change a torch copy of the model,
so answering with what they learned needs generation from that copy: this runtime exposes
``model`` and ``tokenizer`` for them and generates through ``model.generate``. A GGUF file is
dequantized on load (fp32 on CPU, bf16 on CUDA). Nothing is ever downloaded: the hub is forced
offline before transformers is imported and every load passes ``local_files_only=True``.

Decoding follows the request exactly as llama.cpp does (``decoding_processors``): the repetition
penalty looks at the last ``repeat_last_n`` generated tokens only (transformers' own
``repetition_penalty`` looks at the whole sequence, prompt included), and when sampling the
filters run in llama.cpp's order, top-k, top-p, min-p and only then temperature (transformers
would apply temperature first). So greedy answers match llama.cpp's up to quantization.

Structured output is not constrained here (transformers has no grammar sampler): the schema's
shape is put into the system message, the answer is pre-filled with ``{"``, the output is
validated, and ``generate_json`` tries twice before raising ``StructuredOutputError``. It is best
effort (the 135M model often fails it); use llama.cpp or Ollama where JSON must always parse.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.base import Router, routed, routing_query
from engines.generation import (
    CHATML_TEMPLATE,
    ChatMessage,
    GenerationRequest,
    PromptTooLong,
    Runtime,
    RuntimeUnavailable,
    StopGeneration,
    TextDelta,
    Usage,
    penalized,
)
from app.runtimes.llamacpp import EMBEDDED, embedded_gguf_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

JSON_INSTRUCTION = "Reply with one JSON object and nothing else (no prose, no code fences). {shape}"


def _offline_transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return transformers


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_source(model: str | Path) -> tuple[Path, str | None]:
    """-> (folder, gguf file name or None for a Hugging Face folder)."""
    path = embedded_gguf_path() if str(model) == EMBEDDED else Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    raise RuntimeUnavailable(
        f"No model for the torch runtime at {path}: give a .gguf file or a local Hugging Face "
        "folder with config.json (nothing is downloaded)."
    )


def _question(request: GenerationRequest) -> str:
    """What the request asks, as the learned weights are routed by (its last user turns)."""
    return routing_query([m.content for m in request.messages if m.role == "user"])


class StopTrimmer:
    """Cuts streamed text at the first stop string, holding back what might begin one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        hits = [self.buffer.find(s) for s in self.stops if s in self.buffer]
        if hits:
            out, self.buffer, self.stopped = self.buffer[: min(hits)], "", True
            return out
        keep = max((n for s in self.stops for n in range(len(s), 0, -1)
                    if self.buffer.endswith(s[:n])), default=0)
        cut = len(self.buffer) - keep
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


def _describe(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    return str(prop.get("type", "any JSON value"))


def describe_schema(schema: dict[str, Any]) -> str:
    """A short shape description: small models copy a raw schema instead of filling it in."""
    props = schema.get("properties")
    if not props:
        return f"It must match this JSON schema: {json.dumps(schema)}"
    keys = ", ".join(f'"{name}" ({_describe(prop)})' for name, prop in props.items())
    return f"Its keys: {keys}."


def with_json_instruction(messages: list[ChatMessage], schema: dict[str, Any]) -> list[ChatMessage]:
    note = JSON_INSTRUCTION.format(shape=describe_schema(schema))
    if messages and messages[0].role == "system":
        first = ChatMessage(role="system", content=f"{messages[0].content}\n\n{note}")
        return [first, *messages[1:]]
    return [ChatMessage(role="system", content=note), *messages]


class WindowedRepetitionPenalty:
    """llama.cpp's repetition penalty over the last ``last_n`` generated tokens, not the prompt.

    Each distinct token in the window has its logit divided by ``penalty`` when positive and
    multiplied by it otherwise, exactly like llama.cpp's penalties sampler, except for tokens
    ``penalized_ids`` marks False (no letter in them: ``engines.generation.penalized``), which the
    llama.cpp runtime spares too.
    """

    def __init__(self, penalty: float, last_n: int, prompt_len: int,
                 penalized_ids: torch.Tensor | None = None) -> None:
        self.penalty = penalty
        self.last_n = last_n
        self.prompt_len = prompt_len
        self.penalized_ids = penalized_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        start = max(self.prompt_len, input_ids.shape[1] - self.last_n)
        window = input_ids[:, start:]
        if window.shape[1] == 0:
            return scores
        picked = scores.gather(1, window)
        penalized = torch.where(picked <= 0, picked * self.penalty, picked / self.penalty)
        if self.penalized_ids is not None:
            penalized = torch.where(self.penalized_ids[window], penalized, picked)
        return scores.scatter(1, window, penalized)


def penalized_mask(tokenizer: Any, vocab_size: int, device: str) -> torch.Tensor:
    """For each token id, whether the repetition penalty applies to it (``penalized``)."""
    import torch

    known = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True)
    mask = [penalized(t) for t in texts] + [False] * (vocab_size - known)
    return torch.tensor(mask, dtype=torch.bool, device=device)


def decoding_processors(request: GenerationRequest, prompt_len: int,
                        penalized_ids: torch.Tensor | None = None) -> list[Any]:
    """The request's decoding as transformers logits processors, in llama.cpp's sampler order.

    Penalty first (after any logit bias, which transformers applies before custom processors),
    then, when sampling, top-k, top-p, min-p and temperature last.
    """
    from transformers import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors: list[Any] = []
    if request.repeat_penalty != 1.0 and request.repeat_last_n > 0:
        processors.append(WindowedRepetitionPenalty(request.repeat_penalty, request.repeat_last_n,
                                                    prompt_len, penalized_ids))
    if request.temperature > 0:
        if request.top_k > 0:
            processors.append(TopKLogitsWarper(top_k=request.top_k))
        if request.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=request.top_p))
        if request.min_p > 0:
            processors.append(MinPLogitsWarper(min_p=request.min_p))
        if request.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(request.temperature))
    return processors


class _Generation(threading.Thread):
    """``model.generate`` in a thread; on failure it ends the streamer so the reader never waits."""

    def __init__(self, model: Any, kwargs: dict[str, Any], streamer: Any) -> None:
        super().__init__(name="engram-torch-generate", daemon=True)
        self.model, self.kwargs, self.streamer = model, kwargs, streamer
        self.output: torch.Tensor | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                self.output = self.model.generate(**self.kwargs)
        except BaseException as exc:  # handed to the reading thread
            self.error = exc
            self.streamer.end()


class TorchRuntime(Runtime):
    """A transformers causal LM; one generation at a time (the lock also guards training code)."""

    name = "torch"
    json_attempts = 2
    router: Router | None = None  # installed by an engine that routes its learned weights

    def __init__(
        self,
        model: str | Path = EMBEDDED,
        *,
        device: str = "auto",
        piece_timeout_s: float = 300.0,
        threads: int | None = None,
    ) -> None:
        """``piece_timeout_s`` bounds the wait for each streamed piece (first one included);
        ``threads``: torch's CPU threads, for the whole process (torch has no other kind); None
        leaves torch's own choice."""
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.folder, self.gguf_file = resolve_source(model)
        self.model_name = EMBEDDED if str(model) == EMBEDDED else Path(model).expanduser().stem
        self.device = pick_device(device)
        self.piece_timeout_s = piece_timeout_s
        self.lock = threading.Lock()
        self._penalized_ids: torch.Tensor | None = None
        started = time.perf_counter()
        self.tokenizer, self.model = self._load()
        self.load_seconds = time.perf_counter() - started
        log.info("torch loaded %s on %s in %.1f s", self.model_name, self.device, self.load_seconds)

    def _load(self) -> tuple[Any, Any]:
        transformers = _offline_transformers()
        import torch

        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        kwargs: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        # A folder's weights load from safetensors only: a pickled *.bin is never unpickled.
        weights = {} if self.gguf_file else {"use_safetensors": True}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder), **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.folder), dtype=dtype, **kwargs, **weights
            )
        except (OSError, ValueError, ImportError) as exc:
            source = self.folder / self.gguf_file if self.gguf_file else self.folder
            raise RuntimeUnavailable(f"transformers could not load {source}: {exc}") from exc
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
        return tokenizer, model.to(self.device).eval()

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    supports_logit_bias = True

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    def penalized_ids(self) -> torch.Tensor:
        """Which token ids the repetition penalty applies to (``penalized``), by id."""
        if self._penalized_ids is None:
            self._penalized_ids = penalized_mask(self.tokenizer, int(self.model.config.vocab_size),
                                                 self.device)
        return self._penalized_ids

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def _generate_kwargs(self, inputs: Any, request: GenerationRequest, max_new: int,
                         streamer: Any, cancel: threading.Event) -> dict[str, Any]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        pad = self.tokenizer.pad_token_id
        prompt_len = int(inputs["input_ids"].shape[1])
        kwargs: dict[str, Any] = dict(
            **inputs, max_new_tokens=max_new, streamer=streamer,
            stopping_criteria=StoppingCriteriaList([Cancelled()]),
            logits_processor=LogitsProcessorList(
                decoding_processors(request, prompt_len, self.penalized_ids())),
            pad_token_id=pad if pad is not None else next(iter(self._eos_ids()), 0),
            do_sample=request.temperature > 0,
        )
        if request.logit_bias:
            kwargs["sequence_bias"] = {(int(t),): float(b) for t, b in request.logit_bias.items()}
        if request.temperature > 0:
            # The filters and the temperature are in logits_processor; these neutral values keep
            # transformers from adding its own in its own order.
            kwargs.update(temperature=1.0, top_k=0, top_p=1.0)
            if request.seed is not None:
                torch.manual_seed(request.seed)
        return kwargs

    def _inputs(self, request: GenerationRequest) -> tuple[Any, str]:
        """Tokenized chat prompt, and the text the answer is pre-filled with (``{\"`` for JSON)."""
        messages, prefill = request.messages, ""
        if request.json_schema is not None:
            messages = with_json_instruction(messages, request.json_schema)
            prefill = '{"' if request.json_schema.get("properties") else "{"
        prompt = self.tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], add_generation_prompt=True, tokenize=False
        )
        inputs = self.tokenizer(prompt + prefill, add_special_tokens=False, return_tensors="pt")
        return inputs.to(self.device), prefill

    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        from transformers import TextIteratorStreamer

        if self.model is None:
            raise RuntimeUnavailable(f"the torch runtime for {self.model_name} was closed")
        inputs, prefill = self._inputs(request)
        prompt_len = int(inputs["input_ids"].shape[1])
        if prompt_len >= self.context_window:
            raise PromptTooLong(prompt_len, self.context_window)
        max_new = min(request.max_tokens, self.context_window - prompt_len)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True, timeout=self.piece_timeout_s)
        cancel = threading.Event()
        trimmer = StopTrimmer(request.stop)
        with self.lock, routed(self, [_question(request)]):
            kwargs = self._generate_kwargs(inputs, request, max_new, streamer, cancel)
            worker = _Generation(self.model, kwargs, streamer)
            worker.start()
            try:
                if prefill:
                    yield TextDelta(text=prefill)
                for piece in streamer:
                    text = trimmer.feed(piece)
                    if text:
                        yield TextDelta(text=text)
                    if trimmer.stopped:
                        break
                if not trimmer.stopped and (tail := trimmer.flush()):
                    yield TextDelta(text=tail)
            except StopGeneration:
                trimmer.stopped = True  # the caller ended it: finish_reason "stop" below
            except queue.Empty as exc:
                raise RuntimeUnavailable(
                    f"the torch model produced no text for {self.piece_timeout_s:.0f} s; "
                    "it may be too large for this machine"
                ) from exc
            finally:
                cancel.set()
                worker.join()
        if worker.error is not None:
            raise worker.error
        assert worker.output is not None
        new_tokens = worker.output[0, prompt_len:].tolist()
        ended = trimmer.stopped or (bool(new_tokens) and new_tokens[-1] in self._eos_ids())
        yield Usage(
            prompt_tokens=prompt_len, completion_tokens=len(new_tokens),
            finish_reason="stop" if ended or len(new_tokens) < max_new else "length",
        )

    def close(self) -> None:
        with self.lock:
            self.model = None
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
