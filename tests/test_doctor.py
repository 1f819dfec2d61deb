"""`engram doctor` finds real problems in a real data folder and says what to fix."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from app.services.doctor import check_api, check_network, check_store, run_checks
from app.settings import load_settings
from tests.helpers import open_engram


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_a_healthy_install_passes_and_problems_are_named(embedder, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("The granary holds nine hundred sacks of barley.")
    engram = open_engram(embedder)
    engram.add_folder(folder)
    engram.run_pending()
    engram.close()
    settings = load_settings().settings
    healthy = by_name(run_checks(settings))
    assert all(c.status == "ok" for c in healthy.values()), healthy

    (settings.data_dir / "index" / "chunks.faiss").unlink()
    shutil.rmtree(folder)
    damaged = by_name(run_checks(settings))
    assert damaged["store"].status == "warn" and "rebuilds the index" in damaged["store"].fix
    assert damaged["folders"].status == "warn" and "missing" in damaged["folders"].detail


def test_bad_model_and_exposed_ui_fail_with_a_fix(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--chat-model", str(tmp_path / "absent.gguf"),
                                      "--ui-host", "0.0.0.0", "doctor"])
    assert result.exit_code != 0
    assert "✗ chat model" in result.output and "No GGUF model file" in result.output
    assert "✗ network" in result.output and "ui_password" in result.output
    guarded = load_settings(cli={"ui_host": "0.0.0.0", "ui_password": "correct horse"}).settings
    assert check_network(guarded).status == "warn"
    assert check_store(load_settings().settings).status == "warn"  # no store yet: says how to make one


def test_the_api_check_follows_the_key_rule() -> None:
    def api(**cli: str) -> str:
        return check_api(load_settings(cli=cli).settings).status

    assert api() == "ok"
    assert api(api_host="0.0.0.0") == "fail"
    assert api(api_host="0.0.0.0", api_key="k") == "ok"
    assert api(ui_host="0.0.0.0", ui_password="correct horse") == "warn"  # /v1 closed until a key
    assert api(ui_password="correct horse", api_key="k") == "ok"
