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

**The bandit** (``controller = bandit``, ``ControllerBench.bandit``): the questions of each kind
are split alternately into a training and a held-out half. First, before anything else is asked,
the bandit answers the training half ``epochs`` times, exploring (``explore``); after each answer
the bench gives the feedback a person would (thumbs up when an accepted answer is in it, down when
not; small talk gets none, so its reward is self-evaluated) and the worker learns the reward. Then,
in the loop above, each held-out question is also asked with the bandit acting greedily (no
exploration, nothing more learned), and its accuracy and latency are compared with the rules' and
always-all's answers to the same held-out questions. The known answers are never given for the
held-out half.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from app.bench.follow_ups import follow_ups
from app.bench.hallucination import judge
from app.bench.learn_sets import BenchSet, load_set
from app.bench.scoring import contains
from app.services.general_text import general_questions
from app.settings import LoadedSettings, Settings

Echo = Callable[[str], None]
REVISIONS = ("drop", "regenerate")
ARMS = {"on": ("rules", "off"), "off": ("off", "off"), "bandit": ("bandit", "off"),
        "drop": ("rules", "drop"), "regenerate": ("rules", "regenerate")}
"""Each arm of the bench: (controller, critic_regenerate)."""
SMALL_TALK = ["Hello!", "Thanks, that was helpful.", "Good morning!", "Thank you so much!", "Okay, bye.",
              "Great, thanks!", "Hi there", "Cheers!"]


class Asked(BaseModel):
    kind: str
    question: str
    accepted: list[str] = Field(default_factory=list)
    first: str = Field("", description="A follow-up's first question, asked before it in its conversation.")
    document: str = Field("", description="The source document's text (judging hallucinations).")
    options: list[str] = Field(default_factory=list, description="The question's options, wrong ones included.")


class ArmFigures(BaseModel):
    accuracy: float | None = Field(description="Share right over scored questions (None: none scored).")
    latency_s: float = Field(description="Mean seconds per answer, the whole ask.")
    flagged: float = Field(description="Share of answers with a sentence the critic found unsupported.")
    torch_answers: int = Field(description="Answers the torch model (learned weights) gave.")
    hallucination_rate: float | None = Field(None, description="Share of the judged answers (about a "
                                             "document) with a sentence the document does not support, by "
                                             "the bench's ground-truth judge (app.bench.hallucination).")
    judged: int = 0
    revised: int = Field(0, description="Answers the critic's flags changed (sentences dropped or regenerated).")
    regenerated: int = Field(0, description="Answers replaced by their one regeneration.")
    recalled: int = Field(0, description="Answers given earlier conversations (none: the bench turns "
                          "episodic recall off, since those are the other arms' answers).")


class KindFigures(BaseModel):
    kind: str
    questions: int
    on: ArmFigures
    off: ArmFigures
    revisions: dict[str, ArmFigures] = Field(default_factory=dict,
                                             description="The controller on with critic_regenerate = drop, regenerate.")


class HallucinationFigures(BaseModel):
    """Delivered answers about the documents (document and follow-up questions), judged against
    their source document: today's chat (controller on, nothing revised) against each revision."""

    questions: int
    today: float = Field(description="Hallucination rate of today's chat (critic_regenerate = off).")
    always_all: float = Field(description="The same with controller = off.")
    by_mode: dict[str, float] = Field(description="drop, regenerate: the rate with that revision.")
    accuracy: dict[str, float | None] = Field(description="today, drop, regenerate: share right.")
    latency_s: dict[str, float] = Field(description="today, drop, regenerate: mean seconds.")
    best: str = Field(description="The revision with the lowest rate (then the higher accuracy).")
    halved: bool = Field(description="The best revision's rate is at most half today's.")
    examples: list[dict] = Field(default_factory=list, description="Answers judged unsupported, per arm.")


class BanditFigures(BaseModel):
    """The bandit, trained on one half of the questions, against rules and always-all on the other."""

    train_questions: int
    held_out_questions: int
    epochs: int
    explore: float
    learned: int = Field(description="Rewarded decisions the bandit learned from (training only).")
    mean_train_reward: float
    ips_greedy: float = Field(description="IPS estimate of the trained greedy policy's mean reward "
                              "on the training log.")
    ips_rules: float = Field(description="The same for the rules' policy.")
    held_out: dict[str, ArmFigures] = Field(description="bandit, rules, off: held-out figures.")
    arms: dict[str, int] = Field(description="Arms the bandit chose on the held-out questions.")


class ControllerBench(BaseModel):
    accuracy_on: float
    accuracy_off: float
    latency_on_s: float
    latency_off_s: float
    learned: bool = Field(description="The documents were learned into weights (engines rag,ttt).")
    documents: int
    by_kind: list[KindFigures]
    samples: list[dict] = Field(default_factory=list)
    bandit: BanditFigures | None = None
    follow_up_accuracy_on: float | None = Field(None, description="Follow-up questions, controller on.")
    follow_up_accuracy_off: float | None = Field(None, description="The same, every memory always.")
    hallucination: HallucinationFigures | None = None


def questions(chosen: BenchSet, documents: set[str], general: int, small_talk: int,
              follow_up: int = 6, document_questions: int | None = None) -> list[Asked]:
    """The document questions (the first ``document_questions``; all when None), general ones,
    small talk and ``follow_up`` follow-ups (each after the question it follows, in one
    conversation; ``app.bench.follow_ups``)."""
    texts = {d.file_name: d.text for d in chosen.documents}
    mine = [q for q in chosen.questions if q.doc_file in documents]
    doc = [Asked(kind="document", question=q.question, accepted=q.accepted, document=texts[q.doc_file],
                 options=q.options) for q in mine[:document_questions]]
    by_text = {q.question: q for q in mine}
    later = [Asked(kind="follow-up", question=f.question, first=f.first, accepted=by_text[f.original].accepted,
                   document=texts[by_text[f.original].doc_file], options=by_text[f.original].options)
             for f in follow_ups([(q.doc_file, q.question) for q in mine], follow_up)]
    known = [Asked(kind="general", question=q.question, accepted=[q.answer]) for q in general_questions()[:general]]
    return doc + later + known + [Asked(kind="small talk", question=s) for s in SMALL_TALK[:small_talk]]


def split(asked: list[Asked]) -> tuple[list[Asked], list[Asked]]:
    """(training, held out): the questions of each kind, alternately."""
    train, held = [], []
    for kind in dict.fromkeys(q.kind for q in asked):
        of_kind = [q for q in asked if q.kind == kind]
        train += of_kind[0::2]
        held += of_kind[1::2]
    return train, held


def _ask(engram, asked: Asked) -> dict:
    """Ask (a follow-up after its first question, in one conversation; only it is timed and
    scored) and judge the delivered answer against the source document."""
    conversation = engram.chat.answer(asked.first).message.conversation_id if asked.first else None
    started = time.perf_counter()
    message = engram.chat.answer(asked.question, conversation).message
    seconds = time.perf_counter() - started
    judged = (judge(message.content, asked.document, [asked.first, asked.question], asked.accepted, asked.options)
              if asked.document else None)
    revision = message.meta.get("revision") or {}
    return {"seconds": seconds, "right": any(contains(message.content, a) for a in asked.accepted)
            if asked.accepted else None, "flagged": bool(message.meta.get("unsupported")),
            "torch": message.meta.get("backend") == "torch", "answer": message.content[:200],
            "message_id": message.id, "arm": message.meta.get("controller", {}).get("arm", ""),
            "hallucinated": None if judged is None else judged.hallucinated,
            "why": [u.why for u in judged.unsupported] if judged else [],
            "revised": bool(revision), "regenerated": bool(revision.get("regenerated")),
            "recalled": bool(message.meta.get("recalled"))}


def train_bandit(engram, train: list[Asked], epochs: int, explore: float, echo: Echo) -> None:
    """The bandit answers the training questions ``epochs`` times, exploring; each answer gets the
    feedback its known answer implies (none for small talk) and the worker learns its reward."""
    from store.jobs import CONTROLLER

    engram.settings.controller = "bandit"
    engram.settings.controller_explore = explore
    for epoch in range(epochs):
        for q in train:
            result = _ask(engram, q)
            if result["right"] is not None:
                engram.chat.feedback(result["message_id"], "up" if result["right"] else "down")
            engram.worker.drain(kinds=[CONTROLLER])
        echo(f"  bandit: training epoch {epoch + 1}/{epochs} done ({len(train)} questions)")
    engram.settings.controller_explore = 0.0  # held out: the greedy policy, learning nothing more


def bandit_log_figures(engram) -> tuple[int, float, float, float]:
    """(decisions learned, mean reward, IPS of the greedy policy, IPS of the rules) on the log."""
    from app.chat.bandit import load_bandit
    from models.linear_bandit import ips_value
    from store.controller_decisions import ControllerDecisionStore

    decisions = ControllerDecisionStore(engram.db)
    logged = [d for d in decisions.all() if d.reward is not None and d.learned_reward is not None]
    if not logged:
        return 0, 0.0, 0.0, 0.0
    bandit = load_bandit(decisions.model())
    rewards, props = [d.reward for d in logged], [d.propensity for d in logged]
    greedy = [float(bandit.greedy(d.context, d.rules_arm, engram.settings.controller_warmup) == d.arm) for d in logged]
    rules = [float(d.rules_arm == d.arm) for d in logged]
    return (len(logged), round(statistics.fmean(rewards), 4), round(ips_value(rewards, props, greedy), 4),
            round(ips_value(rewards, props, rules), 4))


def _arm(results: list[dict]) -> ArmFigures:
    scored = [r["right"] for r in results if r["right"] is not None]
    judged = [r["hallucinated"] for r in results if r.get("hallucinated") is not None]
    return ArmFigures(accuracy=round(sum(scored) / len(scored), 3) if scored else None,
                      latency_s=round(statistics.fmean(r["seconds"] for r in results), 3),
                      flagged=round(sum(r["flagged"] for r in results) / len(results), 3),
                      torch_answers=sum(r["torch"] for r in results),
                      hallucination_rate=round(sum(judged) / len(judged), 3) if judged else None,
                      judged=len(judged), revised=sum(r.get("revised", False) for r in results),
                      regenerated=sum(r.get("regenerated", False) for r in results),
                      recalled=sum(r.get("recalled", False) for r in results))


def run_controller_bench(settings: Settings, size: str = "tiny", seed: int = 0, documents: int = 2,
                         general: int = 12, learn: bool = True, small_talk: int = len(SMALL_TALK),
                         echo: Echo = print, bandit: bool = True, epochs: int = 3,
                         explore: float = 0.5, warmup: int = 3, follow_up: int = 6,
                         revisions: bool = True, document_questions: int | None = None) -> ControllerBench:
    """Ask every question with the controller on and off, in a temporary Engram; with ``bandit``,
    train it on half the questions first and ask the other half with it too (``warmup``: samples
    an arm needs before the bandit may prefer it; fewer than the app's default, as the bench's
    training is short); with ``revisions``, every question but small talk also with the controller
    on and each ``critic_regenerate`` mode (drop, regenerate), judged for hallucinations."""
    from app.core import Engram

    chosen = load_set("natural", size, seed)
    files = {d.file_name for d in chosen.documents[:documents]}
    asked = questions(chosen, files, general, small_talk, follow_up, document_questions)
    echo(f"Controller: {len(files)} documents of the natural set '{size}' (seed {seed})"
         f"{', learned into weights (rag,ttt)' if learn else ', retrieval only'}; "
         f"{len(asked)} questions ({sum(q.kind == 'follow-up' for q in asked)} follow-ups), each with the "
         f"controller on and off" + (", and on with the critic's revisions (drop, regenerate)" if revisions else ""))
    with tempfile.TemporaryDirectory(prefix="engram-controller-bench-") as tmp:
        root = Path(tmp)
        # No episodic recall: the bench's earlier conversations are the other arms' answers to the
        # same questions, and always-all (which recalls for every question) would copy them. A
        # follow-up's own conversation is its working memory, as in the app.
        local = settings.model_copy(update={"data_dir": root / "data", "drop_folder": root / "drop",
                                            "engines": ["rag", "ttt"] if learn else ["rag"],
                                            "temperature": 0.0,
                                            "memory": settings.memory.model_copy(update={"episodic": False})})
        engram = Engram(LoadedSettings(settings=local, sources={}, config_file=root / "none.toml"))
        try:
            folder = root / "documents"
            chosen.model_copy(update={"documents": [d for d in chosen.documents if d.file_name in files]}).write(folder)
            engram.ingest([folder])
            started = time.perf_counter()
            engram.run_pending(learn=learn)
            if learn:
                echo(f"  learned {len(files)} documents into weights in {time.perf_counter() - started:.0f} s")
            engram.fill_windows()  # as the app's idle worker does after ingestion
            train, held = split(asked) if bandit else ([], [])
            if bandit:
                echo(f"  bandit: {len(train)} training questions x {epochs} epochs (explore {explore}), "
                     f"{len(held)} held out")
                engram.settings.controller_warmup = warmup
                train_bandit(engram, train, epochs, explore, echo)
                learned = bandit_log_figures(engram)
            results: dict[str, list[tuple[Asked, dict]]] = {name: [] for name in ARMS}
            for n, q in enumerate(asked):
                names = (["on", "off"] + (list(REVISIONS) if revisions and q.kind != "small talk" else [])
                         + (["bandit"] if any(q is h for h in held) else []))
                for name in names[n % len(names):] + names[:n % len(names)]:
                    engram.settings.controller, engram.settings.critic_regenerate = ARMS[name]  # type: ignore[assignment]
                    results[name].append((q, _ask(engram, q)))
                if (n + 1) % 5 == 0 or n + 1 == len(asked):
                    echo(f"  {n + 1}/{len(asked)} questions")
        finally:
            engram.close()
    report = _figures(results, learn, len(files))
    if revisions:
        report.hallucination = hallucination_figures(results)
    if bandit:
        report.bandit = _bandit_figures(results, held, len(train), epochs, explore, learned)
    return report


def _bandit_figures(results: dict[str, list[tuple[Asked, dict]]], held: list[Asked], train: int, epochs: int,
                    explore: float, learned: tuple[int, float, float, float]) -> BanditFigures:
    held_ids = {id(q) for q in held}
    on_held = {name: [r for q, r in results[key] if id(q) in held_ids]
               for name, key in (("bandit", "bandit"), ("rules", "on"), ("off", "off"))}
    arms: dict[str, int] = {}
    for r in on_held["bandit"]:
        arms[r["arm"]] = arms.get(r["arm"], 0) + 1
    return BanditFigures(train_questions=train, held_out_questions=len(held), epochs=epochs, explore=explore,
                         learned=learned[0], mean_train_reward=learned[1], ips_greedy=learned[2],
                         ips_rules=learned[3], held_out={k: _arm(v) for k, v in on_held.items()}, arms=arms)


def _figures(results: dict[str, list[tuple[Asked, dict]]], learn: bool, documents: int) -> ControllerBench:
    kinds = list(dict.fromkeys(q.kind for q, _ in results["on"]))
    by_kind = [KindFigures(kind=k, questions=sum(q.kind == k for q, _ in results["on"]),
                           on=_arm([r for q, r in results["on"] if q.kind == k]),
                           off=_arm([r for q, r in results["off"] if q.kind == k]),
                           revisions={m: _arm([r for q, r in results[m] if q.kind == k])
                                      for m in REVISIONS if any(q.kind == k for q, _ in results[m])})
               for k in kinds]
    on, off = _arm([r for _, r in results["on"]]), _arm([r for _, r in results["off"]])
    samples = [{"kind": q.kind, "question": q.question, "on": a["answer"], "off": b["answer"]}
               for (q, a), (_, b) in list(zip(results["on"], results["off"]))[::4]]
    follow = {k.kind: k for k in by_kind}.get("follow-up")
    return ControllerBench(accuracy_on=on.accuracy or 0.0, accuracy_off=off.accuracy or 0.0,
                           latency_on_s=on.latency_s, latency_off_s=off.latency_s, learned=learn,
                           documents=documents, by_kind=by_kind, samples=samples,
                           follow_up_accuracy_on=follow.on.accuracy if follow else None,
                           follow_up_accuracy_off=follow.off.accuracy if follow else None)


def hallucination_figures(results: dict[str, list[tuple[Asked, dict]]]) -> HallucinationFigures:
    """Today's chat against each revision, on the answers about documents (judged ones)."""
    arms = {name: _arm([r for _, r in results[key] if r["hallucinated"] is not None])
            for name, key in (("today", "on"), ("always_all", "off"), *((m, m) for m in REVISIONS))}
    rate = {name: a.hallucination_rate or 0.0 for name, a in arms.items()}
    best = min(REVISIONS, key=lambda m: (rate[m], -(arms[m].accuracy or 0.0)))
    examples = [{"arm": name, "question": q.question, "answer": r["answer"], "why": r["why"]}
                for name, key in (("today", "on"), *((m, m) for m in REVISIONS))
                for q, r in results[key] if r["hallucinated"]][:12]
    return HallucinationFigures(
        questions=arms["today"].judged, today=rate["today"], always_all=rate["always_all"],
        by_mode={m: rate[m] for m in REVISIONS},
        accuracy={name: arms[name].accuracy for name in ("today", *REVISIONS)},
        latency_s={name: arms[name].latency_s for name in ("today", *REVISIONS)},
        best=best, halved=rate[best] <= rate["today"] / 2 if rate["today"] else rate[best] == 0.0,
        examples=examples)


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
    if report.follow_up_accuracy_on is not None:
        echo(f"follow-up questions (need the conversation): right {report.follow_up_accuracy_on:.3f} on, "
             f"{report.follow_up_accuracy_off:.3f} always-all")
    for k in report.by_kind:
        for mode, f in k.revisions.items():
            echo(f"  {k.kind:<12} on + {mode:<10} right {'-' if f.accuracy is None else f'{f.accuracy:.3f}'}"
                 f" (on {'-' if k.on.accuracy is None else f'{k.on.accuracy:.3f}'}), {f.latency_s:.2f} s, "
                 f"revised {f.revised}, regenerated {f.regenerated}")
    if report.hallucination is not None:
        print_hallucination(report.hallucination, echo)
    if report.bandit is not None:
        print_bandit(report.bandit, echo)


def print_hallucination(h: HallucinationFigures, echo: Echo) -> None:
    echo(f"hallucination rate of delivered answers about the documents ({h.questions} answers, judged "
         f"against the source document): today {h.today:.3f} (always-all {h.always_all:.3f}), "
         + ", ".join(f"{m} {r:.3f}" for m, r in h.by_mode.items()))
    echo("  accuracy: " + ", ".join(f"{n} {'-' if a is None else f'{a:.3f}'}" for n, a in h.accuracy.items())
         + "; mean seconds: " + ", ".join(f"{n} {s:.2f}" for n, s in h.latency_s.items()))
    echo(f"  halved (best: {h.best} {h.by_mode[h.best]:.3f} against {h.today:.3f}): "
         f"{'PASS' if h.halved else 'MISS'}")
    for e in h.examples:
        echo(f"    {e['arm']}: {e['question']} -> {e['answer'][:120]!r} ({'; '.join(e['why'])})")


def print_bandit(b: BanditFigures, echo: Echo) -> None:
    echo(f"bandit: trained on {b.train_questions} questions x {b.epochs} epochs (explore {b.explore}; "
         f"{b.learned} rewards learned, mean {b.mean_train_reward:.3f}; IPS of its greedy policy "
         f"{b.ips_greedy:.3f} vs the rules' {b.ips_rules:.3f})")
    echo(f"held out ({b.held_out_questions} questions): " + ", ".join(
        f"{name} accuracy {'-' if f.accuracy is None else f'{f.accuracy:.3f}'} latency {f.latency_s:.2f} s"
        for name, f in b.held_out.items()))
    echo("bandit's arms on them: " + ", ".join(f"{arm} {n}" for arm, n in sorted(b.arms.items())))
