"""The loop guard on text: it ends answers that repeat themselves and leaves repetitive prose alone."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from engines.generation import (
    ChatMessage,
    GenerationRequest,
    Runtime,
    StopGeneration,
    TextDelta,
    Usage,
)
from engines.loop_guard import LoopGuard, find_loop, has_loop, trim_loop

# The two answers people saw (llama.cpp, retrieval on), and what they should have seen.
FERROW_LOOP = ("The Ferrow protocol is designed to be very large, and it is designed to be very "
               "large. ") * 8
FERROW_CLAUSE_LOOP = ("The Ferrow protocol is designed to be very large"
                      + ", and it is designed to be very large" * 12)
FRANCE_LOOP = "La femme au France, " * 50
# Greedy llama.cpp without a penalty, "Tell me everything about the Ferrow Protocol." (no sources).
FERROW_REAL = (
    "The Ferrow Protocol is a groundbreaking technology that has revolutionized the field of "
    "biotechnology. It's a revolutionary technology that allows for the efficient and precise "
    "production of bioluminescent organisms, such as bioluminescent bacteria, in a controlled "
    "environment.\n\nThe Ferrow Protocol is a groundbreaking technology that has revolutionized "
    "the field of biotechnology. It's a technology that has transformed the way we produce and "
    "use bioluminescent organisms. It's a technology that has transformed the way we produce and "
    "use bioluminescent organisms. It's a "
)
# Greedy llama.cpp without a penalty, "What is the capital of Germany?": a paragraph said three
# times (its first clause is short), then the answer.
GERMAN_PARAGRAPH = ("Der Königin der Deutschland, der die ökumenälle der deutschen Reich, der die "
                    "deutsche Volk, der die Europäe, der die Europäe.")
GERMAN_LOOP = f"{GERMAN_PARAGRAPH} {GERMAN_PARAGRAPH}\n\n{GERMAN_PARAGRAPH}\n\nIn German, the capital of Germany is Berlin."
IN_WORD_LOOP = "РоссlСТОЧАТЬ" + "РАТЬ" * 80  # no space for 320 tokens
GRAND_LOOP = "Le Grand Paris, le Grand-Bien-Armes, le Grand-Bien-Ami, " + "le Grand-Bien-Ami, " * 40

LEGITIMATE = {
    "list sharing words": (
        "Here are the capitals:\n1. Paris is the capital of France.\n2. Berlin is the capital of "
        "Germany.\n3. Rome is the capital of Italy.\n4. Madrid is the capital of Spain."),
    "bullets sharing a long start": (
        "- The Ferrow Protocol was adopted in 1998 by the council of Brenna.\n"
        "- The Ferrow Protocol was adopted in 1998 by the council of Tarsk.\n"
        "- The Ferrow Protocol was adopted in 1998 by the council of Velm."),
    "table": (
        "| Feature | Basic | Plus | Pro | Team | Enterprise |\n"
        "|---|---|---|---|---|---|\n"
        "| Sync | Yes | Yes | Yes | Yes | Yes |\n"
        "| Backup | No | Yes | Yes | Yes | Yes |\n"
        "| Sharing | No | No | Yes | Yes | Yes |\n"
        "| Audit log | No | No | No | Yes | Yes |"),
    "code": (
        "```python\n"
        "grid = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]\n"
        "for row in grid:\n"
        "    print(row)\n"
        "    print(row)\n"
        "total = sum(sum(row) for row in grid)\n"
        "total = sum(sum(row) for row in grid)\n"
        "```\n"
        "The grid holds zeros, so the total is 0."),
    "repeated name": (
        "Tobias Rell was born in 1950. Tobias Rell grew up in Kell. Tobias Rell works as a "
        "brewer, and Tobias Rell keeps a heron named Pim."),
    "emphasis": "This is very very good, and the second part is very, very good too.",
    "no no no": "No, no, no. The market is held on Friday, not on Monday.",
    "a phrase three times": (  # torch, "What language is spoken in Brazil?", then the answer
        "O Brasil, o Brasil, o Brasil! It's a language spoken by over 200 million people. The "
        "majority of the population speaks Portuguese as their native language."),
    "citations": ("Quenby Marsh was born in 1932 [1]. Quenby Marsh grew up in Dravon [1]. The "
                  "Dravon market is held every Tuesday [2]. The river Lutha flows through Dravon "
                  "[2]."),
    "steps": ("Step 1: open the settings. Step 2: open the models tab. Step 3: choose the model. "
              "Step 4: save the settings."),
    "numbers": "The readings were 0, 0, 0, 0, 0, 0, 1, 0, 0 and 0 on the nine days.",
    "long words": ("Das Nichtraucherschutzgesetzgebungsverfahren und die "
                   "Internationalisierungsbestrebungen sind lang."),
    "echoed short clauses": (
        "Yes, it does. The Ferrow Protocol needs two keys. Yes, it does. It was adopted in 1998."),
    "short sentence twice apart": (
        "I do not know. The documents do not say who the mayor is. I do not know."),
}


def stream_through(text: str, seed: int) -> tuple[str, LoopGuard]:
    """What a guard shows when ``text`` arrives in random small pieces."""
    guard = LoopGuard()
    rng = random.Random(seed)
    shown, i = [], 0
    while i < len(text) and not guard.stopped:
        j = i + rng.randint(1, 7)
        shown.append(guard.feed(text[i:j]))
        i = j
    shown.append(guard.finish())
    return "".join(shown), guard


@pytest.mark.parametrize(("text", "kept"), [
    (FERROW_LOOP, "The Ferrow protocol is designed to be very large, and it is designed to be "
                  "very large."),
    (FERROW_CLAUSE_LOOP, "The Ferrow protocol is designed to be very large, and it is designed to "
                         "be very large"),
    (FRANCE_LOOP, "La femme au France"),
    ("la femme, la femme, la femme, la femme", "la femme"),
    (GRAND_LOOP, "Le Grand Paris, le Grand-Bien-Armes, le Grand-Bien-Ami"),
    ("It is big. It is big. It is big. It is big. It is big.", "It is big."),
    ("the the the the the the the the the the", "the"),
    (GERMAN_LOOP, GERMAN_PARAGRAPH),  # cut where the repeat begins, not at its first long clause
    (IN_WORD_LOOP, "РоссlСТОЧАТЬРАТЬРАТЬРАТЬРАТЬРАТЬ"),
])
def test_loops_are_cut_before_the_repeat(text: str, kept: str) -> None:
    assert has_loop(text)
    assert trim_loop(text) == kept
    for seed in range(5):
        shown, guard = stream_through(text, seed)
        assert guard.stopped and shown == kept


def test_a_real_looping_answer_keeps_everything_before_the_loop() -> None:
    loop = find_loop(FERROW_REAL)
    assert loop is not None and loop.kind == "clause"
    kept = trim_loop(FERROW_REAL)
    assert kept.endswith("in a controlled environment.")
    assert kept.count("groundbreaking") == 1


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_legitimate_repetitive_text_is_left_alone(name: str) -> None:
    text = LEGITIMATE[name]
    assert find_loop(text) is None
    for seed in range(5):
        shown, guard = stream_through(text, seed)
        assert not guard.stopped and shown == text


def test_a_loop_is_found_as_soon_as_it_is_certain() -> None:
    loop = find_loop(FRANCE_LOOP)
    assert loop is not None and loop.found_at == len("La femme au France, " * 3 + "La femme au France")
    loop = find_loop(IN_WORD_LOOP)
    assert loop is not None and loop.found_at < 80  # not after 320 tokens


def test_streamed_text_is_held_back_only_while_it_may_repeat() -> None:
    guard = LoopGuard()
    # A clause that begins like none before cannot be a repeat: it streams word by word (the
    # last word may still go on in the next piece).
    assert guard.feed("Paris is the capital") == "Paris is the"
    assert guard.feed(" of France. It") == " capital of France"
    assert guard.feed(" is big") == ". It"
    assert guard.feed(" and old. Paris is") == " is big and old"
    # ... one that begins like an earlier clause is held until it is settled: here it is a
    # repeat, and the person never sees it.
    assert guard.feed(" the capital of France.") == ""
    assert guard.feed(" Paris is the capital of France.") == "."
    assert guard.stopped and guard.finish() == ""


def test_a_clause_that_only_begins_like_an_earlier_one_is_released_when_it_parts() -> None:
    guard = LoopGuard()
    shown = guard.feed("Paris is the capital of France. Paris is")
    assert shown == "Paris is the capital of France"
    shown += guard.feed(" also a big city, with")
    assert shown == "Paris is the capital of France. Paris is also a big city"
    assert shown + guard.finish() == "Paris is the capital of France. Paris is also a big city, with"


def test_repeated_words_are_released_once_the_repetition_breaks() -> None:
    guard = LoopGuard()
    shown = guard.feed("This is very very")
    shown += guard.feed(" good, thanks")
    assert "very very good" in shown
    assert shown + guard.finish() == "This is very very good, thanks"


def test_a_clause_without_punctuation_is_not_held_forever() -> None:
    words = " ".join(f"word{i}" for i in range(80))
    guard = LoopGuard()
    shown = guard.feed(words + " ")
    assert shown.startswith("word0 word1") and len(shown.split()) >= 32


def test_nothing_is_shown_after_a_stop() -> None:
    guard = LoopGuard()
    guard.feed(FRANCE_LOOP)
    assert guard.stopped
    assert guard.feed("more text. ") == "" and guard.finish() == ""


# --- applied by every runtime (Runtime.stream) ---------------------------------------------------
class ScriptedRuntime(Runtime):
    """A runtime that 'generates' fixed pieces; ``cooperative`` backends report usage when stopped."""

    name = "scripted"
    model_name = "script"

    def __init__(self, pieces: list[str], cooperative: bool = True) -> None:
        self.pieces = pieces
        self.cooperative = cooperative
        self.sent = 0

    def _events(self, request: GenerationRequest) -> Iterator[TextDelta | Usage]:
        try:
            for piece in self.pieces[: request.max_tokens]:
                self.sent += 1
                yield TextDelta(text=piece)
        except StopGeneration:
            if not self.cooperative:
                raise
        yield Usage(prompt_tokens=7, completion_tokens=self.sent,
                    finish_reason="length" if self.sent >= request.max_tokens else "stop")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def context_window(self) -> int:
        return 2048


def request(**fields) -> GenerationRequest:
    return GenerationRequest(messages=[ChatMessage(role="user", content="Capital of France?")],
                             max_tokens=400, **fields)


@pytest.mark.parametrize("cooperative", [True, False])
def test_runtime_stream_stops_a_loop_and_says_so(cooperative: bool) -> None:
    pieces = [w + " " for w in FRANCE_LOOP.split()]
    runtime = ScriptedRuntime(pieces, cooperative)
    with runtime.stream(request()) as stream:
        shown = "".join(stream)
    result = stream.result
    assert shown == result.text == "La femme au France"
    assert result.finish_reason == "repetition"
    assert runtime.sent < 20  # the generation ended at the third copy, not at 200 pieces
    if cooperative:
        assert result.prompt_tokens == 7 and result.completion_tokens == runtime.sent
    else:  # estimated from the text by the runtime's own token counter
        assert result.prompt_tokens == 3 and result.completion_tokens == runtime.sent


def test_runtime_stream_passes_ordinary_answers_through() -> None:
    text = LEGITIMATE["list sharing words"]
    runtime = ScriptedRuntime([text[i:i + 5] for i in range(0, len(text), 5)])
    result = runtime.generate(request())
    assert result.text == text and result.finish_reason == "stop"


def test_no_guard_for_json_or_when_turned_off() -> None:
    pieces = [w + " " for w in FRANCE_LOOP.split()]
    for req in (request(loop_guard=False), request(json_schema={"type": "object"})):
        runtime = ScriptedRuntime(pieces)
        result = runtime.generate(req)
        assert result.text == FRANCE_LOOP and result.finish_reason == "stop"


def test_decoding_defaults_are_shared() -> None:
    req = request()
    assert (req.top_k, req.top_p, req.min_p) == (40, 0.95, 0.05)
    assert req.repeat_penalty > 1.0 and req.repeat_last_n == 64 and req.loop_guard
    with pytest.raises(ValueError):
        request(repeat_penalty=0.9)
