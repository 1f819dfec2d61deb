"""``engram bench learn``: what an engine learns from documents, and what it forgets doing so.

The documents are fictional (``app.bench.learn_sets``: natural prose by default, the hand-written
held-out set, or the templated regression set): invented people, places and things no model can
know. Every engine runs through the same steps, in a temporary store:

1. the documents are ingested (chunked, embedded, indexed) as the app would;
2. the engine learns each document, in order, through its ``learn`` (timed; tokens counted);
3. each question is asked the way chat asks it: the engine's ``contribute`` gives passages
   and bullets (retrieval: open book) or names learned weights (closed book), and the prompt is
   built by the chat's own ``build_prompt``.

What is measured is in ``app.bench.learn_measures`` (the headline: the greedy free-text answer,
then choice accuracy; forgetting on general questions in free text and by likelihood, and
perplexity drift); the report in ``app.bench.learn_report``. Rows: the untouched base model, then
each engine (``--engine all``: every registered one that learns documents, and ``rag+ttt``:
retrieval and learned weights together; with ``--ablations`` the TTT grid).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from app.bench.fiction import generate
from app.bench.learn_measures import (
    Baseline,
    as_chat,
    Forgot,
    Learned,
    baseline,
    chat_messages,
    chat_prompt,
    forgot,
    own_questions,
    Rehearsed,
    score_questions,
    interleaved,
    score_rehearsed,
)
from app.bench.learn_runtimes import OnChatRuntime, on_chat_runtime
from app.bench.learn_report import (
    COMBINED,
    EngineRun,
    LearnBenchReport,
    SpeedRun,
    latest_learn_report,  # noqa: F401  (re-exported: the UI and tests find reports here)
    print_report,
    row,
    save_report,
)
from app.bench.learn_sets import BenchSet, SetName, load_set
from app.bench.model_eval import perplexity
from app.services.general_text import general_questions, heldout_questions, heldout_text
from app.settings import LoadedSettings, Settings
from engines.base import Budget, DocumentInput, Engine, Neocortex, Query, contribute_all

Echo = Callable[[str], None]
NO_REMEDIES = {"rehearsal_qa": False, "rehearsal_paraphrase": False, "replay_tokens": 0,
               "replay_questions": 0}
ABLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("ttt gated +rehearsal/replay", {"mode": "dual", "gate": True}),
    ("ttt gated", {"mode": "dual", "gate": True, **NO_REMEDIES}),
    ("ttt ungated +rehearsal/replay", {"mode": "dual", "gate": False}),
    ("ttt ungated", {"mode": "dual", "gate": False, **NO_REMEDIES}),
    ("full finetune +rehearsal/replay", {"mode": "full"}),
    ("full finetune", {"mode": "full", **NO_REMEDIES}),
]
SPEED_TOKENS = 2000
REHEARSED = 24  # of the learner's own training questions asked on each closed-book row
CLS_ROUTERS = ("keys", "softmax", "kwta")  # `--cls-router`: one cls run each


class LearnBench:
    """One bench run: a temporary Engram holding the set's documents, one shared model."""

    def __init__(self, settings: Settings, documents: BenchSet, cortex: Neocortex, root: Path,
                 free_text: bool, echo: Echo, meta_train_seconds: float = 300.0,
                 cls_routers: list[str] | None = None) -> None:
        from app.core import Engram

        self.settings = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop"})
        self.set = documents
        self.cortex = cortex
        self.free_text = free_text
        self.echo = echo
        self.meta_train_seconds = meta_train_seconds
        self.cls_routers = cls_routers or []
        self.engram = Engram(LoadedSettings(settings=self.settings, sources={}, config_file=root / "none.toml"))
        self.engram.adopt_neocortex(cortex)  # type: ignore[arg-type]
        folder = root / "documents"
        documents.write(folder)
        self.engram.ingest([folder])
        self.engram.run_pending()
        self.engram.fill_windows()  # as the app's idle worker does after ingestion
        self.documents = _stored(self.engram, [d.file_name for d in documents.documents])
        self.questions = documents.questions

    def close(self) -> None:
        self.engram.close()

    def prompts(self, engines: list[Engine]) -> list[str]:
        out = []
        for q in self.questions:
            contributions = contribute_all(engines, Query(text=q.question))
            out.append(chat_prompt(q.question, contributions, self.cortex, self.settings))
        return out

    def baseline(self) -> tuple[Baseline, EngineRun]:
        self.echo("Measuring the untouched base model...")
        learned = score_questions(self.cortex, self.prompts([]), self.questions, self.free_text)
        base = baseline(self.cortex, self.settings, learned, self.free_text)
        run = EngineRun(label="base model (closed book)", kind="base", before=learned, after=learned,
                        forgot=Forgot.nothing(base.perplexity))
        return base, run

    def build(self, name: str, overrides: dict[str, Any]) -> Engine:
        from engines.registry import build_engine

        config = getattr(self.settings, name, None)
        if config is not None and overrides:
            config = config.model_copy(update=overrides)
        engine = build_engine(name, self.engram.engine_context, config)
        if engine.writes_weights:
            engine.autosave = False  # type: ignore[attr-defined]
        if hasattr(engine, "meta_train"):
            self.meta_train(engine)
        return engine

    def meta_train(self, engine: Any) -> None:
        """A hypernetwork engine (d2l) is meta-trained first, within ``meta_train_seconds``, on
        documents of the same generator with another seed (never the test documents); the
        trained weights stay in the bench's data folder for its later runs."""
        engine.hypernetwork()
        if engine.trained_steps:
            return
        self.meta_train_more(engine, self.meta_train_seconds)

    def meta_train_more(self, engine: Any, seconds: float) -> dict[str, Any]:
        """``seconds`` more meta-training (it resumes from the last step) on documents of the
        same generator with another seed, never the test documents."""
        from engines.d2l.training import with_questions

        kind = "templated" if self.set.name == "templated" else "natural"
        extra = load_set(kind, "default", (self.set.seed or 0) + 1000)
        asked: dict[str, list[tuple[str, str]]] = {}
        for q in extra.questions:
            asked.setdefault(q.doc_file, []).append((q.question, q.answer))
        documents = [with_questions(d.text, asked.get(d.file_name, [])) for d in extra.documents]
        self.echo(f"{engine.name}: meta-training the hypernetwork for {seconds:.0f} s on "
                  f"{len(documents)} {kind} documents of seed {extra.seed}...")
        found = engine.meta_train(documents, Budget(seconds=seconds), f"bench: {kind} set seed {extra.seed}")
        self.echo(f"  {found['steps']} steps in {found['seconds']:.0f} s, last distillation loss "
                  f"{found['loss_last']}")
        return found

    def learn_all(self, engine: Engine, label: str) -> tuple[float, int, list[dict[str, Any]]]:
        seconds, tokens, reports = 0.0, 0, []
        started = time.perf_counter()
        for n, document in enumerate(self.documents, 1):
            report = engine.learn(document)
            seconds += report.seconds
            tokens += report.tokens
            reports.append(report.details)
            if n % max(1, len(self.documents) // 6) == 0 or n == len(self.documents):
                loss = report.details.get("loss_last_pass")
                self.echo(f"  {label}: {n}/{len(self.documents)} documents, "
                          f"{time.perf_counter() - started:.0f} s" + (f", last loss {loss:.3f}" if loss else ""))
        return seconds, tokens, reports

    def run(self, name: str, label: str, overrides: dict[str, Any], base: Baseline,
            sleep: float = 0.0) -> list[EngineRun]:
        """The engines' run after learning every document and, with ``sleep`` seconds, another
        after they consolidated (weight-writing engines only). ``name`` may join engines with
        "+" (``rag+ttt``): they learn the same documents and answer together, as in the app."""
        engines = [self.build(n, overrides if n == name.split(COMBINED)[-1] else {})
                   for n in name.split(COMBINED)]
        writers = [e for e in engines if e.writes_weights]
        try:
            self.echo(f"{label}: learning {len(self.documents)} documents...")
            seconds, tokens, details = 0.0, 0, {}
            for engine in engines:
                spent, read, reports = self.learn_all(engine, f"{label} ({engine.name})")
                seconds, tokens = seconds + spent, max(tokens, read)
                if engine.writes_weights or len(engines) == 1:
                    details = {**_summary(reports), "stats": engine.stats()}
                    config = getattr(engine, "config", None)  # every setting the run used
                    if isinstance(config, BaseModel):
                        details["config"] = config.model_dump(mode="json")
            run = EngineRun(label=label, engine=name, kind="weights" if writers else "context",
                            overrides=overrides, before=base.learned, after=self.scores(engines),
                            forgot=self.forgetting(writers, base), learn_seconds=seconds, document_tokens=tokens,
                            tokens_per_second=tokens / seconds if seconds > 0 else 0.0, details=details)
            runs = [run, *self.closed_book(run, engines, writers)]
            on_chat = self.on_chat_runtime(engines)
            if on_chat is not None:
                run.details["chat_runtime"] = on_chat.model_dump()
                self.echo(f"{label} on {on_chat.runtime} with the adapters: contains {on_chat.contains:.3f}, exact "
                          f"{on_chat.exact_match:.3f}, {on_chat.loops} looped ({on_chat.with_adapters} questions given "
                          f"adapters); seconds per answer {on_chat.seconds_chat:.2f} against "
                          f"{on_chat.seconds_torch:.2f} on the torch model ({on_chat.timed} answers each)")
            for done in runs:
                self.echo(row(done))
            if sleep > 0 and writers:
                self.echo(f"{label}: sleeping (consolidating) for at most {sleep:.0f} s...")
                slept = [w.consolidate(Budget(seconds=sleep)) for w in writers]
                for router in self.routers_after_sleep(writers):
                    with routed_by(writers, router):
                        rested = run.model_copy(update={
                            "label": f"{label} +sleep" + (f" router={router}" if router else ""),
                            "after": self.scores(engines), "forgot": self.forgetting(writers, base),
                            "overrides": {**overrides, **({"router": router} if router else {})},
                            "details": {**details, "sleep_seconds": sum(r.seconds for r in slept),
                                        "sleep": slept[-1].details, "stats": writers[-1].stats()}})
                        for done in (rested, *self.closed_book(rested, engines, writers)):
                            runs.append(done)
                            self.echo(row(done))
        finally:
            for engine in engines:
                _release(engine)
        return runs

    def routers_after_sleep(self, writers: list[Engine]) -> list[str | None]:
        """``--cls-router``: the slept cls engine is asked once per router (the same experts and
        consolidated adapter, so only the routing differs); else once as it is (None)."""
        if self.cls_routers and any(w.name == "cls" for w in writers):
            return list(self.cls_routers)
        return [None]

    def on_chat_runtime(self, engines: list[Engine]) -> OnChatRuntime | None:
        """Engines whose learned state also comes as adapter files (d2l): the questions answered
        on the chat runtime with those adapters, as chat answers them when it can."""
        if not self.free_text:
            return None
        if not any(e.writes_weights for e in engines):
            return None
        contributions = [as_chat(q.question, contribute_all(engines, Query(text=q.question)))
                         for q in self.questions]
        chat = self.engram.chat.runtime.get()
        answering = [self.engram.chat.answering_runtime(cs) for cs in contributions]
        if not any(uses for _, _, uses in answering) or any(learned and runtime is not chat
                                                           for runtime, learned, _ in answering):
            return None  # chat answers these engines' learned state on the torch model
        messages = [chat_messages(q.question, cs, self.cortex, self.settings)
                    for q, cs in zip(self.questions, contributions)]
        return on_chat_runtime(chat, self.cortex, self.questions, messages, contributions)

    def closed_book(self, run: EngineRun, engines: list[Engine], writers: list[Engine]) -> list[EngineRun]:
        """For engines answering together (rag+ttt), the same learned weights asked without the
        others: what the weights hold on their own, from the same training. Every closed-book
        row (``run`` itself for weights alone) also asks the learner's own training questions."""
        if not writers:
            return []
        own = self.rehearsed(writers) if self.free_text else None
        if len(engines) == 1:
            run.rehearsed = own
            return []
        name = COMBINED.join(w.name for w in writers)
        return [run.model_copy(update={"label": f"{name} closed book, weights of {run.label}", "engine": name,
                                       "after": self.scores(writers), "rehearsed": own})]

    def rehearsed(self, writers: list[Engine]) -> Rehearsed | None:
        """The weights asked up to ``REHEARSED`` of the pairs they were trained on (engines that
        keep them: ttt and cls), closed-book and routed as chat routes them; None where none are kept."""
        asked = interleaved([own_questions(w.rehearsed(4 * REHEARSED), REHEARSED) for w in writers], REHEARSED)
        if not asked:
            return None
        prompts = [chat_prompt(q, contribute_all(writers, Query(text=q)), self.cortex, self.settings)
                   for q, _ in asked]
        return score_rehearsed(self.cortex, prompts, asked)

    def scores(self, engines: list[Engine]) -> Learned:
        """The set's questions, asked as chat asks them with ``engines`` in place."""
        return score_questions(self.cortex, self.prompts(engines), self.questions, self.free_text)

    def forgetting(self, writers: list[Engine], base: Baseline) -> Forgot:
        """What the weights forgot, as answers see them; where the engine routes its learned
        weights by the question, also with them applied to every answer (what training did)."""
        if not writers:
            return Forgot.nothing(base.perplexity)  # the weights are the base model's
        found = forgot(self.cortex, self.settings, base)
        if getattr(self.cortex, "router", None) is not None:
            found.unrouted = forgot(self.cortex, self.settings, base, routed=False)
        return found

    def speed(self, name: str, label: str) -> SpeedRun:
        """Learn time of one ~2,000-token document (fictional facts not in the question set)."""
        from engines.base import DocumentInput

        text = speed_document(self.cortex, self.set.seed or 0)
        engine = self.build(name, {})
        try:
            report = engine.learn(DocumentInput(document_id=10**9, path="speed.txt", chunks=[text]))
        finally:
            _release(engine)
        return SpeedRun(label=label, tokens=report.tokens, seconds=report.seconds,
                        tokens_per_second=report.tokens / report.seconds if report.seconds else 0.0,
                        trained_tokens=int(report.details.get("trained_tokens", 0)))


@contextmanager
def routed_by(writers: list[Engine], router: str | None) -> Iterator[None]:
    """The cls engine among ``writers`` answering with ``router`` (keys, softmax, kwta) meanwhile."""
    found = [w for w in writers if w.name == "cls"] if router else []
    saved = [w.config for w in found]  # type: ignore[attr-defined]
    for w in found:
        w.config = w.config.model_copy(update={"router": router})  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for w, config in zip(found, saved):
            w.config = config  # type: ignore[attr-defined]


def _stored(engram: Any, file_names: list[str]) -> list[DocumentInput]:
    """The indexed documents with these file names, in order, as engines are handed them."""
    from app.jobs.learning import document_input
    from store.documents import DocumentStore

    ids = {Path(path).name: doc_id for path, doc_id in DocumentStore(engram.db).ids_by_path().items()}
    out = []
    for name in file_names:
        found = document_input(engram.db, ids[name]) if name in ids else None
        if found is None:
            raise RuntimeError(f"{name} was not indexed; the bench cannot ask about it")
        out.append(found[0])
    return out


def _release(engine: Engine) -> None:
    for method in ("reset", "close"):
        if hasattr(engine, method):
            getattr(engine, method)()


def _summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [r[key] for r in reports if isinstance(r.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    return {"mean_loss_first_pass": mean("loss_first_pass"), "mean_loss_last_pass": mean("loss_last_pass"),
            "mean_neurons_changed": mean("neurons_changed"), "mean_steps": mean("steps"),
            "trained_tokens": sum(int(r.get("trained_tokens", 0)) for r in reports)}


def speed_document(cortex: Neocortex, seed: int) -> str:
    """About SPEED_TOKENS tokens of fictional prose from a set the bench does not ask about."""
    extra = generate("large", seed + 1000)
    parts: list[str] = []
    count = 0
    for doc in extra.documents:
        parts.append(doc.text)
        count += len(cortex.tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if count >= SPEED_TOKENS:
            break
    return "\n".join(parts)


def _variants(engines: list[str], ablations: bool, arms: list[int] | None = None,
              cls_routers: list[str] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    from engines.registry import engine_class, registered

    known = registered()
    # "all": retrieval (the open-book baseline), every engine that learns documents, and each
    # weight-writing one together with retrieval (as the app runs them with `engines rag,ttt`).
    # Engines that learn from feedback only (ACE) have nothing to learn from a folder of documents.
    if engines == ["all"]:
        learners = [n for n in known if n != "rag" and engine_class(n).learns_documents]
        names = ["rag", *learners, *(f"rag{COMBINED}{n}" for n in learners if engine_class(n).writes_weights)]
    else:
        names = engines
    unknown = sorted({part for n in names for part in n.split(COMBINED) if part not in known})
    if unknown:
        raise ValueError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(known)} "
                         f"(join two with '{COMBINED}' to run them together, e.g. rag{COMBINED}ttt)")
    out = []
    for name in names:
        if name == "ttt" and ablations:
            chosen = [ABLATIONS[i - 1] for i in arms] if arms else ABLATIONS
            out += [(name, label, overrides) for label, overrides in chosen]
        elif name.split(COMBINED)[-1] == "cls" and cls_routers:  # a gate asked for is trained in its sleep
            gates = [r for r in cls_routers if r != "keys"]
            out.append((name, name, {"router": gates[0] if gates else "keys"}))
        else:
            out.append((name, name, {}))
    return out


def run_learn_bench(settings: Settings, engines: list[str], set_name: SetName = "natural",
                    size: str | int = "small", seed: int = 0, ablations: bool = False,
                    free_text: bool = True, speed: bool = True, echo: Echo = print,
                    cortex: Neocortex | None = None, threads: int | None = None,
                    arms: list[int] | None = None, sleep: float = 0.0,
                    meta_train_seconds: float = 300.0, cls_routers: list[str] | None = None) -> LearnBenchReport:
    """Run the bench and save its report; ``cortex``: an already loaded model the caller closes.
    ``sleep``: seconds each weight-writing run then consolidates, measured again after.
    Without ``free_text`` the report is a diagnostic (``app.bench.learn_report``), not a result.

    ``meta_train_seconds``: how long a hypernetwork engine (d2l) meta-trains before its run.
    ``cls_routers``: the cls run learns and sleeps once (its sleep training the gate), then is
    measured once per router (keys, softmax, kwta).

    ``threads`` sets torch's CPU threads: on a machine other work keeps busy, one thread is
    several times faster than two that wait on each other (OpenMP barriers)."""
    unknown = sorted(set(cls_routers or []) - set(CLS_ROUTERS))
    if unknown:
        raise ValueError(f"unknown cls router(s) {', '.join(unknown)}; known: {', '.join(CLS_ROUTERS)}")
    if cls_routers and sleep <= 0:
        raise ValueError("--cls-router needs --sleep: the learned gates are trained in sleep (until then keys route)")
    if threads:
        torch.set_num_threads(threads)
    from app.paths import DataPaths
    from app.runtimes.neocortex import load_neocortex
    from engines.registry import engine_class

    started = time.perf_counter()
    if arms and any(not 1 <= i <= len(ABLATIONS) for i in arms):
        raise ValueError(f"ablation arms are numbered 1-{len(ABLATIONS)}")
    variants = _variants(engines, ablations, arms, cls_routers)
    paths = DataPaths(root=settings.data_dir).ensure()
    documents = load_set(set_name, size, seed)
    echo(f"{set_name.capitalize()} set '{documents.size}' (seed {documents.seed}): {len(documents.documents)} "
         f"documents, {len(documents.questions)} questions")
    if not free_text:
        echo("free text skipped: this run is a DIAGNOSTIC, not a result (answers are what people read)")
    owned = cortex is None
    if cortex is None:
        cortex = load_neocortex(settings.neocortex_model, settings.device, paths.cache)
    report = LearnBenchReport(
        created_at=datetime.now().isoformat(timespec="seconds"), set=set_name, size=documents.size,
        seed=documents.seed, free_text=free_text, documents=len(documents.documents),
        questions=len(documents.questions), general_questions=len(general_questions()), general_known=0,
        heldout_tokens=0, heldout_questions=len(heldout_questions()),
        model=cortex.model_name, device=cortex.device, torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count() or 0, load_before=_load())
    try:
        with tempfile.TemporaryDirectory(prefix="engram-learn-bench-") as tmp:
            bench = LearnBench(settings, documents, cortex, Path(tmp), free_text, echo, meta_train_seconds,
                               cls_routers)
            try:
                base, base_run = bench.baseline()
                report.general_known = len(base.known)
                report.general_known_free_text = None if base.known_free_text is None else len(base.known_free_text)
                report.heldout_known = len(base.known_heldout)
                report.heldout_tokens = perplexity(cortex, heldout_text())[1]
                report.runs.append(base_run)
                echo(row(base_run))
                for name, label, overrides in variants:
                    report.runs += bench.run(name, label, overrides, base, sleep)
                if speed:
                    for name in dict.fromkeys(n for n, _, _ in variants if COMBINED not in n):
                        if engine_class(name).writes_weights:
                            echo(f"{name}: learning one {SPEED_TOKENS}-token document...")
                            report.speed.append(bench.speed(name, name))
            finally:
                bench.close()
    finally:
        if owned:
            cortex.close()  # type: ignore[attr-defined]
    report.load_after = _load()
    report.seconds = time.perf_counter() - started
    report.notes = _notes(report)
    save_report(report, paths.bench)
    print_report(report, echo)
    return report


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _notes(r: LearnBenchReport) -> list[str]:
    return [
        "headline: the greedy free-text answer, decoded as the runtimes decode and cut where the "
        "loop guard cuts (contains: an accepted answer appears in it as whole words; exact: it is "
        "one, or a short sentence ending in one; loops: answers that began repeating themselves); "
        "choice: the right answer's log-likelihood beats three same-kind distractors (chance 0.25); "
        "questions are asked as chat asks them (closed book unless the engine contributes passages)",
        f"forgot: free text on the {r.general_known_free_text} general questions the base model "
        f"answers right in free text; choice on the {r.general_known} of {r.general_questions} it "
        f"ranks right; perplexity on {r.heldout_tokens} held-out tokens of general English",
        f"machine: {r.cpu_count} cores, {r.torch_threads} torch threads, load average "
        f"{r.load_before} before and {r.load_after} after (other work shares the cores)",
    ]
