"""Settings: one model, four layers (default < config file < environment < command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.settings import FIELDS, SettingsError, expected, flag_name, load_settings, save_setting


def test_defaults_and_sources(isolated_dirs):
    loaded = load_settings()
    assert loaded.settings.data_dir == isolated_dirs["data"]
    assert loaded.sources["data_dir"] == "environment"
    assert loaded.sources["chunk_tokens"] == "default"
    assert loaded.config_file == isolated_dirs["config"] / "config.toml"


def test_precedence_file_env_cli(isolated_dirs, monkeypatch):
    save_setting("chunk_tokens", "120")
    save_setting("embed_batch_size", "16")
    save_setting("max_file_mb", "3")
    monkeypatch.setenv("ENGRAM_EMBED_BATCH_SIZE", "8")
    monkeypatch.setenv("ENGRAM_MAX_FILE_MB", "4")
    loaded = load_settings(cli={"max_file_mb": "5"})
    s = loaded.settings
    assert (s.chunk_tokens, s.embed_batch_size, s.max_file_mb) == (120, 8, 5.0)
    assert loaded.sources["chunk_tokens"] == "config file"
    assert loaded.sources["embed_batch_size"] == "environment"
    assert loaded.sources["max_file_mb"] == "command line"


@pytest.mark.parametrize("field,value", [("chunk_tokens", "lots"), ("chunk_tokens", "3"),
                                         ("device", "tpu"), ("nonsense", "1")])
def test_invalid_values_are_clear_errors(field, value):
    with pytest.raises(SettingsError) as err:
        load_settings(cli={field: value})
    assert field in str(err.value)


def test_bad_config_file_is_reported(isolated_dirs):
    isolated_dirs["config"].mkdir(parents=True)
    (isolated_dirs["config"] / "config.toml").write_text("chunk_tokens = [\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings()


def test_config_show_and_flags_from_the_model(isolated_dirs, tmp_path: Path):
    runner = CliRunner()
    other = tmp_path / "elsewhere"
    result = runner.invoke(cli, ["--data-dir", str(other), "--chunk-tokens", "64", "config", "show"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 4}
    assert "command line" in lines["chunk_tokens"] and "64" in lines["chunk_tokens"]
    assert "command line" in lines["data_dir"]
    assert "default" in lines["watch_debounce_s"]
    bad = runner.invoke(cli, ["--chunk-tokens", "x", "config", "show"])
    assert bad.exit_code != 0 and "chunk_tokens" in bad.output


def test_config_set_persists(isolated_dirs):
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "search-k", "9"]).exit_code == 0
    assert load_settings().settings.search_k == 9
    bad = runner.invoke(cli, ["config", "set", "search_k", "0"])
    assert bad.exit_code != 0
    assert load_settings().settings.search_k == 9


def test_engine_sections_in_every_layer(isolated_dirs, monkeypatch):
    save_setting("rag.k", "7")
    save_setting("rag-min-similarity", "0.5")
    monkeypatch.setenv("ENGRAM_RAG_CONTEXT_SHARE", "0.5")
    loaded = load_settings(cli={"rag.logit_bias": "true"})
    rag = loaded.settings.rag
    assert (rag.k, rag.min_similarity, rag.context_share, rag.logit_bias) == (7, 0.5, 0.5, True)
    assert loaded.sources["rag.k"] == "config file"
    assert loaded.sources["rag.context_share"] == "environment"
    assert loaded.sources["rag.logit_bias"] == "command line"
    assert "[rag]" in (isolated_dirs["config"] / "config.toml").read_text()
    result = CliRunner().invoke(cli, ["--rag-k", "3", "config", "show"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "rag.k " in line)
    assert "3" in row and "command line" in row


def test_unknown_names_suggest_the_close_ones():
    with pytest.raises(SettingsError, match="did you mean rag.min_similarity"):
        save_setting("rag.min_similarty", "0.2")
    with pytest.raises(SettingsError, match="unknown engine"):
        load_settings(cli={"engines": "rag,telepathy"})


def test_two_engines_that_rebuild_the_same_layers_are_refused_before_anything_is_saved(isolated_dirs):
    """ttt and cls each replace the MLP layers with modules of their own: on together, the second
    found no layer it knew at its first learn. Now the setting is refused, saying what to do."""
    with pytest.raises(SettingsError, match=r"ttt and cls cannot be enabled together.*enable one of them"):
        load_settings(cli={"engines": "rag,ttt,cls"})
    result = CliRunner().invoke(cli, ["config", "set", "engines", "cls,ttt"])
    assert result.exit_code != 0 and "cls and ttt cannot be enabled together" in result.output
    assert load_settings().settings.engines == ["rag"]  # nothing saved
    assert load_settings(cli={"engines": "rag,ttt,d2l"}).settings.engines == ["rag", "ttt", "d2l"]
    assert load_settings(cli={"engines": "rag,ttt,ttt"}).settings.engines == ["rag", "ttt"]  # one engine


def test_saving_runs_the_models_own_checks(isolated_dirs):
    """A value of the right type that the model refuses must not be saved (it would break start-up)."""
    for field, value in [("engines", "nope"), ("ollama_host", "localhost:11434"), ("ttt.route_low", "0.8")]:
        with pytest.raises(SettingsError, match=field):
            save_setting(field, value)
    assert not (isolated_dirs["config"] / "config.toml").exists()
    save_setting("ollama_host", "http://10.0.0.2:11434/")
    assert load_settings().settings.ollama_host == "http://10.0.0.2:11434"


@pytest.mark.parametrize("field,value,message", [
    ("temperature", "hot", "temperature must be a number from 0 to 2, not 'hot'"),
    ("search_k", "0", "search_k must be a whole number from 1 to 100, not '0'"),
    ("max_file_mb", "-1", "max_file_mb must be a number above 0, not '-1'"),
    ("ann_threshold", "12", "ann_threshold must be a whole number of at least 256, not '12'"),
    ("device", "tpu", "device must be one of auto, cpu, cuda, not 'tpu'"),
    ("sleep.auto", "maybe", "sleep.auto must be true or false, not 'maybe'"),
])
def test_refusals_say_what_the_setting_takes(isolated_dirs, field, value, message):
    """Derived from the field's type and limits: no parser internals ("Expecting value: line 1")."""
    with pytest.raises(SettingsError) as err:
        save_setting(field, value)
    assert str(err.value) == message
    with pytest.raises(SettingsError) as err:
        load_settings(cli={field: value})
    assert str(err.value) == f"{flag_name(field)}: {message}"


def test_every_number_setting_names_its_range():
    """Each bounded number setting says its bounds, read from the model, never hand-written."""
    for field, info in FIELDS.items():
        if info.annotation in (int, float) and info.metadata:
            assert any(ch.isdigit() for ch in expected(field)), (field, expected(field))


@pytest.mark.parametrize("value", ["hot", "data/engram", "./here", "../up"])
def test_folder_settings_refuse_relative_paths(isolated_dirs, value):
    folders = [f for f, info in FIELDS.items() if "Path" in str(info.annotation)]
    assert {"data_dir", "drop_folder", "models_dir"} <= set(folders)
    for field in folders:
        with pytest.raises(SettingsError, match=f"^{field}: '.*' is not a full path"):
            save_setting(field, value)
        result = CliRunner().invoke(cli, ["config", "set", field, value])
        assert result.exit_code != 0 and "is not a full path" in result.output, result.output
    assert not (isolated_dirs["config"] / "config.toml").exists()


def test_folder_settings_take_creatable_absolute_paths(isolated_dirs, tmp_path: Path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SettingsError, match="is a file, not a folder"):
        save_setting("drop_folder", str(tmp_path / "a-file"))
    with pytest.raises(SettingsError, match="cannot be created"):
        save_setting("models_dir", str(tmp_path / "a-file" / "below"))
    save_setting("drop_folder", str(tmp_path / "new" / "drop"))  # not there yet: created on use
    assert load_settings().settings.drop_folder == tmp_path / "new" / "drop"
    assert not (tmp_path / "new").exists()  # validating creates nothing
    save_setting("models_dir", "~/engram-models")
    assert load_settings().settings.models_dir == Path.home() / "engram-models"
