"""``engram bench retrieval``: its queries are chosen without the retrieval code and mean what they
say, and a run over a slice of the real topics (real ingest, FTS5, FAISS, embeddings) reports
every kind under every mode, with the exact codes found first by hybrid search."""

from __future__ import annotations

import re

from click.testing import CliRunner

from app.bench.retrieval import MODES, run_retrieval_bench
from app.bench.retrieval_queries import (
    KINDS,
    PARAPHRASE_SETS,
    holders,
    identifier_queries,
    keyword_queries,
    load_topics,
    read_paraphrases,
)
from app.cli import cli
from app.settings import load_settings


def test_paraphrases_name_real_topics_without_their_key_words() -> None:
    topics = load_topics()
    held_out, dev = read_paraphrases(PARAPHRASE_SETS["held-out"]), read_paraphrases(PARAPHRASE_SETS["dev"])
    assert len(held_out) >= 60 and len(dev) >= 40
    for p in held_out + dev:
        assert p.topic in topics and all(a in topics for a in p.also), p
        words = set(re.findall(r"[a-z]+", p.question.lower()))
        assert not words & set(p.topic.split("-")), p.question
    # the dev set (tuned on) asks about other topics than the held-out set (never tuned on)
    assert not {p.question for p in dev} & {p.question for p in held_out}
    assert not {p.topic for p in dev} & {p.topic for p in held_out}


def test_generated_queries_are_deterministic_and_point_at_their_text() -> None:
    topics = load_topics()
    ids = identifier_queries(topics, 40, seed=3)
    assert ids == identifier_queries(topics, 40, seed=3) and len(ids) == 40
    for q in ids:
        assert [k for k, text in topics.items() if q.text in text] == [q.target] == q.accepted
    keywords = keyword_queries(topics, 40, seed=3)
    assert len({q.target for q in keywords}) >= 30  # spread over topics, not one big one
    for q in keywords:
        assert len(q.text.split()) == 3 and q.target in q.accepted
        assert all(w in topics[k].lower() for k in q.accepted for w in q.text.split())
    assert set(holders(topics, "if")) == {"if", "else", "compound"}  # overlapping topics both answer


def test_bench_on_a_slice_reports_every_kind_and_mode(embedder) -> None:
    settings = load_settings().settings
    lines: list[str] = []
    report = run_retrieval_bench(settings, queries=6, notes=60, topics=20, seed=1, echo=lines.append,
                                 embedder=embedder)
    assert report.topics == 20 and report.notes == 60 and report.chunks > 80
    assert [(f.kind, f.mode) for f in report.figures] == [(k, m) for k in KINDS for m in MODES]
    for f in report.figures:
        assert f.queries == 6 and 0 <= f.recall_at_1 <= f.recall_at_5 <= 1 and f.mrr <= 1 and f.p50_ms > 0
    by = {(f.kind, f.mode): f for f in report.figures}
    assert by["code", "hybrid"].recall_at_1 == 1.0
    assert "not available" in report.rerank and "best 15 chunks by their stored sentence windows" in report.rerank
    assert report.windows_s is not None and report.rag["sentence_rerank"] == 15
    verdicts = [line for line in lines if line.endswith((" PASS", " MISS"))]
    assert len(verdicts) == len(report.targets) == 7
    assert settings.rag.mode == "hybrid"  # the runs switched a copy of the settings


def test_command_is_registered() -> None:
    result = CliRunner().invoke(cli, ["bench", "retrieval", "--help"])
    assert result.exit_code == 0 and "--queries" in result.output and "--json-out" in result.output
    assert "--paraphrases" in result.output
