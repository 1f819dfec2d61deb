"""Settings: one model, four layers (default < config file < environment < command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.settings import SettingsError, load_settings, save_setting


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


def test_saving_runs_the_models_own_checks(isolated_dirs):
    """A value of the right type that the model refuses must not be saved (it would break start-up)."""
    for field, value in [("engines", "nope"), ("ollama_host", "localhost:11434"), ("ttt.route_low", "0.8")]:
        with pytest.raises(SettingsError, match=field):
            save_setting(field, value)
    assert not (isolated_dirs["config"] / "config.toml").exists()
    save_setting("ollama_host", "http://10.0.0.2:11434/")
    assert load_settings().settings.ollama_host == "http://10.0.0.2:11434"
