"""Benchmarks run from the desktop app: one at a time, each in its own process, kept as history.

A run is the command a person would type, ``python -m app.cli --data-dir D --config-dir C bench
<name> <size options>``, started in a new process group. Its printout is the live log; Stop ends
the whole group (the model's own child process too: SIGTERM, then SIGKILL after a grace period);
a bench that crashes ends only its own process, and the run says so. The report is the JSON the
command writes (``--json-out``; the learning bench saves its own ``learn-*.json`` in the data
folder's ``bench/`` and prints where).

Every run that ended (done, failed or stopped) is one JSON file in ``bench/runs/`` with its key
figures, its headline figure and the end of its log, so the history survives a restart. Reports
are read as plain JSON here, so looking at them loads no bench code (numpy, torch).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.bench.verdict import verdict

State = Literal["idle", "running", "done", "failed", "stopped"]
LOG_LINES = 400          # lines of a running bench kept for the live log
TAIL_LINES = 40          # lines kept with a finished run
STOP_GRACE_S = 5.0       # SIGTERM, then SIGKILL after this long
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "app.cli"]
REPORT_LINE = re.compile(r"^report:\s+(\S.*\.json)\s*$")


class BenchBusy(ValueError):
    """A bench is already running (one at a time)."""


class Figure(BaseModel):
    """One line of a report's table."""

    name: str
    value: str
    target: str = ""


class BenchRun(BaseModel):
    """One run of a bench from the app, as kept in the history."""

    id: str
    bench: str
    size: str
    command: list[str]
    pid: int | None = Field(None, description="The bench's process (the leader of its process group).")
    started_at: str = Field(description="UTC, as SQLite writes times (2026-01-31 09:15:00).")
    seconds: float = 0.0
    state: State = "running"
    exit_code: int | None = None
    error: str | None = None
    headline: float | None = Field(None, description="The bench's headline figure (see BenchSpec).")
    headline_label: str = ""
    figures: list[Figure] = Field(default_factory=list)
    report_path: str | None = None
    log_tail: list[str] = Field(default_factory=list)


class BenchStatus(BaseModel):
    """What the bench runner is doing now, for the live view."""

    state: State
    run: BenchRun | None = Field(None, description="The running run, else the last one of this session.")
    log: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0
    expected_s: float | None = Field(None, description="How long this bench and size took last time "
                                     "(or a typical time, measured on a 2-core CPU).")
    fraction: float | None = Field(None, description="elapsed / expected, below 1 while running.")


# --- what each bench is, how big, and how its report reads ---------------------------------------
def _num(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _ingest_figures(r: dict[str, Any]) -> list[Figure]:
    out = [Figure(name="files / chunks / errors", value=f"{r['files']} / {r['chunks']} / {r['errors']}"),
           Figure(name="end-to-end, chunks/s", value=f"{r['chunks_per_s']:.1f}"),
           Figure(name="raw embedding, chunks/s", value=f"{r['raw_embed_chunks_per_s']:.1f}"),
           Figure(name="ratio to raw", value=f"{r['ratio_to_raw']:.2f}",
                  target=f">= 0.8 {verdict(r['ratio_to_raw'] >= 0.8)}"),
           Figure(name="re-scan of the unchanged folder", value=f"{r['rescan_s']:.2f} s, {r['rescan_queued']} queued",
                  target=f"< 2 s, 0 queued {verdict(r['rescan_s'] < 2 and r['rescan_queued'] == 0)}"),
           Figure(name="query embedding", value=f"{r['query_embed_ms']:.1f} ms")]
    for s in r.get("search", []):
        out.append(Figure(name=f"search p50 at {s['vectors']:,} vectors, exact / {s['index_kind']}",
                          value=f"{s['exact_p50_ms']:.2f} / {s['approx_p50_ms']:.2f} ms"))
        out.append(Figure(name=f"recall@10 at {s['vectors']:,} vectors", value=f"{s['recall_at_10']:.3f}",
                          target=f">= 0.95 {verdict(s['recall_at_10'] >= 0.95)}"))
    return out


def _chat_figures(r: dict[str, Any]) -> list[Figure]:
    s, i, q = r["speed"], r["isolation"], r["retrieval"]
    out = [Figure(name="model", value=r["model"]),
           Figure(name="tokens/s, Engram vs raw llama-cpp-python",
                  value=f"{s['engram_tokens_per_s']:.1f} vs {s['raw_tokens_per_s']:.1f}, ratio {s['ratio']:.2f}",
                  target=f">= 0.9 {verdict(s['ratio'] >= 0.9)}"),
           Figure(name="time to first token, Engram vs raw",
                  value=f"{s['engram_first_token_ms']:.0f} vs {s['raw_first_token_ms']:.0f} ms"),
           Figure(name="model in its own process, ratio to raw", value=f"{i['ratio']:.2f}",
                  target=f">= 0.95 {verdict(i['ratio'] >= 0.95)}"),
           Figure(name=f"retrieval at {q['chunks']:,} chunks, p50 / p95",
                  value=f"{q['contribute_p50_ms']:.1f} / {q['contribute_p95_ms']:.1f} ms",
                  target=f"< 100 ms {verdict(q['contribute_p95_ms'] < 100)}")]
    for a in r["accuracy"]:
        arm = a.get("arm") or ("logit_bias" if a["logit_bias"] else "plain")
        bias = {"plain": "retrieval", "logit_bias": "logit bias on", "hidden": "hidden states"}.get(arm, arm)
        out.append(Figure(name=f"grounded answers ({bias}): exact / contained / in sources",
                          value=f"{a['exact_match']:.2f} / {a['answer_contained']:.2f} / "
                                f"{a['answer_in_sources']:.2f} ({a['questions']} questions)"))
        out.append(Figure(name=f"looped answers ({bias})", value=str(a.get("looped", 0)),
                          target=f"0 {verdict(a.get('looped', 0) == 0)}"))
    return out


def _chat_headline(r: dict[str, Any]) -> float | None:
    plain = [a for a in r.get("accuracy", []) if a.get("arm", "plain") == "plain" and not a.get("logit_bias")]
    return plain[0]["answer_contained"] if plain else None


def _retrieval_figures(r: dict[str, Any]) -> list[Figure]:
    out = [Figure(name=f"{f['kind']}, {f['mode']}",
                  value=f"R@1 {f['recall_at_1']:.3f} · R@5 {f['recall_at_5']:.3f} · MRR {f['mrr']:.3f} · "
                        f"{f['p50_ms']:.1f} ms ({f['queries']} queries)")
           for f in r.get("figures", [])]
    out += [Figure(name=t["name"], value=t["detail"], target=verdict(t["ok"])) for t in r.get("targets", [])]
    return out


def _retrieval_headline(r: dict[str, Any]) -> float | None:
    hybrid = [f for f in r.get("figures", []) if f["mode"] == "hybrid"]
    asked = sum(f["queries"] for f in hybrid)
    return sum(f["recall_at_5"] * f["queries"] for f in hybrid) / asked if asked else None


def _learn_figures(r: dict[str, Any]) -> list[Figure]:
    out = [Figure(name="set", value=f"{r.get('set', '')} '{r.get('size', '')}': {r.get('documents')} documents, "
                                    f"{r.get('questions')} questions, {r.get('model', '')} ({r.get('device', '')})")]
    for run in r.get("runs", []):
        after, forgot = run["after"], run["forgot"]
        out.append(Figure(name=f"{run['label']}: answers right / exact",
                          value=f"{_num(after.get('contains'))} / {_num(after.get('exact_match'))}"))
        if run["kind"] == "base":
            continue
        free = forgot.get("free_text_forgetting")
        out.append(Figure(name=f"{run['label']}: forgot (written answers)", value=_num(free),
                          target="" if free is None else f"<= 0.05 {verdict(free <= 0.05)}"))
        drift = forgot["perplexity_drift"]
        out.append(Figure(name=f"{run['label']}: perplexity drift", value=f"{100 * drift:+.2f}%",
                          target=f"<= 2% {verdict(drift <= 0.02)}"))
    return out


def _learn_headline(r: dict[str, Any]) -> float | None:
    learned = [run["after"].get("contains") for run in r.get("runs", []) if run["kind"] != "base"]
    learned = [v for v in learned if v is not None]
    return max(learned) if learned else None


@dataclass(frozen=True)
class BenchSpec:
    """A bench the app can run: its sizes (name -> command options) and how its report reads."""

    name: str
    title: str
    about: str
    sizes: dict[str, list[str]]
    typical_s: dict[str, float]
    headline_label: str
    headline: Callable[[dict[str, Any]], float | None]
    figures: Callable[[dict[str, Any]], list[Figure]]
    json_out: bool = True
    """False: the bench saves its own report and prints ``report: <path>`` (the learning bench)."""
    default_size: str = field(default="")

    @property
    def first_size(self) -> str:
        return self.default_size or next(iter(self.sizes))


BENCHES: dict[str, BenchSpec] = {s.name: s for s in [
    BenchSpec(
        name="ingest", title="Ingest",
        about="Reads generated files into the index the ordinary way: chunks/s against raw "
              "embedding of the same chunks, re-scan time, search latency and recall.",
        sizes={"tiny": ["--files", "5", "--vectors", "1000"],
               "small": ["--files", "200", "--vectors", "10000"],
               "full": ["--files", "2000", "--vectors", "10000,100000"]},
        typical_s={"tiny": 12, "small": 60, "full": 900},
        headline_label="ingest speed / raw embedding speed",
        headline=lambda r: r.get("ratio_to_raw"), figures=_ingest_figures),
    BenchSpec(
        name="retrieval", title="Retrieval",
        about="Searches Python's documentation and near-duplicate notes the way people type: "
              "recall and MRR of dense, keyword (BM25) and hybrid search per kind of query.",
        sizes={"tiny": ["--queries", "5"], "small": ["--queries", "20"], "full": ["--queries", "100"]},
        typical_s={"tiny": 30, "small": 45, "full": 120},
        headline_label="hybrid recall@5 (all kinds of query)",
        headline=_retrieval_headline, figures=_retrieval_figures),
    BenchSpec(
        name="chat", title="Chat",
        about="Asks questions about fictional documents: answer speed against raw llama-cpp-python, "
              "retrieval latency and how often the answer is right.",
        sizes={"tiny": ["--questions", "4", "--chunks", "1000", "--runs", "1"],
               "small": ["--questions", "30", "--chunks", "10000", "--runs", "3"],
               "full": ["--questions", "100", "--chunks", "10000", "--runs", "5"]},
        typical_s={"tiny": 35, "small": 180, "full": 600},
        headline_label="grounded answers containing the answer",
        headline=_chat_headline, figures=_chat_figures),
    BenchSpec(
        name="learn", title="Learning",
        about="Learns fictional documents into the model's weights (ttt) and asks about them: "
              "what it learned against what it forgot. A quarter of an hour even at the tiny size.",
        sizes={"tiny": ["--engine", "ttt", "--size", "tiny", "--no-speed"],
               "small": ["--engine", "ttt", "--size", "small", "--no-speed"],
               "small, every engine": ["--engine", "all", "--size", "small"]},
        typical_s={"tiny": 900, "small": 3600, "small, every engine": 10800},  # tiny: 15 min, 2 busy cores
        headline_label="answers right after learning (best engine)",
        headline=_learn_headline, figures=_learn_figures, json_out=False),
]}


def bench_spec(name: str, size: str) -> BenchSpec:
    spec = BENCHES.get(name)
    if spec is None:
        raise ValueError(f"There is no bench named {name!r}; pick one of {', '.join(BENCHES)}.")
    if size not in spec.sizes:
        raise ValueError(f"The {spec.title} bench has no size {size!r}; pick one of {', '.join(spec.sizes)}.")
    return spec


def read_report(spec: BenchSpec, path: Path) -> tuple[float | None, list[Figure]]:
    """The headline and the table of a report file; ValueError when it cannot be read."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return spec.headline(report), spec.figures(report)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the report {path} could not be read ({type(exc).__name__}: {exc})") from exc


# --- the runner ------------------------------------------------------------------------------------
class _Active:
    """The run in progress: its process, its log, whether Stop was asked for."""

    def __init__(self, run: BenchRun, proc: subprocess.Popen[str], report: Path | None) -> None:
        self.run = run
        self.proc = proc
        self.report = report
        self.started = time.monotonic()
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.stop_asked = False
        self.finished = threading.Event()


class BenchRuns:
    """Starts, watches, stops and remembers bench runs; one at a time per Engram."""

    def __init__(self, folder: Path, cli_options: list[str], program: list[str] | None = None,
                 stop_grace_s: float = STOP_GRACE_S) -> None:
        self.folder = folder                # the data folder's bench/
        self.runs_folder = folder / "runs"
        self.cli_options = cli_options      # --data-dir / --config-dir of this Engram
        self.program = program or CLI
        self.stop_grace_s = stop_grace_s
        self._lock = threading.Lock()
        self._active: _Active | None = None
        self._last: BenchRun | None = None

    # --- starting and stopping ----------------------------------------------------------------
    def start(self, bench: str, size: str) -> BenchRun:
        """Start ``bench`` at ``size`` in its own process; BenchBusy while another runs."""
        spec = bench_spec(bench, size)
        with self._lock:
            if self._active is not None:
                running = self._active.run
                raise BenchBusy(f"The {BENCHES[running.bench].title} bench is still running; stop it "
                                "or wait for it to finish before starting another.")
            self.runs_folder.mkdir(parents=True, exist_ok=True)
            now = datetime.now(timezone.utc)
            run_id = f"{now.strftime('%Y%m%d-%H%M%S-%f')}-{bench}"  # sorts by time
            report = self.runs_folder / f"{run_id}.report.json" if spec.json_out else None
            command = [*self.program, *self.cli_options, "bench", bench, *spec.sizes[size],
                       *(["--json-out", str(report)] if report else [])]
            env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                                    errors="replace", bufsize=1, cwd=ROOT, env=env,
                                    start_new_session=True)  # its own process group: Stop ends all of it
            run = BenchRun(id=run_id, bench=bench, size=size, command=command, pid=proc.pid,
                           started_at=now.strftime("%Y-%m-%d %H:%M:%S"), headline_label=spec.headline_label)
            active = self._active = _Active(run, proc, report)
        threading.Thread(target=self._watch, args=(active, spec), daemon=True,
                         name=f"bench-{bench}").start()
        return run

    def stop(self) -> bool:
        """Stop the running bench and its whole process group; returns once it is gone and the
        run is recorded as stopped (False when nothing was running)."""
        with self._lock:
            active = self._active
            if active is None:
                return False
            active.stop_asked = True
        _signal_group(active.proc.pid, signal.SIGTERM)
        if not active.finished.wait(self.stop_grace_s):
            _signal_group(active.proc.pid, signal.SIGKILL)
            active.finished.wait(self.stop_grace_s + 10)
        return True

    def close(self) -> None:
        """Stop a running bench (the app is closing)."""
        self.stop()

    def wait(self, timeout: float) -> BenchStatus:
        """Wait up to ``timeout`` seconds for the running bench to end; its status after."""
        with self._lock:
            active = self._active
        if active is not None:
            active.finished.wait(timeout)
        return self.status()

    # --- watching ---------------------------------------------------------------------------------
    def _watch(self, active: _Active, spec: BenchSpec) -> None:
        proc, run = active.proc, active.run
        report_path: Path | None = active.report
        printed: list[Path] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if active.log and _is_bar(line) and _is_bar(active.log[-1]):
                    active.log[-1] = line  # a progress bar redrawn in place stays one line
                else:
                    active.log.append(line)
                found = REPORT_LINE.match(line.strip())
                if found:
                    printed.append(Path(found.group(1)))

        reader = threading.Thread(target=read, daemon=True, name=f"bench-{run.bench}-log")
        reader.start()
        code = proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # whatever it left behind (the model's process)
        reader.join(10)
        if not spec.json_out and printed:
            report_path = printed[-1]
        run.seconds = time.monotonic() - active.started
        run.exit_code = code
        run.log_tail = list(active.log)[-TAIL_LINES:]
        if active.stop_asked:
            run.state = "stopped"
        elif code != 0:
            run.state = "failed"
            run.error = _failure(code, active.log)
        elif report_path is None or not report_path.is_file():
            run.state, run.error = "failed", "the bench finished without writing a report"
        else:
            try:
                run.headline, run.figures = read_report(spec, report_path)
                run.report_path = str(report_path)
                run.state = "done"
            except ValueError as exc:
                run.state, run.error = "failed", str(exc)
        try:
            self._save(run)
        except OSError as exc:
            run.error = (run.error + "; " if run.error else "") + f"not kept in the history: {exc}"
        with self._lock:
            self._last = run
            self._active = None
        active.finished.set()

    def _save(self, run: BenchRun) -> None:
        from store.atomic import write_atomic

        self.runs_folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.runs_folder / f"{run.id}.json", run.model_dump_json(indent=2).encode())

    # --- reading ------------------------------------------------------------------------------------
    def status(self) -> BenchStatus:
        with self._lock:
            active, last = self._active, self._last
            log = list(active.log) if active else []
        if active is None:
            return BenchStatus(state=last.state if last else "idle", run=last,
                               log=last.log_tail if last else [])
        run = active.run
        elapsed = time.monotonic() - active.started
        expected = self.expected_seconds(run.bench, run.size)
        fraction = min(elapsed / expected, 0.99) if expected else None
        return BenchStatus(state="running", run=run, log=log, elapsed_s=elapsed, expected_s=expected,
                           fraction=fraction)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._active is not None

    def history(self, bench: str | None = None) -> list[BenchRun]:
        """Every recorded run (of ``bench`` when given), oldest first; unreadable files skipped."""
        if not self.runs_folder.is_dir():
            return []
        runs = []
        for path in sorted(self.runs_folder.glob("*.json")):
            if path.name.endswith(".report.json"):
                continue
            try:
                run = BenchRun.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if bench is None or run.bench == bench:
                runs.append(run)
        return sorted(runs, key=lambda r: r.id)

    def latest(self, bench: str | None = None) -> BenchRun | None:
        """The newest finished run with a report (of ``bench`` when given)."""
        done = [r for r in self.history(bench) if r.state == "done"]
        return done[-1] if done else None

    def expected_seconds(self, bench: str, size: str) -> float | None:
        """How long the last finished run of this bench and size took, else the typical time."""
        done = [r for r in self.history(bench) if r.size == size and r.state == "done"]
        return done[-1].seconds if done else BENCHES[bench].typical_s.get(size)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the group's id is the leader's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def _is_bar(line: str) -> bool:
    """A progress bar's line (tqdm draws ``42%|████``, redrawn with carriage returns)."""
    return "%|" in line


def _failure(code: int, log: deque[str]) -> str:
    how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
           else f"exited with status {code}")
    last = next((line.strip() for line in reversed(log) if line.strip()), "")
    return f"The bench {how}" + (f": {last}" if last else " without a word") + "."

