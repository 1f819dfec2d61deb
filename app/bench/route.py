"""``engram bench route``: which questions the router hands the learned weights, in seconds.

The TTT engine routes its learned weights by the question (``models.delta_router``): a question's
share rises from 0 to 1 as its best cosine similarity to a learned document's keys goes from
``ttt.route_low`` to ``ttt.route_high``. A question with share 0 is answered by the original
model exactly, so how the router splits questions already bounds what answers can forget, before
any training: the learning bench needs an hour for the default set, this needs the embedder only.

The library is a fictional set (``app.bench.fiction``), keyed exactly as the engine keys a document it
learns (``route_keys.embedded_keys``). Each group of texts is routed as the learning bench and
chat route it, by its own text:

- the fictional questions: should get the learned weights (share 1);
- the bench's general questions: the set the default bounds were chosen on;
- the held-out general questions (``heldout_questions``): never looked at when choosing them;
  a third are worded like the fictional questions, about real people, places and products;
- the held-out English, paragraph by paragraph (the learning bench routes 512-token windows,
  which are further from any one key than their paragraphs are).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from datetime import datetime

import torch
from pydantic import BaseModel, Field

from app.bench.verdict import verdict
from app.bench.fiction import Size, generate
from app.services.general_text import general_questions, heldout_questions, heldout_text
from app.settings import Settings
from engines.base import Embed
from engines.ttt.route_keys import embedded_keys
from models.delta_router import DeltaRouter

Echo = Callable[[str], None]
LEARNED_TARGET = 0.95  # mean share of the learned weights the fictional questions should get
GENERAL_TARGET = 0.05  # most held-out general questions that may get any of them
HELDOUT = "held-out general questions"


class RoutedGroup(BaseModel):
    """How one group of texts is routed."""

    name: str
    learned: bool = Field(description="Texts about the learned documents (else: general ones).")
    texts: int
    median_similarity: float = Field(description="Best cosine similarity to a key, median.")
    lowest_similarity: float
    highest_similarity: float
    routed: int = Field(description="Texts that get any of the learned weights (share > 0).")
    full: int = Field(description="Texts that get all of them (share 1).")
    mean_share: float
    worst: list[tuple[str, float, float]] = Field(
        default_factory=list, description="The three texts routed least as they should be (the learned "
        "ones with the lowest similarity, the general ones with the highest): text, similarity, share.")


class RouteBenchReport(BaseModel):
    created_at: str
    size: str
    seed: int
    documents: int
    keys: int
    embedding_model: str
    low: float
    high: float
    routing_on: bool = Field(description="ttt.route: whether answers are routed at all.")
    groups: list[RoutedGroup]
    seconds: float


def route_group(router: DeltaRouter, embed: Embed, name: str, texts: list[str], learned: bool) -> RoutedGroup:
    """Route ``texts`` as answers are routed: each by its own text."""
    if not texts:
        raise ValueError(f"nothing to route in {name!r}")
    similarity = router.similarity(torch.from_numpy(embed(texts)))
    shares = router.shares_at(similarity)
    order = similarity.argsort(descending=not learned)[:3].tolist()
    return RoutedGroup(
        name=name, learned=learned, texts=len(texts), median_similarity=statistics.median(similarity.tolist()),
        lowest_similarity=float(similarity.min()), highest_similarity=float(similarity.max()),
        routed=int((shares > 0).sum()), full=int((shares >= 1).sum()), mean_share=float(shares.mean()),
        worst=[(texts[i], round(float(similarity[i]), 3), round(float(shares[i]), 3)) for i in order])


def run_route_bench(settings: Settings, size: Size | int = "default", seed: int = 0,
                    echo: Echo = print, embed: Embed | None = None) -> RouteBenchReport:
    """Key a fictional library as the engine would and route every group of texts by it;
    ``embed``: an already loaded embedder's (default: the configured embedding model)."""
    started = time.perf_counter()
    if embed is None:
        from app.ingest.embeddings import Embedder

        embed = Embedder(settings.embedding_model, settings.device, settings.embed_batch_size).embed
    fiction = generate(size, seed)
    echo(f"Keying the fictional set '{size}' (seed {seed}): {len(fiction.documents)} documents...")
    router = DeltaRouter(settings.ttt.route_low, settings.ttt.route_high)
    for i, document in enumerate(fiction.documents):
        router.add(i, embedded_keys(embed, document.text))
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", heldout_text()) if len(p.split()) >= 8]
    groups = [
        route_group(router, embed, "fictional questions (learned)", [q.question for q in fiction.questions], True),
        route_group(router, embed, "general questions (the bounds were chosen on these)",
                    [q.question for q in general_questions()], False),
        route_group(router, embed, HELDOUT, [q.question for q in heldout_questions()], False),
        route_group(router, embed, "held-out English, by paragraph", paragraphs, False),
    ]
    report = RouteBenchReport(
        created_at=datetime.now().isoformat(timespec="seconds"), size=str(size), seed=seed,
        documents=len(fiction.documents), keys=len(router), embedding_model=settings.embedding_model,
        low=router.low, high=router.high, routing_on=settings.ttt.route, groups=groups, seconds=time.perf_counter() - started)
    print_route_report(report, echo)
    return report


def print_route_report(r: RouteBenchReport, echo: Echo) -> None:
    echo(f"\nRouting on '{r.size}' ({r.documents} documents, {r.keys} keys from {r.embedding_model}); "
         f"share 0 at similarity <= {r.low}, 1 at >= {r.high}:")
    for g in r.groups:
        echo(f"{g.name:<52} {g.texts:>4} texts | similarity {g.lowest_similarity:.2f} to "
             f"{g.highest_similarity:.2f}, median {g.median_similarity:.2f} | any share {g.routed:>4}, "
             f"full {g.full:>4}, mean share {g.mean_share:.3f}")
        for text, similarity, share in g.worst:
            echo(f"    {'furthest' if g.learned else 'closest'}: {text[:90]!r} (similarity {similarity:.2f}, "
                 f"share {share:.2f})")
    learned = next(g for g in r.groups if g.learned)
    echo(f"fictional questions get the learned weights: mean share {learned.mean_share:.3f} >= "
         f"{LEARNED_TARGET}: {verdict(learned.mean_share >= LEARNED_TARGET)}")
    heldout = next(g for g in r.groups if g.name == HELDOUT)
    echo(f"held-out general questions kept from them: {heldout.routed} of {heldout.texts} get any, "
         f"< {GENERAL_TARGET:.0%}: {verdict(heldout.routed < GENERAL_TARGET * heldout.texts)}")
    echo(f"({r.seconds:.1f} s; a question with share 0 is answered by the original model exactly)")
    if not r.routing_on:
        echo("note: routing is off (ttt.route false): today every answer gets all of the learned weights")
