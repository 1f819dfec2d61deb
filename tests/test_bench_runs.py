"""Benches run from the app (app/services/bench_runs.py): each `engram bench ...` in its own process
group, one at a time, stoppable, with its report and history kept in the data folder.

The real runs use the smallest bench (ingest at its tiny size: 5 files, about 10 s on 2 cores);
stand-in programs (a crash, a grandchild that ignores SIGTERM) check what a real bench cannot be
made to do on purpose.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from app.services.bench_runs import BENCHES, BenchBusy, BenchRuns, read_report
from ui.plots import bench_history_figure
from tests.helpers import open_engram, wait_for

SMALLEST = ("ingest", "tiny")


def gone(pid: int) -> bool:
    """No such process, or only its zombie (killed; its parent has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return all(gone(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()
               and _pgid(int(p.name)) == pgid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def stand_in(tmp_path: Path, code: str, **kwargs) -> BenchRuns:
    """A runner whose 'bench' is a small Python program (it ignores the bench's arguments)."""
    return BenchRuns(tmp_path / "bench", [], program=[sys.executable, "-c", code], **kwargs)


@pytest.mark.slow
def test_the_smallest_bench_runs_to_completion_in_its_own_process_and_is_kept() -> None:
    engram = open_engram()
    try:
        runs = engram.bench_runs
        run = runs.start(*SMALLEST)
        assert run.pid and run.pid != os.getpid()
        assert run.command[1:3] == ["-m", "app.cli"] and "--json-out" in run.command
        assert str(engram.settings.data_dir) in run.command  # the child measures this Engram's setup

        with pytest.raises(BenchBusy, match="still running"):
            runs.start("retrieval", "tiny")
        status = runs.status()
        assert status.state == "running" and status.expected_s and 0 <= status.fraction < 1
        wait_for(lambda: runs.status().log, timeout=60)  # the log is live, before it ends

        status = runs.wait(240)
        assert status.state == "done", (status.run.error if status.run else None, status.log)
        done = status.run
        assert done.exit_code == 0 and done.seconds > 0
        assert done.headline is not None and done.headline > 0  # ingest speed / raw embedding speed
        names = [f.name for f in done.figures]
        assert "ratio to raw" in names and "recall@10 at 1,000 vectors" in names
        assert Path(done.report_path).is_file()
        assert any("Ingested 5 files" in line for line in done.log_tail)
        assert gone(done.pid)
    finally:
        engram.close()

    # After a restart: the run is in the history, read from the data folder, and plotted.
    engram = open_engram()
    try:
        history = engram.bench_runs.history()
        assert [(r.bench, r.size, r.state) for r in history] == [("ingest", "tiny", "done")]
        assert history[0].headline == done.headline
        assert engram.bench_runs.latest("ingest").id == done.id
        assert engram.bench_runs.expected_seconds(*SMALLEST) == pytest.approx(done.seconds)
        assert engram.bench_runs.status().state == "idle"
        figure = bench_history_figure(history)
        assert figure is not None and figure.axes[0].lines[0].get_ydata()[0] == pytest.approx(done.headline)
        assert not list(engram.paths.bench.glob("runs/*.pkl"))
    finally:
        engram.close()


@pytest.mark.slow
def test_stop_ends_the_bench_and_the_state_says_stopped() -> None:
    engram = open_engram()
    try:
        runs = engram.bench_runs
        run = runs.start(*SMALLEST)
        wait_for(lambda: runs.status().log, timeout=60)  # it is under way (the corpus is written)
        started = time.monotonic()
        assert runs.stop() is True
        assert time.monotonic() - started < 15
        status = runs.status()
        assert status.state == "stopped" and status.run.id == run.id
        assert status.run.headline is None and status.run.figures == []
        assert gone(run.pid) and group_gone(run.pid)
        assert runs.stop() is False  # nothing runs any more
        assert [r.state for r in runs.history()] == ["stopped"]
        assert bench_history_figure(runs.history()) is None  # a stopped run measured nothing
        assert runs.latest("ingest") is None
    finally:
        engram.close()


def test_stop_also_ends_a_child_of_the_bench_that_ignores_sigterm(tmp_path) -> None:
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)'],"
            " stdout=subprocess.PIPE)\n"
            "child.stdout.readline()\n"
            "print('grandchild', child.pid, flush=True)\n"
            "time.sleep(600)\n")
    runs = stand_in(tmp_path, code, stop_grace_s=1.0)
    run = runs.start(*SMALLEST)
    line = wait_for(lambda: next((x for x in runs.status().log if x.startswith("grandchild")), None), timeout=30)
    grandchild = int(line.split()[1])
    assert os.getpgid(grandchild) == run.pid  # in the bench's process group
    assert runs.stop() is True
    assert gone(run.pid)
    wait_for(lambda: gone(grandchild), timeout=10)
    assert runs.status().state == "stopped"


def test_a_bench_that_crashes_fails_alone_and_the_next_one_starts(tmp_path) -> None:
    runs = stand_in(tmp_path, "import os; print('loading the model', flush=True); os.abort()")
    runs.start(*SMALLEST)
    status = runs.wait(30)
    assert status.state == "failed"
    assert "killed by SIGABRT" in status.run.error and "loading the model" in status.run.error
    assert [r.state for r in runs.history()] == ["failed"]

    quiet = stand_in(tmp_path, "print('done')")  # exits 0 but writes no report
    quiet.start(*SMALLEST)
    status = quiet.wait(30)
    assert status.state == "failed" and "without writing a report" in status.run.error
    assert len(quiet.history()) == 2


def test_unknown_benches_and_sizes_are_refused(tmp_path) -> None:
    runs = stand_in(tmp_path, "print('never')")
    with pytest.raises(ValueError, match="no bench named 'nope'"):
        runs.start("nope", "tiny")
    with pytest.raises(ValueError, match="no size 'huge'.*tiny, small, full"):
        runs.start("ingest", "huge")
    assert runs.status().state == "idle" and runs.history() == []


def test_a_learning_report_reads_as_its_headline_and_table(tmp_path) -> None:
    """The learning bench prints where it saved its report; the runner reads it from there."""
    from app.bench.learn_measures import Forgot, Learned
    from app.bench.learn_report import EngineRun, LearnBenchReport, save_report

    def run(label: str, kind: str, contains: float, drift: float) -> EngineRun:
        return EngineRun(label=label, kind=kind, before=Learned(contains=0.02, choice_accuracy=0.3),
                         after=Learned(contains=contains, exact_match=contains / 2, choice_accuracy=0.4),
                         forgot=Forgot(perplexity=14.0, perplexity_drift=drift, general_accuracy=1.0,
                                       forgetting_ratio=0.0, free_text_forgetting=0.1))
    report = LearnBenchReport(created_at="2026-11-23 12:00:00", size="tiny", seed=0, documents=8,
                              questions=44, general_questions=10, general_known=8, heldout_tokens=900,
                              model="SmolLM2-135M", device="cpu", torch_threads=2, cpu_count=2,
                              load_before=[0.1], runs=[run("base model", "base", 0.02, 0.0),
                                                       run("ttt", "weights", 0.386, 0.004)])
    save_report(report, tmp_path)
    code = f"print('ttt: learning 8 documents...'); print('report: {report.json_path}')"
    runs = stand_in(tmp_path, code)
    runs.start("learn", "tiny")
    status = runs.wait(30)
    assert status.state == "done", status.run.error
    assert status.run.report_path == report.json_path
    assert status.run.headline == pytest.approx(0.386)
    by_name = {f.name: f for f in status.run.figures}
    assert by_name["ttt: answers right / exact"].value == "0.386 / 0.193"
    assert by_name["ttt: forgot (written answers)"].target == "<= 0.05 MISS"
    assert by_name["ttt: perplexity drift"].value == "+0.40%"
    assert read_report(BENCHES["learn"], Path(report.json_path))[0] == pytest.approx(0.386)


def test_history_survives_an_unreadable_file(tmp_path) -> None:
    runs = stand_in(tmp_path, "import sys; sys.exit(2)")
    runs.start(*SMALLEST)
    assert runs.wait(30).state == "failed"
    (tmp_path / "bench" / "runs" / "broken.json").write_text("{not json")
    assert [r.state for r in runs.history()] == ["failed"]
    assert "exited with status 2" in runs.history()[0].error

