"""The process's chat runtime: built from settings on first use, swapped when the user picks another.

Loading a model takes from a fraction of a second (the embedded GGUF) to minutes (a large torch
model), so nothing is loaded until the first answer needs it, and a switch builds the new runtime
before the old one is closed: a failed switch leaves the working runtime in place.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from app.runtimes.registry import make_runtime
from app.settings import Backend, Settings
from engines.generation import Runtime

log = logging.getLogger(__name__)


def runtime_options(settings: Settings, backend: str) -> dict[str, Any]:
    """Constructor options for ``backend`` taken from the settings."""
    if backend == "llamacpp":
        return {"n_ctx": settings.context_tokens, "isolated": settings.isolate_runtime,
                "stall_timeout_s": settings.runtime_timeout_s, "n_threads": settings.threads}
    if backend == "ollama":
        return {"host": settings.ollama_host, "read_timeout_s": settings.ollama_timeout_s,
                "num_ctx": settings.context_tokens}
    if backend == "torch":
        return {"device": settings.device, "threads": settings.threads}
    raise ValueError(f"unknown generation backend {backend!r}")


class ActiveRuntime:
    def __init__(self, settings: Settings, backend: Backend | None = None,
                 model: str | None = None) -> None:
        """The chat runtime of ``settings``, or ``backend``/``model`` (e.g. the agent roles')."""
        self.settings = settings
        self.backend: Backend = backend or settings.chat_backend
        self.model: str = model or (settings.chat_model if backend is None else "embedded")
        self._runtime: Runtime | None = None
        self._owned = True
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._runtime is not None

    def get(self) -> Runtime:
        """The runtime, loading it on first use (raises ``RuntimeUnavailable`` with a fix)."""
        with self._lock:
            if self._runtime is None:
                self._runtime = make_runtime(self.backend, self.model,
                                             **runtime_options(self.settings, self.backend))
            return self._runtime

    def switch(self, backend: Backend, model: str) -> Runtime:
        """Load ``backend``/``model`` and make it active; the previous one is closed after."""
        runtime = make_runtime(backend, model, **runtime_options(self.settings, backend))
        runtime.check()
        with self._lock:
            previous, owned = self._runtime, self._owned
            self._runtime, self._owned, self.backend, self.model = runtime, True, backend, model
        if previous is not None and owned:
            previous.close()
        log.info("chat runtime is now %s %s", backend, model)
        return runtime

    def adopt(self, runtime: Runtime) -> None:
        """Use an already loaded runtime that someone else closes (tests and benches share one)."""
        with self._lock:
            self._runtime, self._owned = runtime, False
            self.backend, self.model = runtime.name, runtime.model_name  # type: ignore[assignment]

    def close(self) -> None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None and self._owned:
            runtime.close()
