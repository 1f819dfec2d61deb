"""``engram bench route``: the router's split of fictional and general questions, with the real
embedder and the engine's own keys."""

from __future__ import annotations

import json

from click.testing import CliRunner

from app.bench.route import HELDOUT, run_route_bench
from app.cli import cli
from app.settings import load_settings


def test_fictional_questions_get_the_learned_weights_and_general_ones_do_not(embedder, isolated_dirs) -> None:
    settings = load_settings().settings
    lines: list[str] = []
    report = run_route_bench(settings, "tiny", embed=embedder.embed, echo=lines.append)
    learned, chosen_on, heldout, prose = report.groups
    assert report.documents == 8 and report.keys >= report.documents
    assert learned.learned and learned.routed == learned.texts and learned.mean_share >= 0.95
    assert [s for _, s, _ in learned.worst] == sorted(s for _, s, _ in learned.worst)  # the least routed first
    assert round(learned.lowest_similarity, 3) == learned.worst[0][1] >= settings.ttt.route_low
    assert heldout.name == HELDOUT and heldout.texts >= 100
    for group in (chosen_on, heldout, prose):
        assert not group.learned and group.median_similarity < settings.ttt.route_low
        assert group.routed < 0.05 * group.texts
    assert sum("PASS" in line for line in lines) == 2


def test_bounds_that_route_everything_miss_the_heldout_target(embedder, isolated_dirs) -> None:
    settings = load_settings(cli={"ttt.route_low": "0.0", "ttt.route_high": "0.01", "ttt.route": "false"}).settings
    lines: list[str] = []
    report = run_route_bench(settings, 3, embed=embedder.embed, echo=lines.append)
    assert report.groups[2].routed >= 0.05 * report.groups[2].texts
    assert any(line.startswith("held-out general questions kept from them") and line.endswith("MISS")
               for line in lines)
    assert any(line.startswith("note: routing is off") for line in lines)


def test_the_command_writes_its_report(isolated_dirs, tmp_path) -> None:
    out = tmp_path / "route.json"
    result = CliRunner().invoke(cli, ["bench", "route", "--size", "3", "--json-out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "held-out general questions" in result.output
    assert json.loads(out.read_text())["documents"] == 3
    unknown = CliRunner().invoke(cli, ["bench", "route", "--size", "huge"])
    assert unknown.exit_code == 2 and "'huge' is not a set; use tiny" in unknown.output
