"""``engram bench learn``: every engine next to the base model on a small fictional set, both sides
measured, the written answer first; a JSON report and a plot the UI finds; a run without free text is
a diagnostic, never shown as the latest result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench import learn
from app.bench.learn import latest_learn_report, run_learn_bench
from app.bench.learn_measures import Forgot, Learned, chat_messages, interleaved, own_questions
from app.bench.learn_report import EngineRun, LearnBenchReport, print_report, save_report, target_lines
from app.bench.learn_sets import load_set
from app.chat.prompt import NO_SOURCES
from app.settings import load_settings
from engines.base import Contribution
from engines.loop_guard import has_loop


@pytest.mark.slow
@pytest.mark.timeout(1500)  # five runs' worth of scoring and written answers on a busy 2-core machine
def test_bench_learn_on_the_smallest_set(neocortex, isolated_dirs, monkeypatch) -> None:
    from app.bench import learn_measures
    from app.services.general_text import general_questions, heldout_questions

    # Twelve general questions, written and ranked, and twelve held-out ones (ranked, routed and
    # not, before and after sleep), with shorter written answers, keep the forgetting checks in CI's
    # time: every run asks them all again, and they cost more than the learning.
    monkeypatch.setattr(learn_measures, "general_questions", lambda: general_questions()[:12])
    monkeypatch.setattr(learn_measures, "heldout_questions", lambda: heldout_questions()[:12])
    monkeypatch.setattr(learn_measures, "ANSWER_TOKENS", 32)
    monkeypatch.setattr(learn, "REHEARSED", 6)
    settings = load_settings(cli={"ttt.passes": "1", "ttt.calibration_tokens": "512",
                                  "ttt.batch_tokens": "256", "ttt.rehearsal_paraphrase": "false"}).settings
    lines: list[str] = []
    # Retrieval, and the weights with retrieval as the app runs them: the combined run also asks its
    # weights alone (closed book), so ttt is measured without a run of its own. Each engine added
    # later has its own bench test.
    report = run_learn_bench(settings, ["rag", "rag+ttt"], set_name="templated", size=3, speed=False,
                             echo=lines.append, cortex=neocortex, sleep=45)
    labels = [r.label for r in report.runs]
    assert labels == ["base model (closed book)", "rag", "rag+ttt", "ttt closed book, weights of rag+ttt",
                      "rag+ttt +sleep", "ttt closed book, weights of rag+ttt +sleep"]
    base, rag, both, alone, slept, slept_alone = report.runs
    assert alone.engine == "ttt" and alone.forgot == both.forgot  # the same weights, asked without retrieval
    assert slept_alone.engine == "ttt" and slept_alone.forgot == slept.forgot
    assert report.set == "templated" and report.free_text and not report.diagnostic
    assert report.documents == 3 and report.questions >= 10 and report.general_known > 0
    assert report.heldout_known > 0 and base.forgot.heldout_forgetting_ratio == 0.0
    assert base.forgot.perplexity > 1 and rag.forgot.perplexity_drift == 0.0
    assert rag.after.choice_accuracy > base.after.choice_accuracy  # open book beats closed book
    # The headline is the written answer: scored, loops counted, samples kept to read.
    for run in report.runs:
        assert run.after.contains is not None and run.after.exact_match is not None and run.after.loops is not None
        assert run.after.samples and all(s["answer"] is not None for s in run.after.samples)
        assert run.after.right is not None and len(run.after.right) == round(run.after.contains * report.questions)
        assert all(has_loop(a["generated"]) and a["question"] for a in run.after.looped)  # kept to read
    assert rag.after.contains > base.after.contains  # retrieval finds answers the base model cannot know
    assert report.general_known_free_text is not None and base.forgot.free_text_forgetting == 0.0
    assert both.forgot.free_text_forgetting is not None
    assert both.kind == "weights" and both.engine == "rag+ttt"  # retrieval and weights answer together
    assert both.document_tokens > 0 and both.tokens_per_second > 0
    assert both.forgot.perplexity == base.forgot.perplexity  # held-out prose is about nothing learned
    assert both.forgot.heldout_forgetting_ratio is not None and both.forgot.unrouted.heldout_forgetting_ratio is not None
    assert both.forgot.unrouted.perplexity != base.forgot.perplexity  # ... but the weights changed
    assert slept.details["sleep"]["steps"] >= 1
    assert both.details["config"]["passes"] == 1 and both.details["config"]["sleep_open"] == "quiet"
    if str(slept.details["sleep"].get("reason", "")).startswith("rolled back"):  # its last try too:
        assert slept.forgot.unrouted.perplexity == both.forgot.unrouted.perplexity  # weights as before
        assert "perplexity" in slept.rollbacks[-1]
    else:  # kept (perhaps after tries the probe rolled back)
        assert slept.forgot.unrouted.perplexity != both.forgot.unrouted.perplexity
    assert slept.learn_seconds == both.learn_seconds
    # The weights alone are also asked the learner's own training questions, each row its own.
    for own in (alone.rehearsed, slept_alone.rehearsed):
        assert own is not None and 0 < own.asked <= 6 and len(own.samples) == own.asked
    assert both.rehearsed is None and rag.rehearsed is None and base.rehearsed is None
    assert any(line.startswith("ttt closed book") and "own questions" in line for line in lines)
    assert any(line.startswith("rag+ttt +sleep") and "+ sleep" in line for line in lines)
    assert any(line.startswith("minimum bar for rag+ttt +sleep") for line in lines)
    assert any(line.startswith("  and on the held-out general questions: forgetting") for line in lines)
    found = latest_learn_report(isolated_dirs["data"] / "bench")
    assert found is not None
    latest, plot = found
    assert latest.runs[2].after == both.after and plot is not None and plot.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(Path(report.json_path).read_text())["size"] == "3"
    assert neocortex.model.model.layers[-1].mlp.__class__.__name__ != "DualMLP"  # put back


def test_the_learners_own_questions_leave_out_those_that_give_their_answer_away() -> None:
    pairs = [("Mirvale's best-known employer is what?", "Dundru Electric"),
             ("Lying 26 km north-east of Cordelvale, what is a lakeside town facing Lake Ethquen?",
              "Lying 26 km north-east of Cordelvale, Mirvale is a lakeside town facing Lake Ethquen."),
             ("The Druras River enters the lake just south of what?", "Lummere"),
             ("Which river, the Druras River, enters the lake?", "the Druras River"),
             ("How many people does Dundru Electric employ?", "383 people"),
             ("Who moved to Canada in 1998?", "Ada"),  # "Ada" is in "Canada", not in the question's words
             ("Mirvale's best-known employer is what?", "Dundru Electric")]  # kept twice: asked once
    assert own_questions(pairs, 10) == [pairs[0], pairs[2], pairs[4], pairs[5]]  # long or given away: left out
    assert own_questions(pairs, 2) == [pairs[0], pairs[2]]


def test_two_weight_engines_share_the_own_questions_in_turn() -> None:
    ttt = [(f"ttt question {i}?", "yes") for i in range(30)]
    cls = [("cls question?", "no"), ttt[0]]  # a pair both kept is asked once
    asked = interleaved([ttt, cls], 6)
    assert asked == [ttt[0], ("cls question?", "no"), ttt[1], ttt[2], ttt[3], ttt[4]]


def _run(label: str, kind: str, contains: float | None, loops: int | None = 0, forgetting: float = 0.0,
         drift: float = 0.0, engine: str | None = None) -> EngineRun:
    learned = Learned(contains=contains, exact_match=contains, loops=loops, choice_accuracy=0.5)
    return EngineRun(label=label, kind=kind, before=learned, after=learned, engine=engine or label.split()[0],
                     forgot=Forgot(perplexity=14.0, perplexity_drift=drift, general_accuracy=1.0,
                                   forgetting_ratio=0.0, free_text_forgetting=forgetting))


def _report(runs: list[EngineRun], free_text: bool = True) -> LearnBenchReport:
    return LearnBenchReport(created_at="2026-12-06T10:00:00", set="natural", size="tiny", seed=0,
                            free_text=free_text, documents=8, questions=44, general_questions=40,
                            general_known=30, heldout_tokens=900, model="SmolLM2-135M", device="cpu",
                            torch_threads=2, cpu_count=2, load_before=[0.1], runs=runs)


def test_a_run_without_free_text_is_a_diagnostic_never_the_latest_result(tmp_path: Path) -> None:
    result = _report([_run("base model (closed book)", "base", 0.02)])
    save_report(result, tmp_path)
    diagnostic = _report([_run("base model (closed book)", "base", None, None)], free_text=False)
    save_report(diagnostic, tmp_path)
    assert Path(diagnostic.json_path).name.startswith("diagnostic-")
    latest = latest_learn_report(tmp_path)
    assert latest is not None and latest[0].json_path == result.json_path
    lines: list[str] = []
    print_report(diagnostic, lines.append)
    assert lines[1].startswith("DIAGNOSTIC ONLY: free-text answers were skipped")


def test_targets_on_natural_prose_say_pass_and_miss_plainly() -> None:
    runs = [_run("base model (closed book)", "base", 0.02), _run("rag", "context", 0.40),
            _run("ttt +sleep", "weights", 0.55, forgetting=0.02, drift=0.01),
            _run("rag+ttt", "weights", 0.35, loops=2), _run("rag+ttt +sleep", "weights", 0.6)]
    runs[1].after.right, runs[4].after.right = [0, 1, 2], [1, 2, 3, 4]
    runs[3].after.looped = [{"question": "How big are its blocks?", "expected": "4 MB",
                             "generated": "1.5-meter (4.1 ft) 1.5-meter (4.1 ft) 1.5-meter (4.1 ft)"}]
    lines = target_lines(_report(runs))
    assert not any(line.startswith("target rag+ttt +sleep: contains >= 0.5") for line in lines), lines  # open book
    assert any(line.startswith("target ttt +sleep: contains >= 0.5 (0.550)") and line.endswith("PASS")
               for line in lines), lines
    assert any(line.startswith("target rag+ttt: contains >= rag's (0.350 vs 0.400)") and line.endswith("MISS")
               for line in lines), lines
    assert "(0.600 vs 0.400; 2 answered only with the weights, 1 only without): PASS" in "\n".join(lines)
    assert lines[-2].startswith("target: no answer loops (2 looped)") and lines[-2].endswith("MISS")
    assert lines[-1].startswith("  looped in rag+ttt: 'How big are its blocks?' -> '1.5-meter")  # which one


def test_every_set_loads_with_accepted_answers_and_four_options() -> None:
    for name, size in (("natural", "tiny"), ("handwritten", "tiny"), ("templated", 3)):
        found = load_set(name, size)  # type: ignore[arg-type]
        files = {d.file_name for d in found.documents}
        assert found.name == name and found.documents and found.questions
        for q in found.questions:
            assert q.doc_file in files and q.answer in q.accepted and q.answer in q.options and len(q.options) == 4
    assert load_set("handwritten").seed is None and len(load_set("handwritten").documents) >= 10


def test_all_means_retrieval_every_document_learner_and_each_weight_writer_with_retrieval() -> None:
    from app.bench.learn import _variants
    from engines.registry import engine_class, registered

    names = [name for name, _, _ in _variants(["all"], ablations=False)]
    learners = [n for n in registered() if n != "rag" and engine_class(n).learns_documents]
    writers = [n for n in learners if engine_class(n).writes_weights]
    assert names == ["rag", *learners, *(f"rag+{n}" for n in writers)]
    assert "ttt" in learners and "ace" not in learners  # ACE learns from feedback, not documents


def test_the_command_writes_its_report_where_json_out_says(tmp_path: Path, monkeypatch) -> None:
    """`engram bench learn --json-out FILE` wrote nothing: the report only went to the bench folder.
    The bench itself is replaced by one report here (its runs are tested above); the command's
    handling of its options is what is checked."""
    from click.testing import CliRunner

    from app.bench import learn
    from app.cli import cli

    report = _report([_run("base model (closed book)", "base", 0.0), _run("rag", "context", 0.25)])
    asked: dict[str, object] = {}

    def bench(settings, engines, **options):
        asked.update(options, engines=engines)
        return report

    monkeypatch.setattr(learn, "run_learn_bench", bench)
    out = tmp_path / "learn.json"
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "--config-dir", str(tmp_path / "config"),
                                      "bench", "learn", "--engine", "rag", "--set", "handwritten",
                                      "--json-out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert asked["engines"] == ["rag"] and asked["set_name"] == "handwritten"
    assert LearnBenchReport.model_validate_json(out.read_text()) == report


def test_the_bench_asks_learned_weights_under_their_message_only_where_chat_would(neocortex) -> None:
    settings = load_settings().settings
    routed = Contribution(engine="ttt", learned_states=["ttt:1"], meta={"routed_share": 0.5}, system="Rehearsed.")
    unrouted = Contribution(engine="ttt", learned_states=["ttt:1"], meta={"routed_share": 0.0}, system="Rehearsed.")

    def system(contributions: list[Contribution]) -> str:
        return chat_messages("Who chaired the meeting?", contributions, neocortex, settings)[0].content

    assert system([routed]) == "Rehearsed."
    assert system([unrouted]) == system([]) == NO_SOURCES  # chat's controller leaves it inactive
