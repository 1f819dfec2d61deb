"""The settings as a person reads them: each one's value now, which layer set it, what it does,
and the value saved in the config file for the next start (the Settings tab's rows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.settings import FIELDS, LoadedSettings, get_value, normalize_name, read_config_file


class SettingRow(BaseModel):
    name: str = Field(description="The dotted name (``rag.min_similarity``).")
    value: Any = Field(description="What this process runs with.")
    source: str = Field(description="The layer that set it: default, config file, environment, ...")
    description: str = ""
    saved: Any = Field(None, description="The config file's value, used from the next start "
                                         "(None: not in the file, or not read).")


def setting_names() -> list[str]:
    """Every setting's dotted name, in the settings model's order."""
    return list(FIELDS)


def setting_row(loaded: LoadedSettings, name: str, saved: dict[str, Any] | None = None) -> SettingRow:
    """One setting (``name`` in any spelling ``normalize_name`` accepts); ``saved``: the config
    file's values, when the caller read them."""
    name = normalize_name(name)
    return SettingRow(name=name, value=get_value(loaded.settings, name), source=loaded.sources[name],
                      description=FIELDS[name].description or "", saved=(saved or {}).get(name))


def setting_rows(loaded: LoadedSettings) -> list[SettingRow]:
    """Every setting, with what the config file holds for it."""
    saved = read_config_file(loaded.config_file)
    return [setting_row(loaded, name, saved) for name in FIELDS]
