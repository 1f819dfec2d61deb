"""The natural-prose and hand-written test sets: sound questions, and no shared DNA with the learner."""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from app.bench import handwritten_set
from app.bench.natural import (
    GENRES,
    SIZES,
    SKILLS,
    NaturalQuestion,
    NaturalSet,
    generate,
)

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = sorted((ROOT / "app" / "bench" / "natural").glob("*.py"))  # every module of the package
HANDWRITTEN = ROOT / "app" / "bench" / "handwritten_set.py"
BENCH_SIDE = [*GENERATOR, HANDWRITTEN]
LEARNING_SIDE = sorted((ROOT / "engines").rglob("*.py")) + [ROOT / "app" / "bench" / "fiction.py"]
REFERRING = re.compile(r"\b(she|he|her|his|him|it|its|they|their|there|the latter|that year|the same year|"
                       r"the company|the firm|the bridge|the plant|the town|the place|the account)\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Rules checked here on their own terms (not through the module's own checker)

def _plain(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def _runs(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = _plain(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def _contains_words(text: str, phrase: str) -> bool:
    return f" {' '.join(_plain(phrase))} " in f" {' '.join(_plain(text))} "


def _assert_sound(q: NaturalQuestion, text: str) -> None:
    where = f"{q.doc_id}/{q.id}"
    assert q.evidence in text, where
    assert q.answer and q.answer in q.evidence, where
    for accepted in [q.answer, *q.aliases]:
        assert len(accepted.split()) <= 6, (where, accepted)
        assert not _contains_words(q.question, accepted), (where, q.question, accepted)
    assert len(q.options) == 4 and len({o.lower() for o in q.options}) == 4, where
    assert q.options.count(q.answer) == 1, where
    assert not {o.lower() for o in q.options if o != q.answer} & {a.lower() for a in q.aliases}, where
    assert not _runs(q.question, 4) & _runs(text, 4), (where, q.question, _runs(q.question, 4) & _runs(text, 4))
    assert q.question.endswith("?"), where


@pytest.fixture(scope="module")
def small() -> NaturalSet:
    return generate("small", 0)


@pytest.fixture(scope="module")
def tiny() -> NaturalSet:
    return generate("tiny", 0)


@pytest.fixture(scope="module")
def handwritten() -> NaturalSet:
    return handwritten_set.load()


# --------------------------------------------------------------------------------------------
# The generated set

def test_same_seed_same_set_other_seed_other_set(small: NaturalSet) -> None:
    assert generate("small", 0) == small
    other = generate("small", 1)
    assert [d.text for d in other.documents] != [d.text for d in small.documents]
    assert [q.question for q in other.questions] != [q.question for q in small.questions]


def test_sizes_and_size_errors() -> None:
    assert len(generate("tiny").documents) == SIZES["tiny"] == 8
    assert SIZES["small"] == 30 and SIZES["default"] == 120
    assert len(generate(11, 3).documents) == 11
    for bad in ("huge", 7, 0, -5, 2.5, True):
        with pytest.raises(ValueError, match="natural set"):
            generate(bad)  # type: ignore[arg-type]


def test_every_genre_is_in_the_tiny_set_and_spread_evenly(tiny: NaturalSet, small: NaturalSet) -> None:
    assert {d.genre for d in tiny.documents} == set(GENRES)
    counts = Counter(d.genre for d in small.documents)
    assert set(counts) == set(GENRES) and max(counts.values()) - min(counts.values()) <= 1


def test_documents_have_the_promised_shape(small: NaturalSet) -> None:
    ids = [d.id for d in small.documents]
    assert len(set(ids)) == len(ids)
    per_doc = Counter(q.doc_id for q in small.questions)
    for doc in small.documents:
        assert doc.file_name == f"{doc.id}.md" and doc.id.startswith(doc.genre)
        words = [w for w in doc.text.split() if re.search(r"[^\W_]", w)]  # markup such as "|" aside
        assert 120 <= len(words) <= 400, doc.id
        assert 4 <= per_doc[doc.id] <= 6, doc.id


def test_every_generated_question_is_sound(small: NaturalSet) -> None:
    texts = {d.id: d.text for d in small.documents}
    for q in small.questions:
        _assert_sound(q, texts[q.doc_id])
        assert q.skill in SKILLS and q.kind, q.id


def test_questions_name_their_own_document(small: NaturalSet) -> None:
    """A question must stay answerable when a model has learned the whole set."""
    owner: dict[str, str] = {}
    for doc in small.documents:
        for entity in doc.entities:
            assert owner.setdefault(entity, doc.id) == doc.id, f"{entity} is in two documents"
    for q in small.questions:
        doc = small.document(q.doc_id)
        assert any(e in q.question for e in doc.entities), q.question


def test_tiny_set_has_a_table_and_lists(tiny: NaturalSet) -> None:
    texts = "\n".join(d.text for d in tiny.documents)
    assert re.search(r"^\|.*\|\n\|[-| ]+\|\n\|", texts, re.MULTILINE), "no markdown table"
    assert re.search(r"^- \S", texts, re.MULTILINE), "no bullet list"
    assert re.search(r"^1\. \S", texts, re.MULTILINE), "no numbered list"
    assert {"table", "list"} <= {q.skill for q in tiny.questions}


def test_references_must_be_resolved(small: NaturalSet) -> None:
    """Some answers sit in a sentence that says "she" or "the company" while the question names
    the entity, which the evidence does not."""
    resolved = 0
    for q in small.questions:
        if q.skill != "reference":
            continue
        doc = small.document(q.doc_id)
        named = [e for e in doc.entities if e in q.question and e not in q.evidence]
        assert named, (q.id, q.question, q.evidence)
        resolved += bool(REFERRING.search(q.evidence))
    assert resolved >= len(small.questions) // 6


def test_answers_are_not_always_at_the_end(small: NaturalSet) -> None:
    mid = [q for q in small.questions if not q.evidence.rstrip(" .!?;:|)*").endswith(q.answer)]
    assert len(mid) >= len(small.questions) // 2
    assert Counter(q.skill for q in small.questions)["table"] >= 3


def test_varied_kinds_dates_and_units(small: NaturalSet) -> None:
    kinds = Counter(q.kind for q in small.questions)
    assert {"person", "date", "quantity", "place", "duration", "company"} <= set(kinds)
    text = "\n".join(d.text for d in small.documents)
    assert re.search(r"\b\d{1,2} (January|February|March|April|May|June|July|August|September|October|"
                     r"November|December) \d{4}\b", text)
    assert re.search(r"\b\d{4}-\d\d-\d\d\b", text)
    for unit in (" kg", " km", " °C", " ml", " minutes", " MB", " crowns"):
        assert unit in text, unit


def test_options_are_shuffled(small: NaturalSet) -> None:
    assert len({q.options.index(q.answer) for q in small.questions}) == 4


def test_written_files_and_questions(tmp_path: Path, tiny: NaturalSet) -> None:
    paths = tiny.write(tmp_path / "docs")
    assert [p.name for p in paths] == [d.file_name for d in tiny.documents]
    assert paths[0].read_text(encoding="utf-8") == tiny.documents[0].text
    tiny.write_questions(tmp_path / "qa.jsonl")
    lines = (tmp_path / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    assert [NaturalQuestion.model_validate_json(line) for line in lines] == tiny.questions


# --------------------------------------------------------------------------------------------
# Independence from the learning side

def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _literals(path: Path, with_docstrings: bool) -> list[str]:
    """Every string literal in ``path``, f-string pieces included (a template is its pieces)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if with_docstrings else _docstrings(tree)
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def _word_lists(path: Path) -> list[frozenset[str]]:
    """List, tuple and set literals of three or more strings; the arguments of a subscript
    (``Literal["tiny", "small", "default"]``) are a type, not a vocabulary."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typed = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    lists = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and id(node) not in typed:
            items = [e.value.lower() for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(items) >= 3:
                lists.append(frozenset(items))
    return lists


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [base] + [f"{base}.{a.name}" for a in node.names]
    return found


def _learning_runs() -> dict[tuple[str, ...], Path]:
    """Every 3-word run of the learning side's string literals: templates, prompts, messages and
    word lists, but not docstrings, which describe the code in ordinary prose and change with it."""
    runs: dict[tuple[str, ...], Path] = {}
    for path in LEARNING_SIDE:
        for literal in _literals(path, with_docstrings=False):
            for run in _runs(literal, 3):
                runs.setdefault(run, path)
    return runs


def test_learning_side_is_where_expected() -> None:
    """The independence checks below mean nothing if they compare against an empty side."""
    assert len(LEARNING_SIDE) > 10 and (ROOT / "engines" / "ttt" / "rehearsal.py") in LEARNING_SIDE
    assert len(_learning_runs()) > 1000


def test_bench_shares_no_phrase_with_the_learning_side() -> None:
    learning = _learning_runs()
    shared = []
    for path in BENCH_SIDE:
        for literal in _literals(path, with_docstrings=False):
            if len(_plain(literal)) >= 3:
                shared += [(" ".join(r), str(learning[r].relative_to(ROOT)), literal)
                           for r in _runs(literal, 3) if r in learning]
    assert not shared, shared


def test_bench_shares_no_word_list_with_the_learning_side() -> None:
    learning = [(words, path) for path in LEARNING_SIDE for words in _word_lists(path)]
    for path in BENCH_SIDE:
        for mine in _word_lists(path):
            for theirs, where in learning:
                common = mine & theirs
                assert mine != theirs, (sorted(mine), where)
                assert not (len(common) >= 3 and len(common) * 2 >= min(len(mine), len(theirs))), \
                    (sorted(common), where)


_RE_CALLS = {"compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split"}


def _patterns(path: Path) -> set[str]:
    """The regular expressions ``path`` hands to the ``re`` module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _RE_CALLS
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and node.args):
            found |= {n.value for n in ast.walk(node.args[0])
                      if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return found


def test_bench_reuses_no_pattern_of_the_learning_side() -> None:
    learning_patterns = set().union(*(_patterns(p) for p in LEARNING_SIDE))
    learning_literals = {s for p in LEARNING_SIDE for s in _literals(p, with_docstrings=True)}
    assert learning_patterns  # rehearsal splits sentences with one
    for path in BENCH_SIDE:
        assert not _patterns(path) & learning_literals, path
        assert not learning_patterns & set(_literals(path, with_docstrings=False)), path


def _own(name: str) -> bool:
    """Whether an import names the generator package itself."""
    return name == "app.bench.natural" or name.startswith("app.bench.natural.")


def test_generator_imports_only_stdlib_and_pydantic() -> None:
    allowed = set(sys.stdlib_module_names) | {"pydantic", "__future__"}
    assert len(GENERATOR) >= 10 and not (ROOT / "app" / "bench" / "natural_set.py").exists()
    for path in GENERATOR:
        for name in _imports(path):
            assert name.split(".")[0] in allowed or _own(name), (path.name, name)
    for name in _imports(HANDWRITTEN):
        assert name.split(".")[0] in allowed or _own(name), name
    for path in sorted((ROOT / "engines").rglob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("app.bench", "app.bench.fiction")), (path, name)


def test_the_independence_checks_would_catch_a_copy(tmp_path: Path) -> None:
    """Copying rehearsal's link words or a template of the old generator must not pass."""
    rehearsal = ROOT / "engines" / "ttt" / "rehearsal.py"
    links = next(n for n in ast.walk(ast.parse(rehearsal.read_text(encoding="utf-8")))
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_LINKS")
    copied = tmp_path / "copy.py"
    sentence_end = min(_patterns(rehearsal))
    copied.write_text(f"import re\n_MINE = {ast.unparse(links.value)}\n_SPLIT = re.compile({sentence_end!r})\n"
                      "def f(who, year):\n    return f\"{who} was born in {year}.\"\n", encoding="utf-8")
    learning_lists = {w for p in LEARNING_SIDE for w in _word_lists(p)}
    learning_literals = {s for p in LEARNING_SIDE for s in _literals(p, with_docstrings=True)}
    assert set(_word_lists(copied)) & learning_lists
    assert any(r in _learning_runs() for lit in _literals(copied, False) for r in _runs(lit, 3))
    assert _patterns(copied) & learning_literals


# --------------------------------------------------------------------------------------------
# The hand-written set

def test_handwritten_set_loads_and_is_sound(handwritten: NaturalSet) -> None:
    assert handwritten.name == "handwritten" and len(handwritten.documents) >= 12
    assert len(handwritten.questions) >= 72
    texts = {d.id: d.text for d in handwritten.documents}
    for q in handwritten.questions:
        _assert_sound(q, texts[q.doc_id])
    per_doc = Counter(q.doc_id for q in handwritten.questions)
    assert set(per_doc) == set(texts) and min(per_doc.values()) >= 5


def test_handwritten_questions_are_varied(handwritten: NaturalSet) -> None:
    firsts = Counter(q.question.split()[0].lower() for q in handwritten.questions)
    assert len(firsts) >= 6 and firsts.most_common(1)[0][1] <= len(handwritten.questions) // 2
    assert len(Counter(q.kind for q in handwritten.questions)) >= 8


def _copy_handwritten(tmp_path: Path) -> Path:
    folder = tmp_path / "handwritten"
    shutil.copytree(handwritten_set.DATA, folder)
    return folder


def test_handwritten_loader_rejects_an_answer_missing_from_its_document(tmp_path: Path) -> None:
    folder = _copy_handwritten(tmp_path)
    path = folder / "questions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    broken = rows[3]
    distractors = [o for o in broken["options"] if o != broken["answer"]]
    broken["answer"] = "Zzyzx Quorble"
    broken["options"] = [broken["answer"], *distractors]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        handwritten_set.load(folder)
    assert broken["id"] in str(err.value) and broken["doc"] in str(err.value)


def test_handwritten_loader_rejects_a_question_for_a_missing_document(tmp_path: Path) -> None:
    folder = _copy_handwritten(tmp_path)
    doc = json.loads((folder / "questions.jsonl").read_text(encoding="utf-8").splitlines()[0])["doc"]
    (folder / doc).unlink()
    with pytest.raises(ValueError, match=re.escape(doc)):
        handwritten_set.load(folder)
