"""The ``engram`` command line, run as a user would (a real subprocess for the entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from store.activity import last_sleep
from store.database import Database


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_watch_ingest_status_search_flow(tmp_path, isolated_dirs):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
    (folder / "bad.txt").write_bytes(b"\x00\x01\x02binary")
    out = invoke("watch", "add", str(folder))
    assert "2 documents, 2 queued" in out
    assert str(folder) in invoke("watch", "list")
    out = invoke("ingest", str(folder))
    assert "1 indexed" in out and "1 errors" in out
    out = invoke("status")
    assert "2 (1 indexed, 1 errors)" in out and "bad.txt" in out
    out = invoke("search", "when does the ferry leave", "-k", "1")
    assert "ferry.txt" in out and "line 1" in out and "06:40" in out
    out = invoke("watch", "remove", str(folder))
    assert "forgot 2 documents" in out
    assert "No results" in invoke("search", "ferry")


def test_ingest_embeds_the_sentence_windows_the_search_reranks_by(tmp_path, isolated_dirs):
    """A person who only uses the command line gets the ranking the app gives once idle."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40. It docks at pier nine.\n")
    (folder / "bus.txt").write_text("The night bus stops at the old mill. It runs on Fridays only.\n")
    out = invoke("ingest", "--no-windows", str(folder))
    assert "2 indexed" in out and "Sentence windows" not in out

    def windowless() -> int:
        db = Database(isolated_dirs["data"] / "store.db")
        try:
            return int(db.scalar("SELECT count(*) FROM chunks WHERE id NOT IN (SELECT chunk_id FROM chunk_windows)"))
        finally:
            db.close()

    assert windowless() == 2  # left to the app's idle time
    out = invoke("ingest", str(folder))  # nothing new to index: the windows are still embedded
    assert "0 indexed" in out and "Sentence windows embedded for 2 chunk(s)" in out
    assert windowless() == 0
    assert "Sentence windows" not in invoke("ingest", str(folder))  # nothing left to embed


def test_errors_are_messages_not_tracebacks(tmp_path):
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "no such file or folder" in result.output
    result = CliRunner().invoke(cli, ["watch", "remove", str(tmp_path)])
    assert result.exit_code != 0 and "not a watched folder" in result.output


def test_console_script_entry_point(tmp_path, isolated_dirs):
    proc = subprocess.run([sys.executable, "-m", "app.cli", "--data-dir", str(tmp_path / "d"), "status"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"Data folder: {tmp_path / 'd'}" in proc.stdout
    assert Path(tmp_path / "d" / "store.db").exists()


def test_sleep_reports_each_enabled_engine_without_loading_what_it_does_not_need(isolated_dirs):
    out = invoke("--engines", "rag,ttt", "sleep", "--seconds", "5")
    assert "rag: unchanged in 0.0 s\n" in out  # retrieval has nothing to consolidate
    assert "ttt: unchanged in 0.0 s (reason nothing learned yet)" in out
    assert not any((isolated_dirs["data"] / "cache").glob("torch*"))  # no model was converted or loaded
    db = Database(isolated_dirs["data"] / "store.db")
    last = last_sleep(db)  # recorded: the app's idle sleep counts learning from this one on
    assert last is not None and last.reason == "manual" and not last.interrupted
    assert [r["engine"] for r in last.reports] == ["memory", "rag", "ttt"]
    assert last.checkpoints == [] and "before-sleep" not in out  # nothing learned: nothing to keep first
    db.close()
    assert "(by hand, done, nothing changed). 0 learned since the last whole sleep." in invoke("status")


def test_bench_learn_refuses_a_mistyped_arm_or_size_before_loading_a_model(isolated_dirs):
    """'--arms 1;3' once read as no arms given, which runs all six (hours of training)."""
    quick = ["--size", "3", "--no-speed", "--no-free-text"]
    for args, said in ((["--ablations", "--arms", "1;3", *quick], "give arm numbers separated by commas"),
                       (["--ablations", "--arms", "1,²", *quick], "give arm numbers"),
                       (["--size", "huge"], "'huge' is not a set"),
                       (["--size", "2"], "at least 3 documents")):
        result = CliRunner().invoke(cli, ["bench", "learn", *args])
        assert result.exit_code == 2 and said in result.output, result.output
    out_of_range = CliRunner().invoke(cli, ["bench", "learn", "--ablations", "--arms", "7", *quick])
    assert out_of_range.exit_code == 1 and "numbered 1-6" in out_of_range.output
    for args, said in ((["--engine", "cls,bogus"], "unknown stream arm(s) bogus"),
                       (["--engine", "cls", "--stream-documents", "2", "--stream", "3"], "1 to 2 days")):
        stream = CliRunner().invoke(cli, ["bench", "learn", "--stream", "2", "--size", "tiny", *args])
        assert stream.exit_code == 1 and said in stream.output, stream.output
    assert not any((isolated_dirs["data"] / "cache").glob("torch*"))  # refused before a model loads


def test_sleep_summary_names_each_try_the_probe_rolled_back() -> None:
    """A retried sleep once showed only in the progress line: the summary printed plain numbers."""
    from app.cli.weights import _sleep_summary
    from engines.base import ConsolidateReport

    report = ConsolidateReport(engine="ttt", seconds=12.34, changed=True, details={
        "steps": 18, "probe_after": 22.69, "retried": ["7216 neurons open rolled back (22.580 -> 23.650)"]})
    assert _sleep_summary(report) == [
        "ttt: changed in 12.3 s (steps 18, probe_after 22.690)",
        "  retried: 7216 neurons open rolled back (22.580 -> 23.650)"]
    kept = report.model_copy(update={"details": {"steps": 18, "retried": []}})
    assert _sleep_summary(kept) == ["ttt: changed in 12.3 s (steps 18)"]
