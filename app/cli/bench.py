"""``engram bench ...``: benchmarks that print ratios against the raw parts measured in the same
run. They build what they measure themselves, so they call ``app.bench`` directly."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.base import (
    Context,
    cli,
    console,
    json_out_option,
    pass_ctx,
    runtime_errors,
    user_errors,
    write_report,
)


@cli.group()
def bench() -> None:
    """Benchmarks that print ratios against the raw parts measured in the same run."""


def _fiction_size(_ctx: click.Context, _param: click.Parameter, value: str) -> str | int:
    """A named fictional set, or a number of documents; refused before any model loads."""
    from app.bench.fiction import documents_in

    size = int(value) if value.isdecimal() else value
    try:
        documents_in(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return size


def _arm_numbers(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int] | None:
    """'1,3' -> [1, 3]; a typo is refused rather than read as 'every arm' (hours of training)."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.isdecimal() for p in parts):
        raise click.BadParameter(f"{value!r}: give arm numbers separated by commas, e.g. '1,3'")
    return [int(p) for p in parts] or None


fiction_size_option = click.option(
    "--size", default="default", show_default=True, callback=_fiction_size,
    help="Fictional set: tiny, small, default, large, or a number of documents.")


@bench.command("ingest")
@click.option("--files", type=int, default=2000, show_default=True, help="Generated corpus size.")
@click.option("--vectors", type=str, default="10000,100000", show_default=True,
              help="Index sizes for the search-latency part.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backends", default="", help="Also ingest the corpus with each of these embedding "
              "backends (comma-separated: auto, torch, torch-bf16, onnx, onnx-int8, each optionally "
              "/BATCH, e.g. auto/16), each in its own process, in turn, against torch/64 (the old "
              "path) in the same run: chunks/s and peak memory.")
@click.option("--repeat", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs per backend with --backends (medians).")
@json_out_option
@pass_ctx
def bench_ingest(c: Context, files: int, vectors: str, seed: int, backends: str, repeat: int,
                 json_out: Path | None) -> None:
    """Ingest throughput vs raw embedding, re-scan time, search latency and ANN recall."""
    from app.bench.ingest import run_ingest_bench
    from app.ingest.embeddings import AUTO, BACKENDS

    sizes = [int(v) for v in vectors.split(",") if v.strip()]
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in chosen if b.partition("/")[0] not in (AUTO, *BACKENDS)
               or not (b.partition("/")[2] or "1").isdecimal()]
    if unknown:
        raise click.BadParameter(f"unknown backend(s) {', '.join(unknown)}; one of {AUTO}, {', '.join(BACKENDS)}, "
                                 "optionally with /BATCH", param_hint="--backends")
    report = run_ingest_bench(c.loaded.settings, files=files, vector_sizes=sizes, seed=seed,
                              echo=console.print, backends=chosen, repeat=repeat)
    write_report(report, json_out)


@bench.command("ace")
@click.option("--train", "n_train", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Training questions.")
@click.option("--test", "n_test", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Held-out questions (about other items).")
@click.option("--epochs", type=click.IntRange(1, 20), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@json_out_option
@pass_ctx
def bench_ace(c: Context, n_train: int, n_test: int, epochs: int, seed: int, json_out: Path | None) -> None:
    """Playbook learning on questions that need a unit convention: accuracy before and after
    offline training and on held-out questions, playbook size, time per cycle."""
    from app.bench.ace import run_ace_bench

    with user_errors(*runtime_errors()):
        report = run_ace_bench(c.loaded.settings, n_train=n_train, n_test=n_test, epochs=epochs,
                               seed=seed, echo=console.print)
    write_report(report, json_out)


@bench.command("learn")
@click.option("--engine", "engines", default="ttt", show_default=True,
              help="Engine(s) to measure, comma-separated; join two with '+' to run them together "
              "(rag+ttt); 'all': retrieval, every engine that learns documents, and each "
              "weight-writing one with retrieval.")
@click.option("--set", "set_name", type=click.Choice(["natural", "handwritten", "templated"]),
              default="natural", show_default=True,
              help="natural: generated everyday prose; handwritten: the held-out set written by "
              "hand (never tuned on); templated: the first, generator-shaped set (a regression check).")
@click.option("--size", default="small", show_default=True, callback=_fiction_size,
              help="tiny, small, default (natural and templated), large (templated), or a number "
              "of documents; the handwritten set is always whole.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ablations", is_flag=True,
              help="TTT: gated / ungated / full finetune, each with and without rehearsal and replay.")
@click.option("--free-text/--no-free-text", default=True, show_default=True,
              help="Score the written (greedy) answers: the headline. Without it the run is a "
              "diagnostic, saved apart and never shown as the latest result.")
@click.option("--speed/--no-speed", default=True, show_default=True,
              help="Also time learning one 2,000-token document.")
@click.option("--arms", default="", callback=_arm_numbers,
              help="With --ablations: only these arms, e.g. '1,2' (1 gated +rehearsal/replay, "
              "2 gated, 3 ungated +r/r, 4 ungated, 5 full +r/r, 6 full).")
@click.option("--threads", type=int, default=None,
              help="torch CPU threads (default: torch's; 1 is faster on a machine that is busy).")
@click.option("--sleep", type=click.FloatRange(0, 86_400), default=0, show_default=True,
              help="Seconds each weight-writing run then sleeps (consolidates); measured again after.")
@click.option("--d2l-train-seconds", type=click.FloatRange(1, 86_400), default=300, show_default=True,
              help="d2l: seconds its hypernetwork is meta-trained on fictional documents of another "
              "seed (never the test documents) before it learns the test documents.")
@click.option("--stream", "stream_days", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Stream mode: the documents arrive over this many simulated days, a --sleep between "
              "days; --engine picks arms among cls, naive, replay, ttt ('all': the four).")
@click.option("--stream-documents", type=click.IntRange(1, 100_000), default=None,
              help="Stream mode: only the set's first N documents.")
@click.option("--cls-router", "cls_routers", default="",
              help="cls: after its --sleep (which trains the learned gate), measure it once per router, "
              "comma-separated (keys, softmax, kwta), e.g. 'keys,softmax,kwta' (default: cls.router only).")
@json_out_option
@pass_ctx
def bench_learn(c: Context, engines: str, set_name: str, size: str | int, seed: int, ablations: bool,
                free_text: bool, speed: bool, arms: list[int] | None, threads: int | None,
                sleep: float, d2l_train_seconds: float, stream_days: int, stream_documents: int | None,
                cls_routers: str, json_out: Path | None) -> None:
    """What engines learn from fictional documents, and what they forget (JSON report + plot)."""
    from app.bench.learn import run_learn_bench

    names = [n.strip() for n in engines.split(",") if n.strip()]
    if stream_days:
        from app.bench.learn_stream import ARMS, run_stream_bench

        with user_errors(ValueError, *runtime_errors()):
            report = run_stream_bench(c.loaded.settings, list(ARMS) if names == ["all"] else names, stream_days,
                                      set_name=set_name, size=size, seed=seed,  # type: ignore[arg-type]
                                      sleep=sleep, limit=stream_documents, threads=threads,
                                      echo=lambda line: console.print(line, markup=False))
        write_report(report, json_out)
        return
    with user_errors(ValueError, *runtime_errors()):
        report = run_learn_bench(c.loaded.settings, names, set_name=set_name,
                                 size=size, seed=seed,  # type: ignore[arg-type]
                                 ablations=ablations, free_text=free_text, speed=speed,
                                 echo=console.print, threads=threads, sleep=sleep, arms=arms,
                                 meta_train_seconds=d2l_train_seconds,
                                 cls_routers=[r.strip() for r in cls_routers.split(",") if r.strip()])
    write_report(report, json_out)


@bench.command("needle")
@click.option("--lengths", default="256,1024,4096,8192", show_default=True,
              help="Document lengths in tokens, comma-separated (the model reads 8,192 at most).")
@click.option("--trials", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Documents per length, each with its own needle.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--d2l-train-seconds", type=click.FloatRange(1, 86_400), default=300, show_default=True,
              help="Seconds the hypernetwork is meta-trained on fiction first (when the bench's is untrained).")
@json_out_option
@pass_ctx
def bench_needle(c: Context, lengths: str, trials: int, seed: int, threads: int | None,
                 d2l_train_seconds: float, json_out: Path | None) -> None:
    """A number planted in filler text: recalled closed book, in context, and from the
    document's d2l adapter, as the document grows past what the model reads at once."""
    import torch

    from app.bench.needle import run_needle_bench
    from app.paths import DataPaths
    from app.runtimes.neocortex import load_neocortex

    settings = c.loaded.settings
    with user_errors(ValueError, *runtime_errors()):
        picked = [int(n) for n in lengths.split(",") if n.strip()]
        if not picked or min(picked) < 16:
            raise ValueError("--lengths takes token counts of at least 16, comma-separated")
        if threads:
            torch.set_num_threads(threads)
        cortex = load_neocortex(settings.neocortex_model, settings.device, DataPaths(root=settings.data_dir).ensure().cache)
        try:
            report = run_needle_bench(settings, cortex, picked, trials, seed, d2l_train_seconds,
                                      echo=lambda line: console.print(line, markup=False))
        finally:
            cortex.close()
    write_report(report, json_out)


@bench.command("d2l-curve")
@click.option("--seconds", "budgets", default="60,180,300", show_default=True,
              help="Cumulative meta-training budgets, comma-separated: the test documents are "
              "learned and asked after each.")
@click.option("--set", "set_name", type=click.Choice(["natural", "handwritten", "templated"]),
              default="natural", show_default=True)
@click.option("--size", default="tiny", show_default=True, callback=_fiction_size,
              help="tiny, small, default, or a number of documents (the handwritten set is whole).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@json_out_option
@pass_ctx
def bench_d2l_curve(c: Context, budgets: str, set_name: str, size: str | int, seed: int, threads: int | None,
                    json_out: Path | None) -> None:
    """d2l's learned score (closed book, free text first) against its hypernetwork's
    meta-training time: a table, a JSON report and a plot in the bench folder."""
    import torch

    from app.bench.d2l_curve import budgets as parse_budgets
    from app.bench.d2l_curve import print_curve, run_d2l_curve, save_curve
    from app.paths import DataPaths
    from app.runtimes.neocortex import load_neocortex

    settings = c.loaded.settings
    with user_errors(ValueError, *runtime_errors()):
        seconds = parse_budgets(budgets)
        if threads:
            torch.set_num_threads(threads)
        paths = DataPaths(root=settings.data_dir).ensure()
        cortex = load_neocortex(settings.neocortex_model, settings.device, paths.cache)
        try:
            report = run_d2l_curve(settings, cortex, seconds, set_name, size, seed,  # type: ignore[arg-type]
                                   echo=lambda line: console.print(line, markup=False))
        finally:
            cortex.close()
    save_curve(report, paths.bench)
    print_curve(report, lambda line: console.print(line, markup=False))
    write_report(report, json_out)


@bench.command("continual")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds to average over, comma-separated.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@json_out_option
@pass_ctx
def bench_continual(c: Context, seeds: str, threads: int | None, json_out: Path | None) -> None:
    """Digits in 5 tasks of 2 classes (class-incremental): cls vs naive, ewc and replay;
    average accuracy after the last task and backward transfer, PASS/MISS per target."""
    from app.bench.continual import ContinualConfig, run_continual

    with user_errors(ValueError):
        picked = [int(s) for s in seeds.split(",") if s.strip()]
        report = run_continual(ContinualConfig(seeds=picked), console.print, threads)
    write_report(report, json_out)


@bench.command("route")
@fiction_size_option
@click.option("--seed", type=int, default=0, show_default=True)
@json_out_option
@pass_ctx
def bench_route(c: Context, size: str | int, seed: int, json_out: Path | None) -> None:
    """Which questions TTT's router hands the learned weights: fictional ones against general
    ones the bounds were and were not chosen on (the embedder only; no training)."""
    from app.bench.route import run_route_bench

    with user_errors(ValueError, OSError):
        report = run_route_bench(c.loaded.settings, size=size, seed=seed,  # type: ignore[arg-type]
                                 echo=console.print)
    write_report(report, json_out)


@bench.command("chat")
@click.option("--questions", type=int, default=100, show_default=True,
              help="Fictional questions asked (with and without logit bias, and the hidden-state tier with --hidden).")
@click.option("--chunks", type=int, default=10_000, show_default=True,
              help="Store size for the retrieval latency part.")
@click.option("--runs", type=int, default=5, show_default=True, help="Speed runs per side.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hidden", is_flag=True, help="Also answer with the hidden-state tier (loads the torch "
              "model and stores the documents' hidden states; strength: the hidden.strength setting).")
@json_out_option
@pass_ctx
def bench_chat(c: Context, questions: int, chunks: int, runs: int, seed: int, hidden: bool,
               json_out: Path | None) -> None:
    """Chat speed vs raw llama-cpp-python, retrieval latency, grounded accuracy (retrieval, + logit
    bias, and with --hidden + the hidden-state tier)."""
    from app.bench.chat import run_chat_bench

    with user_errors(ValueError):
        report = run_chat_bench(c.loaded.settings, questions=questions, chunks=chunks, runs=runs,
                                seed=seed, echo=console.print, hidden=hidden)
    write_report(report, json_out)


@bench.command("load")
@click.option("--files", type=int, default=5000, show_default=True, help="Files dropped at once.")
@click.option("--chats", type=int, default=20, show_default=True, help="Concurrent questions.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_out_option
@pass_ctx
def bench_load(c: Context, files: int, chats: int, seed: int, json_out: Path | None) -> None:
    """Concurrent chat during a large ingest: latency, errors, deadlocks, consistency."""
    from app.bench.load import run_load_bench

    report = run_load_bench(c.loaded.settings, files=files, chats=chats, seed=seed, echo=console.print)
    write_report(report, json_out)
    if report.chat_errors or report.deadlocked or not report.consistent:
        raise click.ClickException("the load bench found errors (see above)")


@bench.command("decoding")
@click.option("--questions", type=click.IntRange(1, 500), default=60, show_default=True,
              help="Questions per set (general ones without sources, grounded ones with their document).")
@json_out_option
@pass_ctx
def bench_decoding(c: Context, questions: int, json_out: Path | None) -> None:
    """Both runtimes' answers, greedy: right answers, loops and length, at penalty 1.0 and the
    default, with and without the loop guard; checks parity within 0.05 and no looping answer."""
    from app.bench.decoding import run_decoding_command

    with user_errors(ValueError, *runtime_errors()):
        report = run_decoding_command(c.loaded.settings, questions, console.print)
    write_report(report, json_out)


@bench.command("retrieval")
@click.option("--queries", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Queries per kind (identifiers, codes, keywords; the hand-written paraphrases are fewer).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--paraphrases", type=click.Choice(["held-out", "dev"]), default="held-out", show_default=True,
              help="Hand-written paraphrase set: the held-out 64 (never tuned on) or the dev set "
              "(retrieval settings are chosen on it).")
@json_out_option
@pass_ctx
def bench_retrieval(c: Context, queries: int, seed: int, paraphrases: str, json_out: Path | None) -> None:
    """Retrieval quality on Python's documentation topics and near-duplicate notes: recall@1,
    recall@5, MRR and p50 latency of dense, BM25 and hybrid search per kind of query."""
    from app.bench.retrieval import run_retrieval_bench

    with user_errors(ValueError, OSError):
        report = run_retrieval_bench(c.loaded.settings, queries=queries, seed=seed,  # queries hold "[i]"
                                     echo=lambda line: console.print(line, markup=False),
                                     paraphrases=paraphrases)  # type: ignore[arg-type]
    write_report(report, json_out)


@bench.command("hmst")
@click.option("--size", type=click.Choice(["tiny", "small", "default"]), default="small", show_default=True,
              help="Natural set the labelled answers are made from.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model/--no-model", default=True, show_default=True,
              help="Also measure rules + the chat model's judgement (slow on CPU).")
@click.option("--model-items", type=click.IntRange(0, 10_000), default=40, show_default=True,
              help="Sentences of each set the model judges (an even sample).")
@click.option("--handwritten/--no-handwritten", default=True, show_default=True,
              help="Also score the hand-written held-out set (reported separately).")
@click.option("--controller/--no-controller", "with_controller", default=True, show_default=True,
              help="Also ask questions with the meta-controller on and off (answers and latency).")
@click.option("--controller-size", type=click.Choice(["tiny", "small", "default"]), default="tiny",
              show_default=True, help="The natural set the controller part's documents come from.")
@click.option("--controller-documents", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Documents of that set the controller part holds (a larger library: more passages "
              "that a general question can match).")
@click.option("--document-questions", type=click.IntRange(0, 10_000), default=None,
              help="Ask only the first N questions about those documents (default: all).")
@click.option("--learn/--no-learn", default=True, show_default=True,
              help="The controller part learns its documents into weights (rag,ttt; minutes on a CPU).")
@click.option("--bandit/--no-bandit", default=True, show_default=True,
              help="Also train the controller's bandit on half the questions and compare it on the other half.")
@click.option("--bandit-epochs", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Passes of the bandit over its training questions.")
@click.option("--follow-ups", type=click.IntRange(0, 50), default=6, show_default=True,
              help="Follow-up questions (asked after the question they follow, in its conversation).")
@click.option("--general", type=click.IntRange(0, 100), default=12, show_default=True,
              help="General-knowledge questions the controller part asks.")
@click.option("--small-talk", type=click.IntRange(0, 8), default=8, show_default=True,
              help="Small-talk messages the controller part sends.")
@click.option("--revisions/--no-revisions", default=True, show_default=True,
              help="Also ask with the critic's revisions (critic_regenerate = drop, regenerate) and judge "
              "the hallucination rate of the delivered answers against today's chat.")
@json_out_option
@pass_ctx
def bench_hmst(c: Context, size: str, seed: int, model: bool, model_items: int, handwritten: bool,
               with_controller: bool, controller_size: str, controller_documents: int,
               document_questions: int | None, learn: bool, bandit: bool, bandit_epochs: int,
               follow_ups: int, general: int, small_talk: int, revisions: bool, json_out: Path | None) -> None:
    """Issue 32's bench: the critic's precision and recall on fabricated sentences (names and
    numbers changed) among faithful ones, rules alone and rules + the chat model; then the
    meta-controller: answers and latency with it on, against every memory for every question."""
    from app.bench.controller import print_controller, run_controller_bench
    from app.bench.critic import run_critic_bench

    echo = lambda line: console.print(line, markup=False)  # noqa: E731
    with user_errors(ValueError, *runtime_errors()):
        report = run_critic_bench(c.loaded.settings, size=size, seed=seed, model=model,
                                  model_items=model_items, handwritten=handwritten, echo=echo)
        if with_controller:
            report.controller = run_controller_bench(c.loaded.settings, size=controller_size, seed=seed,
                                                     documents=controller_documents, learn=learn, echo=echo,
                                                     bandit=bandit, epochs=bandit_epochs, follow_up=follow_ups,
                                                     general=general, small_talk=small_talk, revisions=revisions,
                                                     document_questions=document_questions)
            print_controller(report.controller, echo)
    write_report(report, json_out)


@bench.command("episodic")
@click.option("--size", type=click.Choice(["tiny", "small", "default"]), default="small", show_default=True,
              help="Generated conversations: tiny 4 training + 2 held out, small 48 + 8, default 120 + 16.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=click.IntRange(0, 100_000), default=300, show_default=True,
              help="Training steps of the state-space encoder on the training conversations.")
@click.option("--summaries/--no-summaries", default=True, show_default=True,
              help="Also let the chat model summarise each held-out stretch (seconds each on a CPU).")
@click.option("--threads", type=int, default=1, show_default=True, help="torch and llama.cpp CPU threads.")
@click.option("--answers", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Also ask this many held-out questions through the chat, the conversations stored as "
              "past chats: answers containing the fact, citing its conversation (seconds each on a CPU).")
@json_out_option
@pass_ctx
def bench_episodic(c: Context, size: str, seed: int, steps: int, summaries: bool, threads: int, answers: int,
                   json_out: Path | None) -> None:
    """Episodic compression (issue 32): recall@1/@3 of the stretch that stated a fact, for raw
    turn vectors, the chat model's summaries and the trained state-space encoder's states;
    bytes and seconds per stretch; with --answers, what the answers built on recall say."""
    import torch

    from app.bench.episodic import run_from_settings

    torch.set_num_threads(threads)
    with user_errors(ValueError, *runtime_errors()):
        report = run_from_settings(c.loaded.settings, size=size, seed=seed, steps=steps, summaries=summaries,
                                   threads=threads, answers=answers,
                                   echo=lambda line: console.print(line, markup=False))
    write_report(report, json_out)
