"""Every training step goes to DATA_DIR/metrics.jsonl; Weights & Biases gets the same records
when ``metrics.wandb`` asks and the package is there, never otherwise.

wandb is not installed on these machines: the not-installed path is tested for real. The
installed path uses a small module named wandb placed on sys.path by the test (the one stand-in
here: the package itself cannot exist), which records what Engram calls."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.metrics_log import MetricsLog
from store.wandb_mirror import WandbMirror
from tests.helpers import open_engram

STEP = {"engine": "cls", "phase": "learn", "step": 1, "loss": 2.5, "expert": 0}
RECORDER = '''
runs = []

class Run:
    def __init__(self, settings):
        self.settings, self.logged, self.finished = settings, [], False

    def log(self, data):
        if self.settings.get("project") == "broken":
            raise RuntimeError("wandb fell over")
        self.logged.append(data)

    def finish(self):
        self.finished = True

def init(**settings):
    runs.append(Run(settings))
    return runs[-1]
'''


@pytest.fixture
def wandb_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    folder = tmp_path / "site"
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "__init__.py").write_text(RECORDER)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    sys.modules.pop("wandb", None)
    yield
    sys.modules.pop("wandb", None)


def lines(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "metrics.jsonl").read_text().splitlines()]


def test_without_wandb_the_steps_go_to_metrics_jsonl_alone(tmp_path: Path, caplog) -> None:
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here: the not-installed path cannot be run for real")
    data = tmp_path / "data"
    for mode in ("auto", "offline", "online", "off"):
        with caplog.at_level(logging.WARNING, logger="store.wandb_mirror"):
            mirror = WandbMirror(data, mode)
        assert not mirror.active
        assert ("not installed" in caplog.text) == (mode in ("offline", "online"))  # asked for: said why not
        caplog.clear()
        MetricsLog(data, mirror).append({**STEP, "mode": mode})
    assert [r["mode"] for r in lines(data)] == ["auto", "offline", "online", "off"]
    assert "wandb" not in sys.modules and not (data / "wandb").exists()
    engram = open_engram()  # the default (auto) in the app
    try:
        assert engram.settings.metrics.wandb == "auto" and not engram.engine_context.metrics.mirror.active
    finally:
        engram.close()


def test_with_wandb_auto_mirrors_every_record_offline_into_the_data_folder(tmp_path: Path, wandb_on_path) -> None:
    data = tmp_path / "data"
    log = MetricsLog(data, WandbMirror(data, "auto"))
    assert log.mirror.mode == "offline" and "wandb" not in sys.modules  # imported at the first step only
    log.append(STEP)
    log.append({**STEP, "step": 2, "loss": 2.1})
    wandb = sys.modules["wandb"]
    [run] = wandb.runs
    assert run.settings["mode"] == "offline" and Path(run.settings["dir"]) == data  # wandb writes DATA_DIR/wandb
    assert run.settings["project"] == "engram"
    assert run.logged == lines(data)  # the same records, ts included
    log.close()
    assert run.finished

    for mode, expected in (("online", "online"), ("offline", "offline")):
        WandbMirror(data, mode, project="p").log(STEP)
        assert wandb.runs[-1].settings["mode"] == expected and wandb.runs[-1].settings["project"] == "p"
    WandbMirror(data, "off").log(STEP)
    assert len(wandb.runs) == 3  # off: never started


def test_a_failing_wandb_never_stops_a_training_step(tmp_path: Path, wandb_on_path, caplog) -> None:
    data = tmp_path / "data"
    log = MetricsLog(data, WandbMirror(data, "offline", project="broken"))
    with caplog.at_level(logging.WARNING, logger="store.wandb_mirror"):
        log.append(STEP)
        log.append({**STEP, "step": 2})
    assert [r["step"] for r in lines(data)] == [1, 2] and not log.mirror.active
    assert caplog.text.count("wandb logging failed") == 1


def test_the_setting_reaches_the_engines_metrics(wandb_on_path) -> None:
    from engines.cls.engine import CLSEngine

    engram = open_engram(**{"metrics.wandb": "online", "metrics.wandb_project": "mine"})
    try:
        metrics = engram.engine_context.metrics
        assert metrics.mirror.mode == "online" and metrics.mirror.project == "mine"
        assert CLSEngine(engram.engine_context).metrics is metrics  # the CLS steps go through it
        assert metrics.path == engram.paths.root / "metrics.jsonl"
    finally:
        engram.close()
