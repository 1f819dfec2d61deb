"""``engram bench hmst`` (the controller part): answers and latency with the meta-controller on,
against every memory consulted for every question (``controller = off``).

A temporary Engram holds the first ``documents`` documents of a natural set; with ``learn`` it
also learns them into weights (``engines rag,ttt``), as the app does once weight learning is on.
Then the same questions go through ``engram.chat`` exactly as a person's would, each asked once
with the controller on and once off (the order alternates), greedy, with the answer's whole time:

- **document** questions: the set's questions about those documents (need retrieval or weights);
- **general** questions: everyday knowledge (the app's general questions; need no document);
- **small talk**: greetings and thanks, written here for the bench, not from the controller's list.

Right = an accepted answer appears in the answer (as ``engram bench learn`` scores); small talk is
timed, not scored. Flagged = the critic marked at least one sentence unsupported.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from app.bench.learn_sets import load_set
from app.bench.scoring import contains
from app.services.general_text import general_questions
from app.settings import LoadedSettings, Settings

Echo = Callable[[str], None]
SMALL_TALK = ["Hello!", "Thanks, that was helpful.", "Good morning!", "Thank you so much!", "Okay, bye.",
              "Great, thanks!", "Hi there", "Cheers!"]


class Asked(BaseModel):
    kind: str
    question: str
    accepted: list[str] = Field(default_factory=list)


class ArmFigures(BaseModel):
    accuracy: float | None = Field(description="Share right over scored questions (None: none scored).")
    latency_s: float = Field(description="Mean seconds per answer, the whole ask.")
    flagged: float = Field(description="Share of answers with a sentence the critic found unsupported.")
    torch_answers: int = Field(description="Answers the torch model (learned weights) gave.")


class KindFigures(BaseModel):
    kind: str
    questions: int
    on: ArmFigures
    off: ArmFigures


class ControllerBench(BaseModel):
    accuracy_on: float
    accuracy_off: float
    latency_on_s: float
    latency_off_s: float
    learned: bool = Field(description="The documents were learned into weights (engines rag,ttt).")
    documents: int
    by_kind: list[KindFigures]
    samples: list[dict] = Field(default_factory=list)


def questions(set_questions: list, documents: set[str], general: int, small_talk: int) -> list[Asked]:
    doc = [Asked(kind="document", question=q.question, accepted=q.accepted)
           for q in set_questions if q.doc_file in documents]
    known = [Asked(kind="general", question=q.question, accepted=[q.answer]) for q in general_questions()[:general]]
    return doc + known + [Asked(kind="small talk", question=s) for s in SMALL_TALK[:small_talk]]


def _ask(engram, asked: Asked) -> dict:
    started = time.perf_counter()
    message = engram.chat.answer(asked.question).message
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "right": any(contains(message.content, a) for a in asked.accepted)
            if asked.accepted else None, "flagged": bool(message.meta.get("unsupported")),
            "torch": message.meta.get("backend") == "torch", "answer": message.content[:200]}


def _arm(results: list[dict]) -> ArmFigures:
    scored = [r["right"] for r in results if r["right"] is not None]
    return ArmFigures(accuracy=round(sum(scored) / len(scored), 3) if scored else None,
                      latency_s=round(statistics.fmean(r["seconds"] for r in results), 3),
                      flagged=round(sum(r["flagged"] for r in results) / len(results), 3),
                      torch_answers=sum(r["torch"] for r in results))


def run_controller_bench(settings: Settings, size: str = "tiny", seed: int = 0, documents: int = 2,
                         general: int = 12, learn: bool = True, small_talk: int = len(SMALL_TALK),
                         echo: Echo = print) -> ControllerBench:
    """Ask every question with the controller on and off, in a temporary Engram."""
    from app.core import Engram

    chosen = load_set("natural", size, seed)
    files = {d.file_name for d in chosen.documents[:documents]}
    asked = questions(chosen.questions, files, general, small_talk)
    echo(f"Controller: {len(files)} documents of the natural set '{size}' (seed {seed})"
         f"{', learned into weights (rag,ttt)' if learn else ', retrieval only'}; "
         f"{len(asked)} questions, each with the controller on and off")
    with tempfile.TemporaryDirectory(prefix="engram-controller-bench-") as tmp:
        root = Path(tmp)
        local = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop",
                                            "engines": ["rag", "ttt"] if learn else ["rag"],
                                            "temperature": 0.0})
        engram = Engram(LoadedSettings(settings=local, sources={}, config_file=root / "none.toml"))
        try:
            folder = root / "documents"
            chosen.model_copy(update={"documents": [d for d in chosen.documents if d.file_name in files]}).write(folder)
            engram.ingest([folder])
            started = time.perf_counter()
            engram.run_pending(learn=learn)
            if learn:
                echo(f"  learned {len(files)} documents into weights in {time.perf_counter() - started:.0f} s")
            results: dict[str, list[tuple[Asked, dict]]] = {"on": [], "off": []}
            for n, q in enumerate(asked):
                order = ("rules", "off") if n % 2 == 0 else ("off", "rules")
                for policy in order:
                    engram.settings.controller = policy  # type: ignore[assignment]
                    results["on" if policy == "rules" else "off"].append((q, _ask(engram, q)))
                if (n + 1) % 5 == 0 or n + 1 == len(asked):
                    echo(f"  {n + 1}/{len(asked)} questions")
        finally:
            engram.close()
    return _figures(results, learn, len(files))


def _figures(results: dict[str, list[tuple[Asked, dict]]], learn: bool, documents: int) -> ControllerBench:
    kinds = list(dict.fromkeys(q.kind for q, _ in results["on"]))
    by_kind = [KindFigures(kind=k, questions=sum(q.kind == k for q, _ in results["on"]),
                           on=_arm([r for q, r in results["on"] if q.kind == k]),
                           off=_arm([r for q, r in results["off"] if q.kind == k])) for k in kinds]
    on, off = _arm([r for _, r in results["on"]]), _arm([r for _, r in results["off"]])
    samples = [{"kind": q.kind, "question": q.question, "on": a["answer"], "off": b["answer"]}
               for (q, a), (_, b) in list(zip(results["on"], results["off"]))[::4]]
    return ControllerBench(accuracy_on=on.accuracy or 0.0, accuracy_off=off.accuracy or 0.0,
                           latency_on_s=on.latency_s, latency_off_s=off.latency_s, learned=learn,
                           documents=documents, by_kind=by_kind, samples=samples)


def print_controller(report: ControllerBench, echo: Echo) -> None:
    echo(f"{'kind':<12} {'n':>3}  {'right on/off':>13}  {'seconds on/off':>15}  {'flagged on/off':>15}  torch on/off")
    for k in report.by_kind:
        right = "-" if k.on.accuracy is None else f"{k.on.accuracy:.3f}/{k.off.accuracy:.3f}"
        echo(f"{k.kind:<12} {k.questions:>3}  {right:>13}  {k.on.latency_s:>7.2f}/{k.off.latency_s:<7.2f}  "
             f"{k.on.flagged:>7.3f}/{k.off.flagged:<7.3f}  {k.on.torch_answers}/{k.off.torch_answers}")
    verdict = ("PASS" if report.accuracy_on >= report.accuracy_off and report.latency_on_s < report.latency_off_s
               else "MISS")
    echo(f"controller on: accuracy {report.accuracy_on:.3f} (off {report.accuracy_off:.3f}), mean latency "
         f"{report.latency_on_s:.2f} s (off {report.latency_off_s:.2f} s): no worse and faster: {verdict}")
