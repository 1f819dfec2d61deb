"""``engram bench needle``: a number planted in filler text, recalled as the document grows.

The needle test of the Doc-to-LoRA paper: each document is ordinary prose (the shipped
background English and Python's own documentation, never a learning bench's fiction) with one
sentence planted at a random depth, "The access code of the <Name> vault is <number>.", and the
question "What is the access code of the <Name> vault?" (each document its own vault, so routing
can tell them apart). The answer is the number, scored in the written (greedy) answer. Three
ways of answering, per document length:
- **base**: the model alone, closed book (it cannot know the number);
- **in context**: the whole document in the prompt as chat puts a passage there, cut to the
  context window when it is longer (what the model can read at once);
- **d2l**: closed book, with the adapter one hypernetwork pass wrote from the document (after
  meta-training within the bench's budget, on fiction of another generator seed).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from app.bench.learn import LearnBench
from app.bench.learn_measures import chat_prompt, written_answers, written_scores
from app.bench.learn_sets import BenchDocument, BenchQuestion, BenchSet
from app.services.general_text import background_text
from app.settings import Settings
from engines.base import Contribution, Neocortex, Passage

Echo = Callable[[str], None]
VAULTS = ("Kestrel Quarry Ostrander Mirelle Pennick Talvane Brisco Hollin Varrow Quenby Ashgrove Dunmere "
          "Fennick Larkspur Morrow Petrel").split()


class NeedleRow(BaseModel):
    tokens: int = Field(description="Document length asked for, in the model's tokens.")
    documents: int
    fits: bool = Field(description="The whole document fits the prompt's room for passages.")
    base: float = Field(description="Recall of the number closed book, nothing learned.")
    in_context: float = Field(description="Recall with the document in the prompt (cut to fit).")
    d2l: float = Field(description="Recall closed book with the document's adapter.")
    learn_seconds: float = Field(description="Mean seconds of one hypernetwork pass per document.")


class NeedleReport(BaseModel):
    created_at: str
    model: str
    seed: int
    meta_train_seconds: float
    hypernetwork_steps: int
    rows: list[NeedleRow]
    seconds: float = 0.0


def filler(cortex: Neocortex, tokens: int, offset: int) -> list[str]:
    """Sentences of the background text from paragraph ``offset`` on, about ``tokens`` long."""
    paragraphs = [p.strip() for p in background_text().split("\n\n") if len(p.split()) >= 8]
    out, used = [], 0
    for i in range(len(paragraphs)):
        paragraph = " ".join(paragraphs[(offset + i) % len(paragraphs)].split())
        out.append(paragraph)
        used += len(cortex.tokenizer(paragraph, add_special_tokens=False)["input_ids"])
        if used >= tokens:
            break
    return out


def needle_set(cortex: Neocortex, lengths: list[int], trials: int, seed: int) -> BenchSet:
    """``trials`` documents per length, each with its own vault, number, depth and filler."""
    rng = random.Random(seed)
    documents, questions = [], []
    vaults = iter(rng.sample(VAULTS, len(VAULTS)) * (1 + len(lengths) * trials // len(VAULTS)))
    for tokens in lengths:
        for trial in range(trials):
            vault, number = next(vaults), str(rng.randrange(10_000, 100_000))
            paragraphs = filler(cortex, tokens, rng.randrange(10_000))
            at = rng.randrange(len(paragraphs) + 1)
            paragraphs.insert(at, f"The access code of the {vault} vault is {number}.")
            name = f"needle-{tokens:05d}-{trial}.txt"
            documents.append(BenchDocument(file_name=name, text="\n\n".join(paragraphs) + "\n"))
            questions.append(BenchQuestion(doc_file=name, question=f"What is the access code of the {vault} vault?",
                                           answer=number, accepted=[number], options=[number]))
    return BenchSet(name="natural", size="needle", seed=seed, documents=documents, questions=questions)


def _recall(cortex: Neocortex, prompts: list[str], questions: list[BenchQuestion], routed: bool) -> list[bool]:
    answers, _, _ = written_answers(cortex, prompts, [q.question for q in questions] if routed else None)
    return [written_scores([q], [a])[0] > 0 for q, a in zip(questions, answers)]


def _in_context(document: BenchDocument) -> Contribution:
    passage = Passage(chunk_id=0, document_id=0, path=document.file_name, line_start=1,
                      line_end=document.text.count("\n") + 1, score=1.0, text=document.text)
    return Contribution(engine="document", passages=[passage])


def run_needle_bench(settings: Settings, cortex: Neocortex, lengths: list[int], trials: int = 3, seed: int = 0,
                     meta_train_seconds: float = 300.0, echo: Echo = print) -> NeedleReport:
    """Every arm on every length (``cortex``: the loaded torch model; the caller closes it)."""
    started = time.perf_counter()
    chosen = needle_set(cortex, lengths, trials, seed)
    echo(f"Needle set: {len(chosen.documents)} documents ({trials} per length: {', '.join(map(str, lengths))} tokens)")
    room = int(settings.rag.context_share * int(getattr(cortex.model.config, "max_position_embeddings", 2048)))
    with tempfile.TemporaryDirectory(prefix="engram-needle-bench-") as tmp:
        bench = LearnBench(settings, chosen, cortex, Path(tmp), True, echo, meta_train_seconds)
        try:
            questions, by_file = list(chosen.questions), {d.file_name: d for d in chosen.documents}
            echo("Asking the base model, and with each document in context...")
            base = _recall(cortex, bench.prompts([]), questions, routed=False)
            in_context = _recall(cortex, [chat_prompt(q.question, [_in_context(by_file[q.doc_file])], cortex, settings)
                                          for q in questions], questions, routed=False)
            engine = bench.build("d2l", {})
            try:
                echo(f"d2l: learning {len(bench.documents)} documents, one hypernetwork pass each...")
                seconds = {d.path: engine.learn(d).seconds for d in bench.documents}
                learned = _recall(cortex, bench.prompts([engine]), questions, routed=True)
                steps = int(engine.stats()["hypernetwork_steps"])
            finally:
                engine.close()
        finally:
            bench.close()
    rows = []
    for tokens in lengths:
        picked = [i for i, q in enumerate(questions) if q.doc_file.startswith(f"needle-{tokens:05d}-")]
        longest = max(len(cortex.tokenizer(by_file[questions[i].doc_file].text)["input_ids"]) for i in picked)
        spent = [t for path, t in seconds.items() if Path(path).name.startswith(f"needle-{tokens:05d}-")]
        rows.append(NeedleRow(tokens=tokens, documents=len(picked), fits=longest <= room,
                              base=sum(base[i] for i in picked) / len(picked),
                              in_context=sum(in_context[i] for i in picked) / len(picked),
                              d2l=sum(learned[i] for i in picked) / len(picked),
                              learn_seconds=sum(spent) / max(1, len(spent))))
    report = NeedleReport(created_at=datetime.now().isoformat(timespec="seconds"), model=cortex.model_name,
                          seed=seed, meta_train_seconds=meta_train_seconds, hypernetwork_steps=steps, rows=rows,
                          seconds=time.perf_counter() - started)
    print_needle(report, echo)
    return report


def print_needle(report: NeedleReport, echo: Echo) -> None:
    echo(f"Needle recall (written answer holds the number), {report.model}, hypernetwork "
         f"{report.hypernetwork_steps} steps:")
    echo(f"{'tokens':>7} {'docs':>5} {'fits':>5} {'base':>6} {'in context':>11} {'d2l':>6} {'learn s':>8}")
    for r in report.rows:
        echo(f"{r.tokens:>7} {r.documents:>5} {'yes' if r.fits else 'no':>5} {r.base:>6.2f} {r.in_context:>11.2f} "
             f"{r.d2l:>6.2f} {r.learn_seconds:>8.2f}")
