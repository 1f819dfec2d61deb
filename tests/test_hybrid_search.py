"""Hybrid retrieval over real SQLite FTS5, FAISS and the real embedding model: exact codes and
quoted phrases first, the keyword index in step with the chunks, and no query text that breaks it."""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import pytest

from engines.base import Query
from engines.rag.hybrid import rerank_by_windows, sentence_windows
from app.ingest import sentence_windows as sentence_windows_module
from app.ingest.sentence_windows import best_window_scores
from app.jobs.refresh import StateRefresh
from store.chunk_windows import ChunkWindowStore
from store.fulltext import TABLE
from store import activity
from store.jobs import LEARN, REFRESH
from tests.helpers import open_engram

NOTE = "Sentinel code {code} marks this note."


@pytest.fixture()
def engram(embedder):
    eng = open_engram(embedder)
    yield eng
    eng.close()


def ingest_files(engram, folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    engram.ingest([folder])
    engram.run_pending()


def sentinel_codes(n: int) -> list[str]:
    return [f"zq{i:04d}x" for i in random.Random(29).sample(range(10_000), n)]


def recall_at_1(engram, mode: str, codes: list[str]) -> tuple[float, float]:
    """Share of codes whose own note ranks first, and the median search time in ms."""
    engram.settings.rag.mode = mode
    right, seconds = 0, []
    for code in codes:
        started = time.perf_counter()
        hits = engram.search(f"Sentinel code {code}", k=5)
        seconds.append(time.perf_counter() - started)
        right += bool(hits) and code in hits[0].text
    return right / len(codes), 1000 * statistics.median(seconds)


def test_each_code_ranks_its_own_note_first(engram, tmp_path, capsys):
    codes = sentinel_codes(400)
    ingest_files(engram, tmp_path / "notes",
                 {f"note-{i:03d}.txt": NOTE.format(code=c) for i, c in enumerate(codes)})
    assert engram.status().chunks == 400
    tried = codes[::16]
    assert len(tried) == 25
    figures = {mode: recall_at_1(engram, mode, tried) for mode in ("dense", "bm25", "hybrid")}
    with capsys.disabled():
        print("\nrecall@1 on 25 sentinel codes (median search ms): " + ", ".join(
            f"{mode} {r:.2f} ({ms:.1f} ms)" for mode, (r, ms) in figures.items()))
    assert figures["hybrid"][0] == 1.0
    # the retrieval engine (chat's path) ranks the same way, and keeps the exact hit
    rag = engram.engine("rag")
    for code in tried[:5]:
        passages = rag.retrieve(Query(text=f"Which note has sentinel code {code}?"))
        assert passages[0].exact and code in passages[0].text


def test_identifier_held_exactly_goes_first(engram, tmp_path):
    ingest_files(engram, tmp_path / "docs", {
        "prose.md": "The max retry count of the uploader is the largest number of retries it "
                    "makes before giving up on a file; the retry count resets every hour.",
        "config.md": "Settings of the mailer: timeout_s = 30, max_retry_count = 7, verbose = no.",
        "other.md": "The lighthouse keeper counts gulls at dawn and writes the count in a log.",
    })
    hits = engram.search("what is max_retry_count", k=3)
    assert Path(hits[0].path).name == "config.md" and hits[0].exact
    assert not any(h.exact for h in hits[1:])


def test_quoted_query_means_that_phrase(engram, tmp_path):
    ingest_files(engram, tmp_path / "docs", {
        "order.md": "In the garden the turnip is blue, the carrot is red and the soup is green.",
        "phrase.md": "Grandmother's recipe calls for a blue turnip, picked before the frost.",
        "soup.md": "Turnip soup: turnips, more turnips, a blue bowl and a turnip-shaped spoon.",
    })
    hits = engram.search('"blue turnip"', k=3)
    assert Path(hits[0].path).name == "phrase.md" and hits[0].exact
    assert [h.exact for h in hits].count(True) == 1
    # quoted words in another order are another phrase: no chunk holds it exactly
    assert not any(h.exact for h in engram.search('"turnip blue"', k=3))


def test_fulltext_follows_changes_and_deletes(engram, tmp_path):
    docs = tmp_path / "docs"
    ingest_files(engram, docs, {"a.md": "The quokka census counted 812 quokkas on the island.",
                                "b.md": "Ferries to the island leave at nine every morning."})

    def keyword_hits(word: str) -> list[int]:
        return [cid for cid, _ in engram.fulltext.search([[word]], 10)]

    assert keyword_hits("quokka")
    (docs / "a.md").write_text("The wombat census counted 97 wombats on the island.")
    engram.ingest([docs])
    engram.run_pending()
    assert not keyword_hits("quokka") and keyword_hits("wombat")
    engram.forget_document(next(d.path for d in engram.docs.list() if d.path.endswith("a.md")))
    assert not keyword_hits("wombat") and keyword_hits("ferries")
    assert engram.fulltext.repair().rebuilt is False  # nothing to repair: it never disagreed
    indexed = {r[0] for r in engram.db.query(f"SELECT id FROM {TABLE}_docsize")}
    assert indexed == set(engram.docs.chunk_ids().tolist())


@pytest.mark.parametrize("damage", [
    f"DROP TABLE {TABLE}",
    f"INSERT INTO {TABLE} ({TABLE}) VALUES ('delete-all')",
    f"DROP TRIGGER {TABLE}_insert",
])
def test_fulltext_repaired_at_start(embedder, tmp_path, damage):
    first = open_engram(embedder)
    ingest_files(first, tmp_path / "docs", {"a.md": "Sentinel code zq7777x marks this note.",
                                            "b.md": "Sentinel code zq8888x marks this note."})
    first.db.execute(damage)
    first.close()
    second = open_engram(embedder)
    try:
        assert second.last_fulltext_repair.rebuilt
        assert second.fulltext.search([["zq8888x"]], 5)
        second.settings.rag.mode = "bm25"
        assert "zq8888x" in second.search("zq8888x", k=1)[0].text
        assert second.fulltext.repair().rebuilt is False
    finally:
        second.close()


def test_migration_backfills_existing_chunks(embedder, tmp_path):
    first = open_engram(embedder)
    ingest_files(first, tmp_path / "docs", {"a.md": "The quokka census counted 812 quokkas."})
    # a data folder from before migration 008: no keyword index, no triggers, not recorded
    for sql in (f"DROP TABLE {TABLE}", f"DROP TRIGGER IF EXISTS {TABLE}_insert",
                f"DROP TRIGGER IF EXISTS {TABLE}_delete", f"DROP TRIGGER IF EXISTS {TABLE}_update",
                "DELETE FROM _migrations WHERE name = '008_chunks_fulltext'"):
        first.db.execute(sql)
    first.close()
    from store.database import Database
    from store.fulltext import FullTextIndex

    db = Database(first.paths.db)
    try:
        assert FullTextIndex(db).search([["quokka"]], 5)
    finally:
        db.close()


HOSTILE = ['"', '""', "AND", "OR", "NOT", "*", ":", "-", "^", "(", ")", "NEAR(a b)", "a AND",
           'col:"x', "text:quokka", "quokka*", "'; DROP TABLE chunks; --", "\\", "{a b}", "+",
           "\u0000", "🙂", "x" * 5000, " ".join(["census"] * 500)]


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense"])
def test_hostile_queries_never_raise(engram, tmp_path, mode):
    ingest_files(engram, tmp_path / "docs", {"a.md": "The quokka census counted 812 quokkas.",
                                             "b.md": "AND OR NOT: the * operator and col:x."})
    engram.settings.rag.mode = mode
    for query in HOSTILE:
        hits = engram.search(query, k=3)
        assert all(h.text for h in hits), query
    assert engram.status().chunks == 2


def test_keyword_queries_are_told_from_sentences():
    from engines.rag.hybrid import is_keyword_query

    for typed in ["fts5 tokenizer unicode", "ferry timetable Oskel", "Parsec", "decorator wraps metadata"]:
        assert is_keyword_query(typed), typed
    for asked in ["how does the with statement work", "ferry to Oskel", "when does it leave",
                  "timetable?", '"ferry timetable"', "", "one two three four five six seven"]:
        assert not is_keyword_query(asked), asked


def test_a_keyword_query_weighs_bm25_by_its_own_setting(engram, tmp_path):
    from engines.rag.hybrid import hybrid_order, read_query

    ingest_files(engram, tmp_path / "docs", {
        "kettle.txt": "The kettle boils water for tea each morning before the ferry leaves.",
        "ferry.txt": "Ferry timetable: boats to Oskel Isle leave at 06:40 and 18:10 from pier nine.",
        "harbour.txt": "Boats crossing to the islands leave the harbour twice a day, weather allowing.",
        "tea.txt": "Green tea is steeped at lower temperatures than black tea.",
    })
    rag = engram.settings.rag
    rag.dense_weight, rag.bm25_weight, rag.keyword_bm25_weight = 1.0, 0.0, 5.0

    def fused(query: str, bm25_weight: float) -> list[int]:
        index, embedder = engram._query_pair()
        dense, _ = engram._dense_ranking(index, embedder.embed([query])[0], 50)
        bm25 = [cid for cid, _ in engram.fulltext.search(read_query(query).groups, 50)]
        return hybrid_order(dense, bm25, {}, 1.0, bm25_weight, rag.rrf_k)[:4]

    # The embeddings put the ferry timetable first; only the kettle note holds both words.
    keywords, sentence = "morning ferry", "when do the boats go to the island in the morning"
    assert [p.chunk_id for p in engram.search(keywords, k=4)] == fused(keywords, 5.0)
    assert [p.chunk_id for p in engram.search(sentence, k=4)] == fused(sentence, 0.0)
    assert fused(keywords, 5.0) != fused(keywords, 0.0)  # the weight changes this ranking


def test_sentence_windows_are_runs_of_two():
    assert sentence_windows(["A one.", "B two.", "C three."]) == ["A one. B two.", "B two. C three."]
    assert sentence_windows(["Alone."]) == ["Alone."]
    assert sentence_windows([]) == []


def test_a_chunk_of_many_short_lines_gets_few_wider_windows_that_cover_every_line():
    lines = [f"Row {i}." for i in range(100)]
    windows = sentence_windows(lines)
    assert len(windows) <= 24  # each is embedded while the person waits
    assert windows[0].startswith("Row 0.") and windows[-1].endswith("Row 99.")
    covered = {w for window in windows for w in window.split(" ") if w != "Row"}
    assert covered == {f"{i}." for i in range(100)}
    assert len(sentence_windows(lines[:25])) == 24  # up to the cap, runs of two as before


def test_windows_rerank_only_the_top_and_exact_hits_stay_first():
    # chunk 12's best window matches the question: it passes 11 (RRF of hybrid place and window place)
    best = {10: 0.5, 11: 0.1, 12: 0.9, 13: 0.0}
    assert rerank_by_windows([10, 11, 12, 13, 14], best, {}, 60) == [10, 12, 11, 13, 14]
    assert rerank_by_windows([10, 11, 12, 13, 14], best, {13: 1}, 60) == [13, 10, 12, 11, 14]
    assert rerank_by_windows([10, 11, 12], {}, {}, 60) == [10, 11, 12]


PORT = {
    "harbour.md": "The harbour office opens at seven and closes at noon on Sundays. Ferries to the island leave "
                  "every hour from the north pier. Fishing boats unload their catch at the east quay before "
                  "dawn. The harbour master keeps the tide tables on the notice board. Visitors who lose a bag "
                  "should ask at the lost property desk beside the ticket hall. Gulls nest on the roof of the "
                  "old customs house.",
    "bags.md": "Bags, suitcases and rucksacks come in many sizes. A good travel bag has strong zips, padded "
               "straps and a waterproof lining. Airlines limit the size and weight of cabin bags. Label every "
               "bag with your name and phone number.",
    "station.md": "The railway station has four platforms and a cafe. Trains to the city run every twenty "
                  "minutes. Tickets can be bought from machines or at the counter.",
    "luggage.md": "Luggage allowances differ between carriers. Heavy suitcases cost extra on most flights. Pack "
                  "liquids in clear plastic pouches.",
    "rental.md": "The rental on the lake hires out rowing boats and canoes by the hour. Each boat seats four "
                 "people and has a pair of oars. The lake is shallow near the reeds. Swans and ducks gather near "
                 "the jetty in the evening. The car park closes at dusk.",
    "garden.md": "The walled garden grows apples, pears and plums. Its gardeners will help you if you lost your "
                 "bag there. The glasshouse holds orchids and cacti. Benches line the gravel paths.",
    "island.md": "The island has two beaches, a lighthouse and a small museum about shipwrecks. Bicycles can be "
                 "hired near the ferry landing.",
}


@pytest.mark.parametrize("question", ["I mislaid my handbag at the port, where should I enquire?",
                                      "Which desk deals with belongings people forget at the waterfront?"])
def test_sentence_rerank_lifts_the_chunk_one_sentence_of_which_answers(engram, tmp_path, question):
    """garden.md's chunk is mostly fruit and orchids: its vector dilutes its one sentence about lost
    bags, and its best pair of sentences lifts it (rag.sentence_rerank)."""
    ingest_files(engram, tmp_path / "port", PORT)
    engram.window_fill.refresh(lambda f, m: None, lambda: False)  # as the idle worker does

    def order(rerank: int) -> list[str]:
        engram.settings.rag.sentence_rerank = rerank
        return [Path(p.path).name for p in engram.search(question, k=len(PORT))]

    before, after = order(0), order(15)
    assert sorted(before) == sorted(after) == sorted(PORT)  # the same chunks, re-ordered
    assert after.index("garden.md") < before.index("garden.md")
    assert before[0] == after[0] == "harbour.md"
    engram.settings.rag.mode = "dense"  # re-ranks hybrid search only
    assert order(15) == order(0)



def test_windows_are_embedded_in_idle_time_beside_their_chunks_and_a_search_only_reads_them(
        engram, tmp_path, monkeypatch):
    """Embedding 15 chunks' windows while searching took seconds on 2 cores: they are embedded
    once by the idle worker, kept under the embedding identity, and a search embeds none itself
    (a few missing ones at most, never a library's worth)."""
    question = "Which desk deals with belongings people forget at the waterfront?"
    ingest_files(engram, tmp_path / "port", PORT)
    store, identity = ChunkWindowStore(engram.db), engram.index.identity
    assert engram.settings.rag.sentence_rerank == 15  # on by default
    assert store.count_missing(identity) == len(PORT)  # ingestion embeds no window: as fast as before
    monkeypatch.setattr(sentence_windows_module, "MAX_WINDOWS_NOW", 4)  # this small library has 20
    fused = [p.chunk_id for p in engram.search(question, k=7)]
    engram.settings.rag.sentence_rerank = 0
    assert [p.chunk_id for p in engram.search(question, k=7)] == fused  # too many missing: the fused order
    engram.settings.rag.sentence_rerank = 15

    worker = engram.worker
    assert worker.on_idle() and not worker.on_idle()  # one refresh job, queued once
    worker.drain(kinds=[REFRESH])
    assert store.count_missing(identity) == 0 and not worker.on_idle()
    embedded: list[int] = []
    real = engram.embedder.embed
    monkeypatch.setattr(engram.embedder, "embed", lambda texts: embedded.append(len(texts)) or real(texts))
    reranked = [Path(p.path).name for p in engram.search(question, k=7)]
    assert all(n == 1 for n in embedded)  # the question at most: the windows were read
    engram.settings.rag.sentence_rerank = 0
    plain = [Path(p.path).name for p in engram.search(question, k=7)]
    assert reranked.index("garden.md") < plain.index("garden.md")  # the stored windows re-ranked it
    engram.settings.rag.sentence_rerank = 15
    ids = [cid for cid, _ in engram.db.query("SELECT id, text FROM chunks")]
    vectors = store.get(ids, identity)
    assert len(vectors) == len(PORT) and all(v.shape[1] == engram.index.dim for v in vectors.values())
    assert store.get(ids, "another model|fp32") == {}  # never compared with another model's question
    assert len(store.missing("another model|fp32", 100)) == len(PORT)

    engram.forget_document(str(tmp_path / "port" / "garden.md"))
    assert len(store.get(ids, identity)) == len(PORT) - 1  # they leave with their chunk
    ingest_files(engram, tmp_path / "more", {"pier.md": "The north pier has a cafe and a bait shop."})
    assert store.count_missing(identity) == 1 and worker.on_idle()  # a later file: another fill
    worker.drain(kinds=[REFRESH])
    assert store.count_missing(identity) == 0


def test_a_search_embeds_the_few_windows_not_stored_yet_itself(engram, tmp_path):
    ingest_files(engram, tmp_path / "one", {"garden.md": PORT["garden.md"], "bags.md": PORT["bags.md"]})
    store = ChunkWindowStore(engram.db)
    ids = [cid for cid, in engram.db.query("SELECT id FROM chunks")]
    assert len(ids) == 2 and store.count_missing(engram.index.identity) == 2
    scores = best_window_scores(store, engram.docs, ids, engram.index.identity, engram.embedder.embed,
                                engram.embedder.embed(["Where do I ask about a bag I lost in the garden?"])[0])
    assert scores is not None and set(scores) == set(ids)
    garden = engram.docs.get(str(tmp_path / "one" / "garden.md")).id
    assert max(scores, key=scores.get) == garden


def test_a_refresh_gives_way_to_the_person_to_other_jobs_and_to_sleep_and_never_holds_sleep_back(engram):
    """An embedding fill or a hidden-state refresh runs for minutes: a question, a key or a click,
    another job or a due sleep ends it between batches (it is queued again when idle), and a
    queued refresh is not work that keeps sleep from being due."""
    due = [False]
    refresh = StateRefresh(engram.db, engram.queue, lambda: [], lambda: False, lambda: due[0])
    stop = refresh._stop()
    assert not stop()
    activity.record_ui_input(engram.db)
    assert stop()  # the person is here
    time.sleep(0.01)  # the store's clock keeps milliseconds
    stop = refresh._stop()
    assert not stop()
    due[0] = True
    assert stop()  # sleep goes first
    due[0] = False
    engram.queue.enqueue(REFRESH, "windows", {})
    assert not refresh._stop()() and not activity.work_waiting(engram.db)  # itself: no other work
    engram.queue.enqueue(LEARN, "ttt:a.txt", {"document_id": 1, "engine": "ttt"})
    assert refresh._stop()() and activity.work_waiting(engram.db)
